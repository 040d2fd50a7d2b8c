"""What the training tests share: steps taken as `train_and_evaluate` takes them, named leaves."""
import jax

from gla_jax import parallel
from gla_jax.data import loader
from gla_jax.models import building
from gla_jax.training import optimization
from gla_jax.training import train_state
from gla_jax.training import train_step


def leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def path_name(path):
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def run_steps(config, num_steps, mesh, state=None):
  """`num_steps` training steps as train_and_evaluate takes them; returns (losses, state)."""
  model = building.create_model(config)
  learning_rate_fn = optimization.create_learning_rate_fn(config)
  if state is None:
    state = train_state.create_train_state(config, model, jax.random.key(config.train.seed))
  tx = optimization.create_optimizer(config, state.params, learning_rate_fn)
  labels = optimization.trainable_labels(state.params, config.train.freeze_until)
  step_fn = train_step.make_train_step(model, tx, learning_rate_fn, labels, mesh,
                                       mean=config.data.mean, std=config.data.std)
  state = parallel.replicate(state, mesh)
  batches = loader.train_batches(config.data, config.train.batch_size, config.train.seed)
  losses = []
  for _ in range(num_steps):
    batch = next(batches)
    state, metrics = step_fn(state, parallel.shard_batch(
        {key: batch[key] for key in ('video', 'label', 'mask')}, mesh))
    losses.append(float(metrics['loss']))
  batches.close()
  return losses, jax.device_get(state)
