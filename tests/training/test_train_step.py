"""The sharded training step: 4 simulated CPU devices take the steps of 1 (tiny config); it
normalises the loader's uint8 clips as numpy does."""
import jax
import numpy as np
import pytest

from configs import tiny
from gla_jax import parallel
from gla_jax.data import loader
from gla_jax.models import building
from gla_jax.models import conv
from gla_jax.training import optimization
from gla_jax.training import train_state
from gla_jax.training import train_step
from tests.training import runs


def test_one_and_four_devices_take_the_same_steps():
  config = tiny.get_config()
  losses1, state1 = runs.run_steps(config, 2, parallel.make_mesh(1))
  losses4, state4 = runs.run_steps(config, 2, parallel.make_mesh(4))
  np.testing.assert_allclose(losses4, losses1, rtol=1e-4)
  assert losses1[0] != losses1[1]
  for (path, a), (_, b) in zip(runs.leaves(state1.params), runs.leaves(state4.params)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=runs.path_name(path))


def _uint8_batch_and_numpy_input(config):
  """A loader batch (uint8 clips) and its clips normalised by numpy, float32."""
  batches = loader.train_batches(config.data, config.train.batch_size, config.train.seed)
  batch = {key: value for key, value in next(batches).items()
           if key in ('video', 'label', 'mask')}
  batches.close()
  assert batch['video'].dtype == np.uint8
  normalised = ((batch['video'].astype(np.float32) - np.asarray(config.data.mean, np.float32))
                / np.asarray(config.data.std, np.float32))
  return batch, normalised


def _cross_entropy(logits, labels):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return -log_probs[np.arange(len(labels)), labels]


@conv.use_impl('xla')          # Compiles in a fraction of the fast path's time (tested there).
def test_the_step_normalises_uint8_clips_like_numpy():
  config = tiny.get_config()
  with config.unlocked():
    config.data.std = (50.0, 60.0, 70.0)       # not 1: the division shows
  batch, normalised = _uint8_batch_and_numpy_input(config)
  model = building.create_model(config)
  learning_rate_fn = optimization.create_learning_rate_fn(config)
  state = train_state.create_train_state(config, model, jax.random.key(0))
  tx = optimization.create_optimizer(config, state.params, learning_rate_fn)
  labels = optimization.trainable_labels(state.params, config.train.freeze_until)
  logits, updates = jax.jit(lambda variables, video: model.apply(
      variables, video, train=True, mutable=['batch_stats']))(state.variables, normalised)
  mesh = parallel.make_mesh(1)
  step_fn = train_step.make_train_step(model, tx, learning_rate_fn, labels, mesh,
                                       mean=config.data.mean, std=config.data.std)
  new_state, metrics = step_fn(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh))
  assert float(metrics['loss']) == pytest.approx(
      _cross_entropy(logits, batch['label']).mean(), rel=1e-5)
  assert float(metrics['accuracy']) == np.mean(np.argmax(logits, -1) == batch['label'])
  # BatchNorm saw the normalised clips: its new statistics are the model's on them.
  for (path, a), (_, b) in zip(runs.leaves(updates['batch_stats']),
                               runs.leaves(jax.device_get(new_state.batch_stats))):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=runs.path_name(path))

