"""The optimizer, its learning-rate schedule and the frozen stages of fine-tuning.

`train.optimizer`: 'sgd' is Hara et al.'s `torch.optim.SGD` (L2 weight decay
added to the gradient before a damped momentum, `train.dampening` 0.9 as in his
main.py, optional Nesterov), 'adamw' is `optax.adamw` (decoupled weight
decay). The learning rate warms up linearly from 0 (Goyal et al.), then
follows `train.schedule`: cosine decay to 0 (SGDR's annealing), steps, or
constant. `train.freeze_until` freezes the stem and the stages up to one
(Hara's `ft_begin_index`): frozen parameters get no update, no weight decay
and no optimizer state (their BatchNorm statistics still move, as under
Hara's `model.train()`).

References:
  Hara, Kataoka, Satoh. "Can Spatiotemporal 3D CNNs Retrace the History of 2D
  CNNs and ImageNet?" CVPR 2018 (https://github.com/kenshohara/3D-ResNets-PyTorch).
  Loshchilov, Hutter. "SGDR: Stochastic Gradient Descent with Warm Restarts"
  (cosine schedule), ICLR 2017. Goyal et al. "Accurate, Large Minibatch SGD:
  Training ImageNet in 1 Hour" (linear warm-up), 2017.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gla_jax import models

OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('cosine', 'step', 'constant')
# freeze_until values in network order; index k freezes stem (0) .. stage k.
FREEZE_POINTS = ('conv1',) + models.STAGE_NAMES

TRAINABLE, FROZEN = 'trainable', 'frozen'


def create_learning_rate_fn(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate at each step: linear warm-up from 0, then `train.schedule`.

  `cosine` decays to 0 at `num_steps`; `step` multiplies the rate by
  `step_decay` at each of `step_boundaries` (absolute steps); `constant` keeps it.
  """
  train = config.train
  peak, warmup, total = float(train.learning_rate), int(train.warmup_steps), int(train.num_steps)
  if train.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, decay_steps=max(total - warmup, 1))
  elif train.schedule == 'step':
    # join_schedules hands the second schedule step - warmup.
    main = optax.piecewise_constant_schedule(
        peak, {int(b) - warmup: float(train.step_decay) for b in train.step_boundaries})
  elif train.schedule == 'constant':
    main = optax.constant_schedule(peak)
  else:
    raise ValueError(f'Unknown config.train.schedule {train.schedule!r}; choose one of '
                     f'{SCHEDULES}.')
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def trainable_labels(params: Any, freeze_until: str) -> Any:
  """`TRAINABLE` or `FROZEN` for every leaf of `params` (Hara's ft_begin_index).

  Args:
    params: the model's parameters (top-level modules `stem_conv`, `stem_bn`,
      `layer{s}_{b}`, `fc`, ...).
    freeze_until: '' (train everything), 'conv1' (freeze the stem) or
      'layer1'..'layer4' (freeze the stem and stages up to this one).
  """
  if freeze_until and freeze_until not in FREEZE_POINTS:
    raise ValueError(f'Unknown config.train.freeze_until {freeze_until!r}; use one of '
                     f"{('',) + FREEZE_POINTS} (everything up to and including it is frozen).")
  last_frozen = FREEZE_POINTS.index(freeze_until) if freeze_until else -1
  labels = {}
  for module, subtree in params.items():
    stage = models.module_stage(module)
    frozen = stage is not None and stage <= last_frozen
    labels[module] = jax.tree.map(lambda _, f=frozen: FROZEN if f else TRAINABLE, subtree)
  return labels


class DampedMomentumState(NamedTuple):
  """`damped_momentum`'s state: updates applied so far (a skipped non-finite step is not
  one) and PyTorch's `momentum_buffer`."""
  count: jax.Array
  momentum: Any


def damped_momentum(momentum: float, dampening: float,
                    nesterov: bool = False) -> optax.GradientTransformation:
  """PyTorch SGD's momentum with dampening (`torch.optim.SGD`), as an optax transformation.

  The first update sets buf = g (undamped, as PyTorch does); later ones
  buf = momentum * buf + (1 - dampening) * g. The output is buf, or
  g + momentum * buf with `nesterov`. `optax.trace` is the case dampening = 0.
  The learning rate is applied after it (`optax.scale_by_learning_rate`).
  """
  def init_fn(params):
    return DampedMomentumState(count=jnp.zeros([], jnp.int32),
                               momentum=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    first = state.count == 0
    buffer = jax.tree.map(
        lambda b, g: jnp.where(first, g, momentum * b + (1.0 - dampening) * g).astype(b.dtype),
        state.momentum, updates)
    if nesterov:
      updates = jax.tree.map(lambda g, b: g + momentum * b, updates, buffer)
    else:
      updates = buffer
    return updates, DampedMomentumState(count=optax.safe_increment(state.count),
                                        momentum=buffer)

  return optax.GradientTransformation(init_fn, update_fn)


def create_optimizer(config: ml_collections.ConfigDict, params: Any,
                     learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """`train.optimizer` on the trainable leaves; frozen stages excluded.

  'sgd' is Hara's `torch.optim.SGD(lr, momentum, dampening, weight_decay,
  nesterov)`: PyTorch adds `weight_decay * p` to the gradient, then applies
  the damped momentum (buf = momentum * buf + (1 - dampening) * g, the first
  step undamped; p -= lr * buf): `add_decayed_weights`, `damped_momentum`,
  `scale_by_learning_rate`. As in Hara's main.py (`dampening = 0 if nesterov
  else opt.dampening`), nesterov uses dampening 0 whatever `train.dampening`
  says; momentum 0 is plain SGD (PyTorch keeps no buffer then). 'adamw' is
  `optax.adamw` (decoupled weight decay, Loshchilov & Hutter, ICLR 2019) with
  `weight_decay` as its decay; momentum and nesterov do not apply. Frozen
  leaves go to `set_to_zero`: no update, no decay, no optimizer state.
  """
  train = config.train
  if train.optimizer == 'adamw':
    update = optax.adamw(learning_rate_fn, weight_decay=float(train.weight_decay))
  else:
    momentum, nesterov = float(train.momentum), bool(train.nesterov)
    dampening = 0.0 if nesterov else float(train.dampening)
    update = optax.chain(
        optax.add_decayed_weights(float(train.weight_decay)),
        *([damped_momentum(momentum, dampening, nesterov)] if momentum else []),
        optax.scale_by_learning_rate(learning_rate_fn))
  labels = trainable_labels(params, train.freeze_until)
  if FROZEN not in jax.tree.leaves(labels):
    return update
  return optax.multi_transform({TRAINABLE: update, FROZEN: optax.set_to_zero()}, labels)
