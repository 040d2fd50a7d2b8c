"""The training loop on the tiny and demo configs (4 simulated CPU devices).

An interrupted run resumes to the parameters of an uninterrupted one; the demo
and gated configs train end to end. Compiles are cached in pytest's cache
directory (tests/compile_cache.py): the runs of one config compile their steps
once, later sessions not at all.
"""
import json
import os

import jax
import numpy as np
import pytest

from configs import demo
from configs import tiny
from gla_jax.data import loader
from gla_jax.models import building
from gla_jax.outputs import reports
from gla_jax.training import checkpoints
from gla_jax.training import evaluate
from gla_jax.training import loop
from gla_jax.training import train_state
from tests import compile_cache
from tests.training import runs


@pytest.fixture(scope='module', autouse=True)
def compile_once(request, tmp_path_factory):
  cache_dir = compile_cache.directory(request, tmp_path_factory, 'jax_compilation_cache_loop')
  with compile_cache.enabled(cache_dir):
    yield cache_dir


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
  config = tiny.get_config()
  config.train.update(num_steps=4, eval_every=0, checkpoint_every=2, log_every=1)
  full = loop.train_and_evaluate(config, str(tmp_path / 'full'))

  real_batches = loader.train_batches

  def interrupted(*args, start_step=0, **kwargs):
    for step, batch in enumerate(real_batches(*args, start_step=start_step, **kwargs),
                                 start_step):
      if step == 3:
        raise KeyboardInterrupt('simulated preemption before step 3')
      yield batch

  monkeypatch.setattr(loader, 'train_batches', interrupted)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert checkpoints.training_step(tmp_path / 'resumed') == 2
  monkeypatch.undo()
  resumed = loop.train_and_evaluate(config, str(tmp_path / 'resumed'))

  want, _ = checkpoints.load_training_variables(tmp_path / 'full')
  got, metadata = checkpoints.load_training_variables(tmp_path / 'resumed')
  assert metadata['step'] == 4
  for (path, a), (_, b) in zip(runs.leaves(want), runs.leaves(got)):
    np.testing.assert_array_equal(b, a, err_msg=runs.path_name(path))
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


def test_demo_config_trains_end_to_end(tmp_path):
  config = demo.get_config()
  config.train.update(num_steps=2, warmup_steps=0, log_every=1, eval_every=0, checkpoint_every=0)
  config.eval.max_batches = 1
  result = loop.train_and_evaluate(config, str(tmp_path))
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
  model = building.create_model(config)
  assert model.gated
  start = jax.device_get(train_state.create_train_state(config, model, jax.random.key(0)))
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == 2 and np.isfinite(result['train/loss'])
  end, _ = checkpoints.load_training_variables(tmp_path)
  assert {f'gate_layer{s}' for s in range(1, 5)} <= set(start.params), sorted(start.params)
  # At 16 x 16 pixels layer3 and layer4 have one position: a map normalised over a single
  # position is constant, so only the gates of layer1 (4 x 4) and layer2 (2 x 2) get gradients.
  for module in ['gate_layer1', 'gate_layer2', 'stem_conv', 'layer4_0']:
    for (path, a), (_, b) in zip(runs.leaves(start.params[module]),
                                 runs.leaves(end['params'][module])):
      assert not np.array_equal(a, b), f'{module}/{runs.path_name(path)} did not train'
