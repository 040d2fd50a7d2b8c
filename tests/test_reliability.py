"""Reliability: bad input, corrupt data, interrupted and diverging training (issue 6).

Bad input must raise an error of a known type whose message names the problem
and the fix; unreadable videos are skipped, counted and limited; a run killed
(SIGKILL, inside a checkpoint write) or stopped (SIGTERM) resumes to the
parameters of an uninterrupted run; a non-finite step is not applied.

Every training run here uses the tiny config on one device with the same
shapes, and every compile goes through the session's persistent compilation
cache (tests/conftest.py): the training and evaluation steps compile once (the
killed subprocesses read them from the cache too).
"""
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from gla_jax import compile_cache
from gla_jax import explain
from gla_jax import models
from gla_jax import weights
from gla_jax.data import bad_data
from gla_jax.data import loader
from gla_jax.data import sources
from gla_jax.data import synthetic_settings
from gla_jax.data import video_io
from gla_jax.models import convert
from gla_jax.outputs import reports
from gla_jax.training import checkpoints
from gla_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def _config(**train_overrides) -> ml_collections.ConfigDict:
  """The tiny config on one device: 4 steps, a checkpoint after each, one eval batch."""
  config = tiny.get_config()
  config.num_devices = 1
  config.train.update(num_steps=4, eval_every=0, checkpoint_every=1, log_every=1,
                      keep_checkpoints=4)
  config.train.update(train_overrides)
  config.eval.max_batches = 1
  return config


def _params(workdir, step=None):
  """The parameters of a workdir's checkpoint of `step` (default: the latest)."""
  with checkpoints.TrainCheckpointManager(os.path.join(workdir, 'checkpoints'),
                                         read_only=True) as manager:
    return manager.restore_variables(step)[0]['params']


def _assert_trees_equal(got, want):
  for (path, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(want)[0],
                               jax.tree_util.tree_flatten_with_path(got)[0]):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run: (workdir, final metrics)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  return workdir, loop.train_and_evaluate(_config(), workdir)


def test_training_checkpoints_carry_the_class_names_of_the_data(reference):
  assert weights.read(reference[0]).class_names == list(synthetic_settings.CLASS_NAMES)


def _patched_batches(monkeypatch, on_step):
  """Routes train_and_evaluate's batches through `on_step(step, batch)` (which may edit them)."""
  real = loader.train_batches

  def batches(*args, start_step=0, **kwargs):
    for step, batch in enumerate(real(*args, start_step=start_step, **kwargs), start_step):
      on_step(step, batch)
      yield batch

  monkeypatch.setattr(loader, 'train_batches', batches)


# ------------------------------------------------------------------------------
# Bad input: the error names the problem and the fix.
# ------------------------------------------------------------------------------


def _write_clip(path, num_frames=8, size=16, seed=0):
  frames = np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), np.uint8)
  video_io.write_video(str(path), np.repeat(np.repeat(frames[:, ::4, ::4], 4, 1), 4, 2))


def _bad_video_files(folder):
  """{name: (path, regex of the problem and fix)} of files that are not readable videos."""
  folder.mkdir(exist_ok=True)
  _write_clip(folder / 'good.avi', num_frames=20)
  data = (folder / 'good.avi').read_bytes()
  (folder / 'empty.avi').write_bytes(b'')
  (folder / 'noise.avi').write_bytes(
      np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes())
  (folder / 'truncated.avi').write_bytes(data[:len(data) // 2])
  assert cv2.imwrite(str(folder / 'frame.png'), np.zeros((16, 16, 3), np.uint8))
  assert cv2.imwrite(str(folder / 'frame.jpg'), np.zeros((16, 16, 3), np.uint8))
  os.rename(folder / 'frame.jpg', folder / 'renamed_jpeg.avi')
  writer = cv2.VideoWriter(str(folder / 'no_frames.avi'), cv2.VideoWriter.fourcc(*'MJPG'), 25.0,
                           (16, 16))
  writer.release()
  return {
      'missing': (folder / 'missing.avi', 'does not exist; check the path'),
      'directory': (folder, 'directory, not a video file; pass the path'),
      'empty': (folder / 'empty.avi', 'empty .0 bytes.*re-create or re-download'),
      'noise': (folder / 'noise.avi', 'cannot open.*re-encode'),
      'truncated': (folder / 'truncated.avi', 'truncated or corrupt.*Re-create or re-download'),
      'png': (folder / 'frame.png', 'PNG image, not a video; read images with cv2.imread'),
      'jpeg_as_avi': (folder / 'renamed_jpeg.avi', 'JPEG image, not a video'),
      'no_frames': (folder / 'no_frames.avi', 'has no frame that decodes.*Re-create'),
  }


@pytest.mark.parametrize('name', ['missing', 'directory', 'empty', 'noise', 'truncated', 'png',
                                  'jpeg_as_avi', 'no_frames'])
def test_unreadable_video_files_name_the_fix(tmp_path, name):
  path, message = _bad_video_files(tmp_path / 'videos')[name]
  with pytest.raises(video_io.VideoReadError, match=message) as error:
    video_io.read_video(str(path))
  assert str(path) in str(error.value)


def test_one_frame_video_is_loop_padded(tmp_path):
  _write_clip(tmp_path / 'walk' / 'single.avi', num_frames=1)
  config = _config().data
  config.update(source='folder', root=str(tmp_path), workers=0)
  batch = next(loader.train_batches(config, 2, seed=0))
  assert batch['video'].shape == (2, 8, 16, 16, 3)
  # The clip repeats the one frame (Hara's LoopPadding).
  np.testing.assert_array_equal(batch['video'][0], np.broadcast_to(batch['video'][0, :1],
                                                                   batch['video'][0].shape))


@pytest.fixture(scope='module')
def tiny_model():
  model = models.create('tiny', num_classes=8)
  return model, models.init_variables(model, jax.random.key(0), (1, 8, 16, 16, 3))


@pytest.mark.parametrize('shape, dtype, error, message', [
    ((2, 8, 16, 16, 3), np.uint8, TypeError, r'floating point.*center_clip'),
    ((2, 8, 16, 16, 1), np.float32, ValueError, r'1 channels.*np.repeat\(video, 3'),
    ((2, 8, 16, 16, 4), np.float32, ValueError, r'RGBA.*video\[\.\.\., :3\]'),
    ((2, 3, 8, 16, 16), np.float32, ValueError, r'channels must be last.*moveaxis'),
    ((8, 16, 16, 3), np.float32, ValueError, r'one clip.*video\[None\]'),
    ((2, 0, 16, 16, 3), np.float32, ValueError, r'Empty clips.*loop-padded'),
    ((16, 16, 3), np.float32, ValueError, r'stack the clips'),
])
def test_explain_refuses_bad_clips(tiny_model, shape, dtype, error, message):
  model, variables = tiny_model
  with pytest.raises(error, match=message):
    explain.explain(model, variables, np.zeros(shape, dtype))


def test_explain_refuses_variables_of_another_model(tiny_model):
  model, variables = tiny_model
  other = models.create('tiny', num_classes=5)
  with pytest.raises(ValueError, match=r'do not fit the model.*num_classes=5.*config.model'):
    explain.explain(other, variables, np.zeros((1, 8, 16, 16, 3), np.float32))
  with pytest.raises(ValueError, match=r"lack \['batch_stats'\]"):
    explain.explain(model, {'params': variables['params']}, np.zeros((1, 8, 16, 16, 3), np.float32))


def test_zero_gradient_maps_are_zeros_and_flagged(tiny_model):
  model, variables = tiny_model
  # A zero classifier: the class score ignores every activation, all gradients are 0.
  params = dict(variables['params'], fc=jax.tree.map(jnp.zeros_like, variables['params']['fc']))
  clip = jax.random.normal(jax.random.key(3), (2, 8, 16, 16, 3))
  result = explain.explain(model, {**variables, 'params': params}, clip)
  assert not np.any(result.has_signal)
  # Zeros, not min-max-normalised rounding noise.
  assert np.all(np.asarray(result.attention) == 0)
  for name in result.layer_names:
    assert np.all(np.asarray(result.layer_maps[name]) == 0), name


def test_misspelt_config_keys_are_refused_with_a_suggestion():
  config = tiny.get_config()
  with pytest.raises(AttributeError, match=r'learning_rat.*locked.*Did you mean "learning_rate"'):
    config.train.learning_rat = 0.1
  # As a flag override (--config.data.num_frame=8) reaches it.
  with pytest.raises(KeyError, match=r'Did you mean "num_frames"'):
    config.update_from_flattened_dict({'data.num_frame': 8})


def test_checkpoints_of_another_model_name_the_fix(tiny_model):
  model, variables = tiny_model
  # Fine-tuning weights with another class count.
  other = models.init_variables(models.create('tiny', num_classes=5), jax.random.key(1),
                                (1, 8, 16, 16, 3))
  head = weights.head_paths(model)
  with pytest.raises(ValueError, match=r'Only the classifier differs: set config.train.drop_head'):
    weights.fit(variables, other, head, drop_head=False, source='five.ckpt')
  # Another architecture: blocks missing or misshaped.
  deeper = {'params': {**other['params'], 'layer9_0': {'kernel': np.zeros(3)}},
            'batch_stats': other['batch_stats']}
  with pytest.raises(ValueError, match=r'(?s)unexpected: params/layer9_0.*Check config.model'):
    weights.fit(variables, deeper, head, drop_head=True, source='deep.ckpt')


@pytest.mark.parametrize('torch_preset, num_classes, fix', [
    ('tiny', 5, r'Only the head differs.*drop_head=True'),
    ('resnext50', 8, r'unexpected keys.*\(3, 4, 6, 3\) \(resnext50\).*models.create'),
])
def test_converting_another_architecture_names_the_fix(torch_preset, num_classes, fix):
  torch = pytest.importorskip('torch')
  torch_resnext = pytest.importorskip('tests.torch_resnext')
  with torch.device('meta'):   # Shapes only: no weights allocated.
    state = torch_resnext.create(torch_preset, num_classes=num_classes).state_dict()
  state = {key: np.broadcast_to(np.float32(0), value.shape) for key, value in state.items()}
  with pytest.raises(convert.CheckpointMismatchError, match=f'(?s){fix}'):
    convert.torch_to_flax(state, models.create('tiny', num_classes=8))


@pytest.mark.parametrize('saved_preset, saved_classes, fix', [
    ('resnext50', 8, r"'resnext50' model with 8 classes.*new\s+--workdir"),
    ('tiny', 5, r"'tiny' model with 5 classes.*drop_head=True"),
])
def test_resuming_another_models_workdir_is_refused(tmp_path, saved_preset, saved_classes, fix):
  with checkpoints.TrainCheckpointManager(tmp_path / 'checkpoints') as manager:
    manager.save(3, {'params': {'w': np.zeros(2)}},
                 {'step': 3, 'preset': saved_preset, 'num_classes': saved_classes})
  with pytest.raises(ValueError, match=fix):
    loop.train_and_evaluate(_config(), str(tmp_path))


def test_resuming_after_a_state_changing_config_edit_lists_the_changes(tmp_path):
  started = _config()
  with checkpoints.TrainCheckpointManager(tmp_path / 'checkpoints') as manager:
    manager.save(3, {'params': {'w': np.zeros(2)}},
                 {'step': 3, 'preset': 'tiny', 'num_classes': 8, 'config': started.to_dict()})
  edited = _config(momentum=0.0)   # No momentum buffer: another optimizer state.
  with pytest.raises(ValueError, match=r"(?s)Cannot resume from .*3.*differs from the "
                                       r"checkpoint's: train.momentum: 0.9 -> 0.0.*new --workdir"):
    loop.train_and_evaluate(edited, str(tmp_path))


def test_annotation_boxes_outside_the_frame_are_refused(tmp_path):
  _write_clip(tmp_path / 'walk' / 'a.avi', num_frames=2)
  boxes = [[0, 0, 8, 8], [10, 4, 20, 12]]   # x1 = 20 > width 16 on frame 1.
  (tmp_path / 'annotations.json').write_text(json.dumps({
      'classes': ['walk'], 'videos': [{'path': 'walk/a.avi', 'label': 0, 'num_frames': 2,
                                       'height': 16, 'width': 16, 'boxes': boxes}]}))
  config = _config().data
  config.update(source='folder', root=str(tmp_path))
  with pytest.raises(ValueError, match=r"'walk/a.avi', frame 1: box \[10, 4, 20, 12\] lies "
                                       r'outside 16 x 16.*clip it to'):
    sources.create_source(config, 'train')


# ------------------------------------------------------------------------------
# Corrupt data does not stop training.
# ------------------------------------------------------------------------------


def _video_folder(root, broken):
  """Ten 8-frame videos in two classes; `broken` {file index: kind} are made unreadable."""
  paths = []
  for index in range(10):
    path = root / ('left' if index % 2 else 'right') / f'v{index}.avi'
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_clip(path, seed=index)
    paths.append(path)
  for index, kind in broken.items():
    data = paths[index].read_bytes()
    paths[index].write_bytes({'noise': np.random.default_rng(index).integers(
        0, 256, 3000, np.uint8).tobytes(), 'truncated': data[:len(data) // 3],
                              'empty': b''}[kind])
  return paths


def _folder_config(root, **overrides):
  config = _config().data
  config.update(source='folder', root=str(root), workers=2, prefetch=1,
                train_scales=(1.0, 0.75), max_bad_fraction=0.3)
  config.update(overrides)
  return config


def test_unreadable_videos_are_skipped_counted_and_reported(tmp_path, caplog):
  _video_folder(tmp_path, {2: 'noise', 5: 'truncated', 7: 'empty'})
  config = _folder_config(tmp_path)
  source = sources.create_source(config, 'train')
  broken = {source.paths.index(f'{"left" if i % 2 else "right"}/v{i}.avi') for i in (2, 5, 7)}
  health = bad_data.DataHealth('train', config.max_bad_fraction)
  caplog.set_level(logging.WARNING)
  batches = loader.train_batches(config, 5, seed=0, health=health)
  epoch = [next(batches) for _ in range(2)]   # Ten rows: one epoch.
  batches.close()
  assert set(health.unreadable) == {source.path(i) for i in broken}
  for path in health.unreadable:
    assert path in caplog.text
  used = np.concatenate([b['video_index'] for b in epoch])
  assert not set(used.tolist()) & broken
  # Each unreadable video's row is read from the next readable video in index order.
  order = loader.epoch_permutation(0, 0, 10)
  for position, video in enumerate(order):
    want = video
    while want in broken:
      want = (want + 1) % 10
    assert used[position] == want
  assert health.skipped == 3
  assert health.pop_epoch_reports() == [{'data/epoch': 1.0, 'data/skipped_examples': 3.0,
                                         'data/unreadable_videos': 3.0}]
  # Deterministic: a resumed pipeline (threads or not) gives the same second batch.
  resumed = loader.train_batches(_folder_config(tmp_path, workers=0), 5, seed=0,
                                 start_step=1)
  second = next(resumed)
  resumed.close()
  for key in epoch[1]:
    np.testing.assert_array_equal(second[key], epoch[1][key], err_msg=key)

  # Evaluation leaves the unreadable videos' clips out (mask False).
  eval_batch = next(loader.eval_batches(config, 'eval', 10))
  assert eval_batch['mask'].sum() == 7
  assert not set(eval_batch['video_index'][eval_batch['mask']].tolist()) & broken


def test_too_many_unreadable_videos_stop_with_the_list(tmp_path):
  _video_folder(tmp_path, {1: 'noise', 4: 'noise'})
  config = _folder_config(tmp_path, max_bad_fraction=0.1)   # One of ten tolerated.
  batches = loader.train_batches(config, 10, seed=0)
  with pytest.raises(bad_data.BadDataError,
                     match=r'(?s)(?=.*v1\.avi)(?=.*v4\.avi)2 of the 10 train videos are '
                           r'unreadable.*max_bad_fraction=0.1.*re-download.*raise '
                           r'config.data.max_bad_fraction'):
    next(batches)


def test_failing_source_is_retried_then_replaced(monkeypatch, caplog):
  config = _config().data
  clean = next(loader.train_batches(config, 8, seed=0))
  real_load = sources.SyntheticSource.load
  calls = {}

  def flaky_load(self, index, frame_indices):
    calls[index] = calls.get(index, 0) + 1
    if index == clean['video_index'][0] and calls[index] == 1:
      raise OSError('connection reset (transient)')
    if index == clean['video_index'][1]:
      raise RuntimeError('record checksum mismatch (permanent)')
    return real_load(self, index, frame_indices)

  monkeypatch.setattr(sources.SyntheticSource, 'load', flaky_load)
  monkeypatch.setattr(bad_data, '_RETRY_DELAY_S', 0.0)
  caplog.set_level(logging.WARNING)
  config.max_bad_fraction = 0.1
  health = bad_data.DataHealth('train', config.max_bad_fraction)
  batch = next(loader.train_batches(config, 8, seed=0, health=health))
  # The transient failure was retried: row 0 is the clean one.
  np.testing.assert_array_equal(batch['video'][0], clean['video'][0])
  assert 'retry 1 of 2' in caplog.text
  # The permanent one failed 1 + retries times, then was replaced and reported.
  assert calls[clean['video_index'][1]] == 3
  assert batch['video_index'][1] == (clean['video_index'][1] + 1) % 32
  assert list(health.unreadable) == [f'SyntheticSource video {clean["video_index"][1]}']
  assert 'checksum mismatch' in caplog.text


# ------------------------------------------------------------------------------
# Interruptions.
# ------------------------------------------------------------------------------


def test_an_unfinished_save_is_invisible(tmp_path):
  directory = tmp_path / 'checkpoints'
  directory.mkdir()
  # What a process killed inside its first save leaves.
  (directory / '1.orbax-checkpoint-tmp-1234' / 'state').mkdir(parents=True)
  assert not checkpoints.has_training_checkpoints(tmp_path)
  with checkpoints.TrainCheckpointManager(directory, read_only=True) as manager:
    assert manager.latest_step() is None and manager.all_steps() == []


_RUNNER = '''
import json, os, sys, time
import jax
jax.config.update('jax_num_cpu_devices', 4)   # As tests/conftest.py.
for name, value in json.loads(os.environ['JAX_OPTIONS']).items():
  jax.config.update(name, value)
import orbax.checkpoint as ocp
from gla_jax.training import loop
import test_reliability

stall = int(os.environ['STALL_AT_STEP'])
write_json = ocp.JsonCheckpointHandler._save_fn


async def stalled_save(self, item, directory):
  # Hangs inside the save of step `stall`: its arrays are written, its metadata is not.
  if isinstance(item, dict) and item.get('step') == stall:
    print('WRITING', stall, flush=True)
    time.sleep(600)
  return await write_json(self, item, directory)


ocp.JsonCheckpointHandler._save_fn = stalled_save
result = loop.train_and_evaluate(test_reliability._config(), sys.argv[1])
print('RESULT', json.dumps({'step': result['step']}), flush=True)
'''


def test_sigkill_inside_a_checkpoint_write_resumes_to_the_same_parameters(
    tmp_path, reference, persistent_compilation_cache):
  """Kills a training run (SIGKILL) while it writes step 3, reruns it, compares with `reference`."""
  (tmp_path / 'run.py').write_text(_RUNNER)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, 'tests')]),
             JAX_OPTIONS=json.dumps({'jax_disable_most_optimizations': True,
                                     **compile_cache.settings(persistent_compilation_cache)}))
  workdir = str(tmp_path / 'work')

  def run(stall):
    log = open(tmp_path / f'stderr_{stall}.txt', 'w')
    process = subprocess.Popen([sys.executable, str(tmp_path / 'run.py'), workdir], cwd=ROOT,
                               env=dict(env, STALL_AT_STEP=str(stall)), stdout=subprocess.PIPE,
                               stderr=log, text=True)
    timer = threading.Timer(400, process.kill)
    timer.start()
    lines = []
    for line in process.stdout:
      lines.append(line)
      if line.startswith('WRITING'):
        process.send_signal(signal.SIGKILL)
        break
    process.wait()
    timer.cancel()
    log.close()
    return process.returncode, ''.join(lines), (tmp_path / f'stderr_{stall}.txt').read_text()

  code, out, err = run(stall=3)
  assert code == -signal.SIGKILL, (out, err[-3000:])
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert any(name.startswith('3.') and 'tmp' in name for name in names), names
  assert checkpoints.training_step(workdir) == 2     # The half-written step is not picked up.

  code, out, err = run(stall=0)
  assert code == 0, err[-3000:]
  assert json.loads(out.split('RESULT', 1)[1]) == {'step': 4}
  assert not [name for name in os.listdir(os.path.join(workdir, 'checkpoints')) if 'tmp' in name]
  _assert_trees_equal(_params(workdir), _params(reference[0]))


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, monkeypatch, reference):
  def terminate_before_step_1(step, batch):
    del batch
    if step == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  _patched_batches(monkeypatch, terminate_before_step_1)
  previous_handler = signal.getsignal(signal.SIGTERM)
  result = loop.train_and_evaluate(_config(), str(tmp_path))
  assert result['interrupted'] == 'SIGTERM' and result['step'] == 2
  assert checkpoints.training_step(tmp_path) == 2
  assert signal.getsignal(signal.SIGTERM) is previous_handler
  monkeypatch.undo()
  resumed = loop.train_and_evaluate(_config(), str(tmp_path))
  assert resumed['step'] == 4 and 'interrupted' not in resumed
  _assert_trees_equal(_params(tmp_path), _params(reference[0]))
  assert resumed['eval/clip_accuracy'] == reference[1]['eval/clip_accuracy']


# ------------------------------------------------------------------------------
# Non-finite steps.
# ------------------------------------------------------------------------------


def _poison(steps):
  def on_step(step, batch):
    if step in steps:
      # Loader clips are uint8 (no NaN): a float batch of NaN takes their place.
      batch['video'] = np.full(batch['video'].shape, np.nan, np.float32)
  return on_step


def test_a_nan_batch_is_skipped_and_reported(tmp_path, monkeypatch, caplog):
  _patched_batches(monkeypatch, _poison({1}))   # Step 2 (the second) sees NaN clips.
  caplog.set_level(logging.WARNING)
  result = loop.train_and_evaluate(_config(), str(tmp_path))
  assert result['step'] == 4 and result['nonfinite_steps'] == 1
  assert np.isfinite(result['train/loss']) and np.isfinite(result['eval/loss'])
  assert 'Step 2: non-finite loss' in caplog.text and 'video_index' in caplog.text
  # The skipped step changed nothing but the counters.
  _assert_trees_equal(_params(tmp_path, 2), _params(tmp_path, 1))
  for leaf in jax.tree.leaves(_params(tmp_path)):
    assert np.all(np.isfinite(leaf))
  records = {r['step']: r for r in reports.read_metrics(str(tmp_path)) if 'train/loss' in r}
  assert records[2]['train/nonfinite_steps'] == 1 and records[3]['train/nonfinite_steps'] == 0
  assert any('data/skipped_examples' in r for r in reports.read_metrics(str(tmp_path)))


def test_max_nonfinite_steps_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  _patched_batches(monkeypatch, _poison({1, 2, 3}))
  with pytest.raises(loop.NonFiniteTrainingError,
                     match=r'2 consecutive training steps \(2 to 3\).*max_nonfinite_steps=2.*'
                           r'latest checkpoint, step 2.*lower config.train.learning_rate'):
    loop.train_and_evaluate(_config(max_nonfinite_steps=2), str(tmp_path))
  assert checkpoints.training_step(tmp_path) == 2     # Step 3 tripped the limit: not saved.
  _assert_trees_equal(_params(tmp_path, 2), _params(tmp_path, 1))


# ------------------------------------------------------------------------------
# The command line: one message, no traceback (--debug shows it).
# ------------------------------------------------------------------------------

# Runs main.py on each argv of argv[1] (JSON) in this one process, as the
# interpreter would run it: the flags parsed afresh each time, stderr (fd 2)
# captured, a SystemExit's text printed with status 1, an escaping exception's
# traceback printed. One process instead of one per case saves ~3 s of imports each.
_CLI_DRIVER = '''
import json, os, runpy, sys, tempfile, traceback
from absl import app, flags
results = []
for argv in json.loads(sys.argv[1]):
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode='w+') as capture:
    os.dup2(capture.fileno(), 2)
    status = 0
    try:
      sys.argv = ['main.py'] + argv
      flags.FLAGS.unparse_flags()
      app._register_and_parse_flags_with_usage.done = False   # app.run parses once per process.
      runpy.run_path('main.py', run_name='__main__')
    except SystemExit as done:
      if isinstance(done.code, str):
        print(done.code, file=sys.stderr)
      status = 1 if isinstance(done.code, str) else done.code or 0
    except BaseException:
      traceback.print_exc()
      status = 1
    sys.stderr.flush()
    os.dup2(saved, 2)
    capture.seek(0)
    results.append({'status': status, 'stderr': capture.read()})
print('RESULTS', json.dumps(results))
'''


def test_command_line_errors_print_one_message_and_debug_shows_the_traceback(tmp_path):
  """Bad input a command-line user can cause: a message naming the fix, status 1, no traceback."""
  config = tiny.get_config()
  shape = (1, 8, 16, 16, 3)
  work = tmp_path / 'work'
  # Weights in the workdir (as --mode=convert writes them) and of another model.
  weights.save_variables(work / weights.CONVERTED_DIR, _zero_variables(models.create(
      'tiny', num_classes=config.model.num_classes), shape), {'preset': 'tiny', 'num_classes': 8})
  weights.save_variables(tmp_path / 'five', _zero_variables(models.create('tiny', num_classes=5),
                                                            shape),
                         {'preset': 'tiny', 'num_classes': 5})
  videos = _bad_video_files(tmp_path / 'videos')
  (tmp_path / 'two_names.txt').write_text('walk\nrun\n')
  base = ['--config=tiny', f'--workdir={work}']
  cases = {
      'bad config value': (base + ['--mode=eval', '--config.train.learning_rate=-1'],
                           r'Error: config.train.learning_rate=-1.0: must be >= 0'),
      'missing weights': (['--config=tiny', f'--workdir={tmp_path / "empty"}', '--mode=eval'],
                          r'(?s)Error: No weights found. Looked in:.*--mode=convert'),
      'broken video': (base + ['--mode=localize', f'--video={videos["noise"][0]}'],
                       r'(?s)Error: .*cannot open .*noise.avi.*re-encode'),
      'another model': (base + ['--mode=eval', f'--checkpoint={tmp_path / "five"}'],
                        r"(?s)Error: The weights at .*five do not fit the model.*'tiny' model "
                        r'with 5 classes'),
      'names file': (base + ['--mode=convert', '--torch_checkpoint=any.pth',
                             f'--class_names={tmp_path / "two_names.txt"}'],
                     r'Error: --class_names=.*has 2 class names but the model has 8 classes'),
      'misspelt key': (base + ['--config.data.num_frame=8'],
                       r'FATAL Flags parsing error: --config.data.num_frame=8: config.data has no '
                       r"key 'num_frame'. Did you mean \"num_frames\""),
      'misplaced flag': (base + ['--mode=train', f'--checkpoint={work}'],
                         r'Error: --checkpoint is for --mode=explain.*init_checkpoint'),
      'explain without a video': (base + ['--mode=explain'], r'--mode=explain needs --video=PATH'),
      'localize without a video': (base + ['--mode=localize'],
                                   r'--mode=localize needs --video=PATH'),
      'loc_eval without weights': (['--config=tiny', f'--workdir={tmp_path / "empty"}',
                                    '--mode=loc_eval'], r'(?s)Error: No weights found'),
  }
  runs = [argv for argv, _ in cases.values()] + [
      ['--config=tiny', f'--workdir={tmp_path / "empty"}', '--mode=eval', '--debug']]
  done = subprocess.run([sys.executable, '-c', _CLI_DRIVER, json.dumps(runs)], cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=ROOT, GLA_JAX_HUGE_PAGES='0',
                                 XDG_CACHE_HOME=str(tmp_path / 'cache')),
                        capture_output=True, text=True, timeout=300, check=False)
  assert 'RESULTS' in done.stdout, done.stderr[-3000:]
  results = json.loads(done.stdout.split('RESULTS', 1)[1])
  for (name, (_, message)), result in zip(cases.items(), results):
    assert result['status'] == 1, (name, result)
    assert 'Traceback' not in result['stderr'], (name, result['stderr'])
    assert re.search(message, result['stderr']), (name, result['stderr'])
  debug = results[-1]
  assert debug['status'] == 1
  assert 'Traceback' in debug['stderr'] and 'FileNotFoundError: No weights found' in debug['stderr']


def _zero_variables(model, shape):
  """Zero `{'params', 'batch_stats'}` of `model`'s shapes (traced, not compiled)."""
  shapes = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), shape))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
