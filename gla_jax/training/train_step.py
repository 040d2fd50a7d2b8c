"""The training step: one compiled update on a batch sharded over the `'data'` mesh axis.

`make_train_step` jits `train_step` with the batch split over `'data'` and the
state replicated and donated; the batch's uint8 clips are normalised inside it
(`models.normalize_video`, `config.data.mean` and `std`); XLA inserts the gradient all-reduce, and
BatchNorm statistics are those of the global batch (`gla_jax.parallel`). A
step whose loss, trainable gradients or BatchNorm statistics are not finite is
not applied: parameters, statistics and optimizer moments keep their values
(`jnp.where`), while the step count, the schedule count and the RNG advance,
so data position and learning rate stay those of an uninterrupted run; the
metric `nonfinite` marks such steps. A batch with an optional `data_failed`
row flag set on any row (a process whose loader failed:
`input_failures`) is not applied either; the metric `data_failed` (the flag
or-ed over the global batch) tells every process.
"""
import functools
from typing import Any, Callable, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from gla_jax import models
from gla_jax import parallel
from gla_jax.training import optimization
from gla_jax.training import train_state


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the rows where `mask` is True."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  weights = mask.astype(jnp.float32)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def train_step(state: train_state.TrainState, batch: Dict[str, jax.Array], *,
               model: models.ResNeXt3D, tx: optax.GradientTransformation,
               learning_rate_fn: optax.Schedule, labels: Any, mean: Sequence[float],
               std: Sequence[float]) -> Tuple[train_state.TrainState, Dict[str, jax.Array]]:
  """One optimizer step (`tx`) on the (global) batch; BatchNorm in training mode.

  The batch's `video` is uint8 RGB [B, T, S, S, 3] (the loader's), normalised
  here with `mean` and `std` (`config.data`) before the model sees it.

  A step whose loss, trainable gradients or new BatchNorm statistics are not
  finite is not applied (module docstring): parameters, statistics and the
  optimizer's float state keep their values, counters advance.

  Returns:
    The new state and scalar metrics: loss, accuracy, learning_rate (the one
    this step used), grad_norm (global L2 norm of the trainable parameters'
    gradients, before weight decay), nonfinite (1.0 where the update was
    skipped as non-finite, else 0.0), data_failed (1.0 where a process's
    loader failed: the update was skipped).
  """
  rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
  video = models.normalize_video(batch['video'], mean, std)

  def loss_fn(params):
    logits, updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, video, train=True,
        mutable=['batch_stats'], rngs={'dropout': step_rng})
    return cross_entropy(logits, batch['label'], batch['mask']), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  # Norm of the trainable gradients only: XLA then drops the frozen layers' backward pass.
  trainable = [g for g, label in zip(jax.tree.leaves(grads), jax.tree.leaves(labels))
               if label == optimization.TRAINABLE]
  grad_norm = optax.tree.norm(trainable)
  updates_tx, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates_tx)
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            & jnp.isfinite(optax.tree.norm(updates['batch_stats'])))
  data_failed = jnp.any(batch['data_failed']) if 'data_failed' in batch else jnp.bool_(False)
  applied = finite & ~data_failed
  mask = batch['mask'].astype(jnp.float32)
  correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
  metrics = {
      'loss': loss,
      'accuracy': jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1.0),
      'learning_rate': learning_rate_fn(state.step),
      'grad_norm': grad_norm,
      'nonfinite': 1.0 - finite.astype(jnp.float32),
      'data_failed': data_failed.astype(jnp.float32),
  }
  new_state = state.replace(
      step=state.step + 1, params=_if_finite(applied, params, state.params),
      batch_stats=_if_finite(applied, updates['batch_stats'], state.batch_stats),
      opt_state=_if_finite(applied, opt_state, state.opt_state), rng=jax.random.key_data(rng))
  return new_state, metrics


def _if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
  """`new` where `finite`, else `old`, leaf by leaf; integer leaves (counters) always advance."""
  return jax.tree.map(
      lambda n, o: n if jnp.issubdtype(n.dtype, jnp.integer) else jnp.where(finite, n, o),
      new, old)


def make_train_step(model: models.ResNeXt3D, tx: optax.GradientTransformation,
                    learning_rate_fn: optax.Schedule, labels: Any, mesh: jax.sharding.Mesh, *,
                    mean: Sequence[float], std: Sequence[float]) -> Callable:
  """`train_step` compiled once: batch split over `'data'`, state replicated and donated.

  `mean` and `std` (`config.data.mean`, `config.data.std`) normalise the
  batch's uint8 clips on the device.
  """
  replicated = parallel.replicated_sharding(mesh)
  # Plain tuples: the constants are baked into the compiled step.
  mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn,
                        labels=labels, mean=mean, std=std),
      in_shardings=(replicated, parallel.data_sharding(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,))
