"""Training, evaluation and reporting on the tiny config (4 simulated CPU devices).

Independent references: PyTorch's SGD for the optimizer, hand-made logits with
known answers for the metrics, a 1-device run for the sharded step, an
uninterrupted run for resuming, the converted checkpoint for fine-tuning.
"""
import json
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import demo
from configs import tiny
from gla_jax.training import checkpoints
from gla_jax.models import convert
from gla_jax.training import evaluate
from gla_jax.data import input_pipeline
from gla_jax import models
from gla_jax import parallel
from gla_jax.outputs import reports
from gla_jax.training import train
from tests import torch_resnext


def _leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def _name(path):
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def _run_steps(config, num_steps, mesh, state=None):
  """`num_steps` training steps as train_and_evaluate takes them; returns (losses, state)."""
  model = train.create_model(config)
  learning_rate_fn = train.create_learning_rate_fn(config)
  if state is None:
    state = train.create_train_state(config, model, jax.random.key(config.train.seed))
  tx = train.create_optimizer(config, state.params, learning_rate_fn)
  labels = train.trainable_labels(state.params, config.train.freeze_until)
  step_fn = train.make_train_step(model, tx, learning_rate_fn, labels, mesh)
  state = parallel.replicate(state, mesh)
  batches = input_pipeline.train_batches(config.data, config.train.batch_size,
                                         config.train.seed)
  losses = []
  for _ in range(num_steps):
    batch = next(batches)
    state, metrics = step_fn(state, parallel.shard_batch(
        {key: batch[key] for key in ('video', 'label', 'mask')}, mesh))
    losses.append(float(metrics['loss']))
  batches.close()
  return losses, jax.device_get(state)


# ------------------------------------------------------------------------------
# Optimizer and schedules.
# ------------------------------------------------------------------------------


@pytest.mark.parametrize('optimizer, nesterov', [('sgd', False), ('sgd', True),
                                                  ('adamw', False)])
def test_optimizers_match_torch(optimizer, nesterov):
  config = tiny.get_config()
  config.train.update(optimizer=optimizer, learning_rate=0.1, schedule='constant',
                      warmup_steps=0, momentum=0.9, weight_decay=1e-2, nesterov=nesterov)
  rng = np.random.default_rng(0)
  w0, target = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4))
  params = {'fc': {'kernel': jnp.asarray(w0)}}
  tx = train.create_optimizer(config, params, train.create_learning_rate_fn(config))
  opt_state = tx.init(params)

  def loss(p):
    return jnp.sum((p['fc']['kernel'] - target) ** 2 * jnp.arange(1, 13).reshape(3, 4))

  weight = torch.tensor(w0, requires_grad=True)
  if optimizer == 'sgd':
    reference = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=1e-2,
                                nesterov=nesterov)
  else:
    reference = torch.optim.AdamW([weight], lr=0.1, weight_decay=1e-2)
  for _ in range(4):
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    reference.zero_grad()
    torch_loss = torch.sum((weight - torch.tensor(target, dtype=torch.float32)) ** 2
                           * torch.arange(1, 13, dtype=torch.float32).reshape(3, 4))
    torch_loss.backward()
    reference.step()
  # Adam's steps are about lr = 0.1 each whatever the gradient: float32 rounding of
  # 4 such steps leaves a few 1e-6 on parameters that cross zero.
  np.testing.assert_allclose(params['fc']['kernel'], weight.detach().numpy(), rtol=1e-5,
                             atol=1e-5 if optimizer == 'adamw' else 1e-6)


def test_learning_rate_schedules():
  config = tiny.get_config()
  config.train.update(learning_rate=0.4, num_steps=12, warmup_steps=2, schedule='cosine')
  lr = train.create_learning_rate_fn(config)
  np.testing.assert_allclose([lr(0), lr(1), lr(2), lr(7), lr(12)], [0, 0.2, 0.4, 0.2, 0],
                             atol=1e-6)
  config.train.update(schedule='step', step_boundaries=(6, 9), step_decay=0.1)
  lr = train.create_learning_rate_fn(config)
  np.testing.assert_allclose([lr(1), lr(5), lr(6), lr(8), lr(9), lr(11)],
                             [0.2, 0.4, 0.04, 0.04, 0.004, 0.004], rtol=1e-5)
  config.train.update(schedule='constant', warmup_steps=0)
  assert float(train.create_learning_rate_fn(config)(5)) == pytest.approx(0.4)


def test_freeze_until_follows_hara_ft_begin_index():
  params = {name: {'kernel': 0} for name in
            ('stem_conv', 'stem_bn', 'layer1_0', 'layer2_0', 'layer2_1', 'layer3_0',
             'layer4_0', 'fc', 'gate_layer3')}
  frozen = lambda until: sorted(m for m, leaf in train.trainable_labels(params, until).items()
                                if leaf['kernel'] == train.FROZEN)
  assert frozen('') == []
  assert frozen('conv1') == ['stem_bn', 'stem_conv']
  # Hara's UCF101 recipe, ft_begin_index=4: train layer4 and fc.
  assert frozen('layer3') == ['layer1_0', 'layer2_0', 'layer2_1', 'layer3_0', 'stem_bn',
                              'stem_conv']
  assert 'layer4_0' in frozen('layer4') and 'fc' not in frozen('layer4')
  with pytest.raises(ValueError, match='freeze_until'):
    train.trainable_labels(params, 'layer5')


# ------------------------------------------------------------------------------
# Validation.
# ------------------------------------------------------------------------------


@pytest.mark.parametrize('section, key, value, message', [
    ('train', 'batch_size', 6, 'not divisible by the 4 devices'),
    ('eval', 'batch_size', 10, 'config.eval.batch_size=10'),
    ('model', 'preset', 'resnext18', 'Unknown model preset'),
    ('model', 'dtype', 'float16', 'dtype'),
    ('train', 'freeze_until', 'layer2', 'init_checkpoint'),
    ('train', 'schedule', 'linear', 'schedule'),
    ('train', 'best_metric', 'loss', 'best_metric'),
    ('train', 'warmup_steps', 100, 'warmup_steps'),
    ('train', 'optimizer', 'adam', 'optimizer'),
    ('model', 'stem_kernel', (3, 4, 3), 'odd'),
    ('model', 'temporal_strides', (1, 0, 2, 2), 'temporal_strides'),
    ('model', 'temporal_strides', (1, 2), 'temporal_strides'),
])
def test_config_errors_name_the_key(section, key, value, message):
  config = tiny.get_config()
  config[section][key] = value
  with pytest.raises(ValueError, match=message):
    train.validate_config(config, num_devices=4)


def test_clip_shape_check():
  model = models.create('tiny', num_classes=8)
  shapes = train.check_clip_shape(model, 16, 112)
  assert shapes['layer4'] == (1, 4, 4) and shapes['layer3'] == (2, 7, 7)   # DESIGN.md section 2.
  assert train.check_clip_shape(model, 1, 1)['layer4'] == (1, 1, 1)
  with pytest.raises(ValueError, match='num_frames'):
    train.check_clip_shape(model, 0, 32)
  # The demo's network: no max pool, so half the strides.
  demo_model = models.create('tiny', num_classes=8, stem_kernel=(3, 3, 3), max_pool=False)
  shapes = train.check_clip_shape(demo_model, 8, 32)
  assert shapes['conv1'] == (8, 16, 16) and shapes['layer1'] == (8, 16, 16)
  assert shapes['layer4'] == (1, 2, 2)
  # Time stride 1 in layer2: every stage from there on keeps twice the frames.
  kept_frames = models.create('tiny', num_classes=8, stem_kernel=(3, 3, 3), max_pool=False,
                              temporal_strides=(1, 1, 2, 2))
  shapes = train.check_clip_shape(kept_frames, 8, 32)
  assert [shapes[f'layer{s}'] for s in range(1, 5)] == [(8, 16, 16), (8, 8, 8), (4, 4, 4),
                                                        (2, 2, 2)]


def test_temporal_strides_need_one_per_stage():
  with pytest.raises(ValueError, match='temporal_strides=.*each of the 4 stages'):
    train.check_clip_shape(models.create('tiny', temporal_strides=(1, 2)), 8, 32)


# ------------------------------------------------------------------------------
# Evaluation metrics on hand-made logits.
# ------------------------------------------------------------------------------


def test_top_k_ranks_and_ties():
  logits = np.array([[0, 1, 2, 3, 4, 5, 6],     # label 0 is last: rank 6
                     [6, 5, 4, 3, 2, 1, 0],     # label 4: four classes before it
                     [1, 1, 1, 1, 1, 1, 1],     # label 0 ties all: lowest index first
                     [1, 1, 1, 1, 1, 1, 1],     # label 6 ties all: six classes before it
                     [0, 0, 9, 0, 0, 9, 0]],    # label 5 ties class 2, which comes first
                    np.float32)
  labels = np.array([0, 4, 0, 6, 5])
  np.testing.assert_array_equal(evaluate.label_rank(logits, labels), [6, 4, 0, 6, 1])
  np.testing.assert_array_equal(evaluate.top_k_correct(logits, labels, 5),
                                [False, True, True, False, True])
  result = evaluate.compute_metrics(logits, labels, np.arange(5), np.ones(5, bool))
  assert result['clip_accuracy'] == pytest.approx(1 / 5)
  assert result['clip_top5'] == pytest.approx(3 / 5)
  # The confusion matrix's prediction is the top-1 class (argmax, first on ties).
  assert result['clip_confusion'][0, 6] == 1 and result['clip_confusion'][5, 2] == 1


def test_video_accuracy_averages_softmax_scores_and_ignores_padding():
  # Video 7 (label 2): clip A says class 1, clip B says class 2 more strongly.
  # softmax([0, 5, 4]) = [.005, .727, .268]; softmax([0, 0, 3]) = [.045, .045, .909];
  # mean = [.025, .386, .588] -> class 2. Video 3 (label 0): one clip, correct.
  # Video 9 (label 1): two clips saying class 0 -> wrong.
  # Padding rows: mask False, label 0, video_index -1, logits that would be "correct".
  logits = np.array([[0, 5, 4], [0, 0, 3], [5, 0, 0], [3, 1, 0], [2, 0, 1],
                     [9, 0, 0], [9, 0, 0]], np.float32)
  labels = np.array([2, 2, 0, 1, 1, 0, 0])
  video_index = np.array([7, 7, 3, 9, 9, -1, -1])
  mask = np.array([True] * 5 + [False] * 2)
  accumulator = evaluate.MetricAccumulator(3)
  # Two batches, video 9's clips split between them.
  accumulator.add(logits[:4], labels[:4], video_index[:4], mask[:4])
  accumulator.add(logits[4:], labels[4:], video_index[4:], mask[4:])
  result = accumulator.result()
  assert result['num_clips'] == 5 and result['num_videos'] == 3
  assert result['clip_accuracy'] == pytest.approx(2 / 5)        # rows 1 and 2
  assert result['video_accuracy'] == pytest.approx(2 / 3)       # videos 7 and 3
  assert result['video_top5'] == 1.0                            # 3 classes: top-5 is all
  np.testing.assert_array_equal(result['clip_confusion'], [[1, 0, 0], [2, 0, 0], [0, 1, 1]])
  np.testing.assert_array_equal(result['video_confusion'], [[1, 0, 0], [1, 0, 0], [0, 0, 1]])


def test_metric_input_errors():
  accumulator = evaluate.MetricAccumulator(3)
  with pytest.raises(ValueError, match='No evaluation clip'):
    accumulator.result()
  accumulator.add(np.zeros((2, 3)), np.array([0, 0]), np.array([4, 4]), np.ones(2, bool))
  with pytest.raises(ValueError, match='Video 4'):     # the same video with another label
    accumulator.add(np.zeros((1, 3)), np.array([2]), np.array([4]), np.ones(1, bool))
  with pytest.raises(ValueError, match='expected 3'):
    accumulator.add(np.zeros((1, 5)), np.array([0]), np.array([1]), np.ones(1, bool))


# ------------------------------------------------------------------------------
# Reporting.
# ------------------------------------------------------------------------------


def test_reporter_files(tmp_path):
  reporter = reports.Reporter(str(tmp_path), total_steps=4, clips_per_step=8,
                                tensorboard=False)
  for step in range(1, 5):
    reporter.tick(step)
    reporter.write(step, {'train/loss': 2.0 / step, 'train/accuracy': step / 4,
                          'train/learning_rate': 0.1})
  reporter.write(4, {'eval/clip_accuracy': 0.5, 'eval/video_accuracy': 0.75, 'eval/loss': 1.0})
  reporter.close()
  records = reports.read_metrics(str(tmp_path))
  assert [r['step'] for r in records] == [1, 2, 3, 4, 4]
  assert records[-1]['eval/video_accuracy'] == 0.75
  picture = cv2.imread(str(tmp_path / reports.CURVES_FILE))
  assert picture.shape == (270, 3 * 360, 3) and picture.std() > 10
  # A run resumed at step 2 drops the lines the interrupted run wrote after it.
  reports.Reporter(str(tmp_path), total_steps=4, start_step=2, tensorboard=False).close()
  assert [r['step'] for r in reports.read_metrics(str(tmp_path))] == [1, 2]


def test_metric_lines_do_not_break_the_progress_bar(tmp_path, capsys):
  reporter = reports.Reporter(str(tmp_path), total_steps=4, clips_per_step=8,
                                tensorboard=False)
  for step in range(1, 5):
    reporter.tick(step)
    reporter.write(step, {'train/loss': 2.0 / step})
  reporter.close()
  lines = [line.split('\r')[-1] for line in capsys.readouterr().err.split('\n')]
  # Each metric line is whole, on its own line, not spliced into a bar refresh.
  assert [line for line in lines if 'train/loss' in line] == [
      f'step {step}: train/loss {2.0 / step:.5g}' for step in range(1, 5)]


def test_tensorboard_events(tmp_path):
  pytest.importorskip('tensorboardX')
  reporter = reports.Reporter(str(tmp_path), total_steps=1, tensorboard=True)
  reporter.write(1, {'train/loss': 1.5})
  reporter.close()
  events = os.listdir(tmp_path / reports.TENSORBOARD_DIR)
  assert any(name.startswith('events.out.tfevents') for name in events)


# ------------------------------------------------------------------------------
# Training.
# ------------------------------------------------------------------------------


def test_one_and_four_devices_take_the_same_steps():
  config = tiny.get_config()
  losses1, state1 = _run_steps(config, 2, parallel.make_mesh(1))
  losses4, state4 = _run_steps(config, 2, parallel.make_mesh(4))
  np.testing.assert_allclose(losses4, losses1, rtol=1e-4)
  assert losses1[0] != losses1[1]
  for (path, a), (_, b) in zip(_leaves(state1.params), _leaves(state4.params)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=_name(path))


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
  config = tiny.get_config()
  config.train.update(num_steps=4, eval_every=0, checkpoint_every=2, log_every=1)
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))

  real_batches = input_pipeline.train_batches

  def interrupted(*args, start_step=0, **kwargs):
    for step, batch in enumerate(real_batches(*args, start_step=start_step, **kwargs),
                                 start_step):
      if step == 3:
        raise KeyboardInterrupt('simulated preemption before step 3')
      yield batch

  monkeypatch.setattr(input_pipeline, 'train_batches', interrupted)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert checkpoints.training_step(tmp_path / 'resumed') == 2
  monkeypatch.undo()
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))

  want, _ = checkpoints.load_training_variables(tmp_path / 'full')
  got, metadata = checkpoints.load_training_variables(tmp_path / 'resumed')
  assert metadata['step'] == 4
  for (path, a), (_, b) in zip(_leaves(want), _leaves(got)):
    np.testing.assert_array_equal(b, a, err_msg=_name(path))
  assert resumed['eval/clip_accuracy'] == full['eval/clip_accuracy']
  assert resumed['train/loss'] == full['train/loss']
  train_steps = [r['step'] for r in reports.read_metrics(str(tmp_path / 'resumed'))
                 if 'train/loss' in r]
  assert train_steps == [1, 2, 3, 4]

  # --mode=eval on the finished workdir: the same numbers, written to eval_eval.json.
  result = evaluate.evaluate(config, str(tmp_path / 'full'))
  assert result['clip_accuracy'] == full['eval/clip_accuracy']
  assert result['step'] == 4
  written = json.load(open(evaluate.results_path(str(tmp_path / 'full'), 'eval')))
  assert written['num_clips'] == config.data.synthetic.val_size
  assert np.sum(written['video_confusion']) == written['num_videos']
  assert written['class_names'][0] == 'move_left'


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """A published-layout tiny checkpoint with a 5-class head, and its conversion."""
  directory = tmp_path_factory.mktemp('finetune')
  net = torch_resnext.randomize_(torch_resnext.create('tiny', num_classes=5), seed=3)
  torch_resnext.save_published_checkpoint(net, directory / 'kinetics.pth', arch='resnext-tiny')
  convert.convert_checkpoint(directory / 'kinetics.pth', models.create('tiny', num_classes=5),
                             directory / 'converted')
  return directory


def test_fine_tuning_trains_only_the_unfrozen_stages(converted):
  config = tiny.get_config()
  config.train.update(init_checkpoint=str(converted / 'converted'), drop_head=True,
                      freeze_until='layer2', num_steps=2, learning_rate=0.01)
  model = train.create_model(config)
  # On the host: the training step donates (and so deletes) the device state it is given.
  start = jax.device_get(train.create_train_state(config, model, jax.random.key(0)))
  loaded, _ = checkpoints.load_variables(converted / 'converted')
  for module in ('stem_conv', 'layer3_0'):
    for (path, a), (_, b) in zip(_leaves(loaded['params'][module]),
                                 _leaves(start.params[module])):
      np.testing.assert_array_equal(b, a, err_msg=_name(path))
  assert start.params['fc']['kernel'].shape == (1024, 8)            # the new head

  _, end = _run_steps(config, 2, parallel.make_mesh(4), state=start)
  for module in start.params:
    for (path, a), (_, b) in zip(_leaves(start.params[module]), _leaves(end.params[module])):
      if module in ('stem_conv', 'stem_bn', 'layer1_0', 'layer2_0'):
        np.testing.assert_array_equal(b, a, err_msg=f'{module}/{_name(path)} is frozen')
      else:
        assert not np.array_equal(b, a), f'{module}/{_name(path)} did not train'
  # Hara's choice, kept: frozen stages still update their BatchNorm statistics.
  assert not np.array_equal(start.batch_stats['stem_bn']['mean'],
                            end.batch_stats['stem_bn']['mean'])


def test_init_checkpoint_sources_agree(converted, tmp_path):
  config = tiny.get_config()
  model = train.create_model(config)
  config.train.update(init_checkpoint=str(converted / 'converted'), drop_head=True)
  from_dir = train.initial_variables(config, model, jax.random.key(1))
  config.train.init_checkpoint = str(converted / 'kinetics.pth')     # converted on the fly
  from_pth = train.initial_variables(config, model, jax.random.key(1))
  # A training workdir holding the same weights.
  with checkpoints.TrainCheckpointManager(tmp_path / 'checkpoints') as manager:
    manager.save(7, {'params': from_dir['params'], 'batch_stats': from_dir['batch_stats']},
                 {'step': 7})
  config.train.init_checkpoint = str(tmp_path)
  from_workdir = train.initial_variables(config, model, jax.random.key(1))
  for other in (from_pth, from_workdir):
    for (path, a), (_, b) in zip(_leaves(from_dir), _leaves(other)):
      if 'fc' not in _name(path):
        np.testing.assert_array_equal(b, a, err_msg=_name(path))

  config.train.update(init_checkpoint=str(converted / 'converted'), drop_head=False)
  with pytest.raises(ValueError, match='drop_head=True'):
    train.initial_variables(config, model, jax.random.key(1))
  config.train.init_checkpoint = str(tmp_path / 'nothing')
  with pytest.raises(FileNotFoundError, match='init_checkpoint'):
    train.initial_variables(config, model, jax.random.key(1))


def test_demo_config_trains_end_to_end(tmp_path):
  config = demo.get_config()
  config.train.update(num_steps=2, warmup_steps=0, log_every=1, eval_every=0, checkpoint_every=0)
  config.eval.max_batches = 1
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == 2 and np.isfinite(result['train/loss'])
  assert result['eval/clip_accuracy'] >= 0 and result['best/step'] == 2
  assert checkpoints.training_step(tmp_path) == 2
  assert [r['step'] for r in reports.read_metrics(str(tmp_path))] == [1, 2, 2]
  assert os.path.getsize(tmp_path / reports.CURVES_FILE) > 1000
  written = json.load(open(evaluate.results_path(str(tmp_path), 'eval')))
  assert written['num_clips'] == config.eval.batch_size


def test_gated_model_trains_end_to_end(tmp_path):
  config = tiny.get_config()
  config.model.gated = True
  config.train.update(num_steps=2, warmup_steps=0, eval_every=0, checkpoint_every=0)
  config.eval.max_batches = 1
  model = train.create_model(config)
  assert model.gated
  start = jax.device_get(train.create_train_state(config, model, jax.random.key(0)))
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == 2 and np.isfinite(result['train/loss'])
  end, _ = checkpoints.load_training_variables(tmp_path)
  assert {f'gate_layer{s}' for s in range(1, 5)} <= set(start.params), sorted(start.params)
  # At 16 x 16 pixels layer3 and layer4 have one position: a map normalised over a single
  # position is constant, so only the gates of layer1 (4 x 4) and layer2 (2 x 2) get gradients.
  for module in ['gate_layer1', 'gate_layer2', 'stem_conv', 'layer4_0']:
    for (path, a), (_, b) in zip(_leaves(start.params[module]), _leaves(end['params'][module])):
      assert not np.array_equal(a, b), f'{module}/{_name(path)} did not train'


@pytest.mark.parametrize('name, variant', [('demo', None), ('tiny', None), ('ucf101', 'tfds'),
                                           ('ucf101', 'folder'), ('kinetics', None)])
def test_every_config_is_locked_and_valid(name, variant, tmp_path):
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  config = module.get_config(variant)
  with pytest.raises(AttributeError):
    config.train.learning_rat = 0.1                      # locked: a misspelt key fails
  if config.data.source == 'folder':
    config.data.root = str(tmp_path)
  train.validate_config(config, num_devices=8)
  assert module.__doc__ and 'main.py --config=configs/' in module.__doc__   # its command
