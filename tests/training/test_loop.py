"""The training loop on the tiny and demo configs (4 simulated CPU devices).

An interrupted run resumes to the parameters of an uninterrupted one. The demo
and gated configs train end to end in the gating study's test
(tests/models/test_gating.py), which runs both.
"""
import json

import numpy as np
import pytest

from configs import tiny
from gla_jax.data import loader
from gla_jax.outputs import reports
from gla_jax.training import checkpoints
from gla_jax.training import evaluate
from gla_jax.training import loop
from tests.training import runs


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
  config = tiny.get_config()
  config.num_devices = 1   # test_reliability.py's programs: compiled once (tests/conftest.py).
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
