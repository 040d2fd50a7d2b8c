"""Training checkpoints: keep the last N and the best, resume from the latest, read variables."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gla_jax.training import checkpoints


def _state(step):
  """A small pytree shaped like a train state, its values a function of `step`."""
  return {
      'step': jnp.asarray(step, jnp.int32),
      'params': {'conv': {'kernel': jnp.full((2, 3), float(step))}, 'fc': {'bias': jnp.arange(3.)}},
      'batch_stats': {'bn': {'mean': jnp.full((3,), -float(step))}},
      'opt_state': ({'trace': {'conv': {'kernel': jnp.full((2, 3), 0.5 * step)}}},),
      'rng': jnp.asarray([step, 7], jnp.uint32),
  }


def _abstract(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _save_run(directory, accuracies, keep=2):
  """Saves steps 1..len(accuracies); accuracy None = not evaluated at that step."""
  with checkpoints.TrainCheckpointManager(directory, keep=keep) as manager:
    for step, accuracy in enumerate(accuracies, start=1):
      metrics = None if accuracy is None else {'video_accuracy': accuracy, 'clip_accuracy': 0.0}
      manager.save(step, _state(step), {'step': step}, metrics)


def test_keeps_last_n_and_the_best(tmp_path):
  directory = tmp_path / 'checkpoints'
  _save_run(directory, [0.2, 0.9, None, 0.3, None, 0.5], keep=2)
  manager = checkpoints.TrainCheckpointManager(directory, keep=2)
  assert manager.all_steps() == [2, 5, 6]           # best (2) + the last two
  assert manager.latest_step() == 6
  assert manager.best_step() == 2
  assert manager.metrics(2)['video_accuracy'] == 0.9
  manager.close()


def test_best_survives_a_restart(tmp_path):
  directory = tmp_path / 'checkpoints'
  _save_run(directory, [0.2, 0.9, 0.1], keep=1)
  # A restarted run (new manager) keeps saving worse steps: the best stays.
  with checkpoints.TrainCheckpointManager(directory, keep=1) as manager:
    assert manager.latest_step() == 3
    for step in (4, 5, 6):
      manager.save(step, _state(step), {'step': step}, {'video_accuracy': 0.3})
  with checkpoints.TrainCheckpointManager(directory, keep=1) as manager:
    assert manager.all_steps() == [2, 6]
    assert manager.best_step() == 2


def test_restore_latest_full_state(tmp_path):
  directory = tmp_path / 'checkpoints'
  _save_run(directory, [None, 0.5, None], keep=3)
  with checkpoints.TrainCheckpointManager(directory) as manager:
    state, metadata = manager.restore(_abstract(_state(0)))
    assert metadata == {'step': 3}
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(_state(3))):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
      assert got.dtype == want.dtype
    state, _ = manager.restore(_abstract(_state(0)), step=2)
    assert int(state['step']) == 2


def test_variables_of_a_workdir(tmp_path):
  _save_run(tmp_path / 'checkpoints', [0.7, 0.2, None], keep=1)
  assert checkpoints.has_training_checkpoints(tmp_path)
  assert checkpoints.has_training_checkpoints(tmp_path / 'checkpoints')
  variables, metadata = checkpoints.load_training_variables(tmp_path)
  assert metadata['step'] == 3 and set(variables) == {'params', 'batch_stats'}
  np.testing.assert_array_equal(variables['params']['conv']['kernel'], np.full((2, 3), 3.0))
  assert isinstance(variables['params']['conv']['kernel'], np.ndarray)
  variables, metadata = checkpoints.load_training_variables(tmp_path, 'best')
  assert metadata['step'] == 1
  np.testing.assert_array_equal(variables['batch_stats']['bn']['mean'], np.full((3,), -1.0))
  assert checkpoints.training_step(tmp_path, 'best') == 1


def test_clear_errors(tmp_path):
  assert not checkpoints.has_training_checkpoints(tmp_path)
  with pytest.raises(FileNotFoundError, match='no training checkpoint'):
    checkpoints.load_training_variables(tmp_path)
  _save_run(tmp_path / 'checkpoints', [0.5], keep=1)
  with pytest.raises(ValueError, match='latest, best|one of'):
    checkpoints.load_training_variables(tmp_path, 'newest')
  with checkpoints.TrainCheckpointManager(tmp_path / 'checkpoints') as manager:
    with pytest.raises(FileNotFoundError, match='step 9'):
      manager.restore(_abstract(_state(0)), step=9)
    with pytest.raises(ValueError, match='best_metric'):
      manager.save(2, _state(2), {}, {'clip_accuracy': 1.0})


def test_an_unfinished_save_is_ignored(tmp_path):
  directory = tmp_path / 'checkpoints'
  _save_run(directory, [0.5, None], keep=3)
  # What a process killed mid-save leaves: a temporary step directory.
  os.makedirs(directory / '3.orbax-checkpoint-tmp-123' / 'state')
  with checkpoints.TrainCheckpointManager(directory) as manager:
    assert manager.latest_step() == 2


def test_data_state_is_saved_with_the_step(tmp_path):
  """The training stream's JSON state comes back with its step; older steps have none."""
  directory = tmp_path / 'checkpoints'
  stream_state = {'format': 1, 'origin_step': 0, 'grain': {'next_index': 12}}
  with checkpoints.TrainCheckpointManager(directory, keep=3) as manager:
    manager.save(1, _state(1), {'step': 1})
    manager.save(2, _state(2), {'step': 2}, data_state=stream_state)
  with checkpoints.TrainCheckpointManager(directory, read_only=True) as manager:
    assert manager.data_state() == manager.data_state(2) == stream_state
    assert manager.data_state(1) is None
    state, metadata = manager.restore(_abstract(_state(0)))
    assert metadata == {'step': 2} and int(state['step']) == 2
