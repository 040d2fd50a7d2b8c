"""The training state: what a step changes, and where its first values come from.

`TrainState` holds the parameters, BatchNorm statistics, optimizer state, step
and RNG (checkpointed as a whole). `create_train_state` starts it from random
weights or from `train.init_checkpoint` (fine-tuning, Hara et al.'s recipe),
read and fitted to the model by `gla_jax.weights`.

References:
  Hara, Kataoka, Satoh. "Can Spatiotemporal 3D CNNs Retrace the History of 2D
  CNNs and ImageNet?" CVPR 2018 (https://github.com/kenshohara/3D-ResNets-PyTorch).
"""
from typing import Any, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gla_jax import models
from gla_jax import weights
from gla_jax.models import building
from gla_jax.training import optimization


@flax.struct.dataclass
class TrainState:
  """Everything a training step changes; a pytree, checkpointed as a whole.

  Attributes:
    step: int32 scalar, the number of steps taken (= the next batch's index).
    params: float32 parameters.
    batch_stats: BatchNorm running averages.
    opt_state: optax state (momentum of the trainable parameters, schedule count).
    rng: uint32 [2] raw key data, split once per step for stochastic layers
      (raw data rather than a typed key so checkpoints hold plain arrays).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array

  @property
  def variables(self) -> Dict[str, Any]:
    """`{'params', 'batch_stats'}`, what `model.apply` and `evaluate` take."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


def _state_from_variables(variables: Dict[str, Any], tx: optax.GradientTransformation,
                          rng: jax.Array) -> TrainState:
  params = jax.tree.map(jnp.asarray, variables['params'])
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=jax.tree.map(jnp.asarray, variables['batch_stats']),
                    opt_state=tx.init(params), rng=jax.random.key_data(rng))


def create_train_state(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
                       rng: jax.Array, tx: Optional[optax.GradientTransformation] = None,
                       workdir: Optional[str] = None) -> TrainState:
  """The initial state: random weights, or `train.init_checkpoint`'s (fine-tuning).

  Args:
    config: the whole config (`train` section and clip size).
    model: the network (`building.create_model(config)`).
    rng: a PRNG key; the initial weights, the fresh head and the state's RNG
      are split from it.
    tx: the optimizer; by default `optimization.create_optimizer(config, ...)`.
    workdir: where a relative `train.init_checkpoint` is looked up first
      (`weights.init_checkpoint_path`).

  Returns:
    A `TrainState` at step 0 on the default device (place it with
    `parallel.replicate`).
  """
  variables_rng, state_rng = jax.random.split(rng)
  variables = weights.initial_variables(config, model, variables_rng, workdir)
  if tx is None:
    tx = optimization.create_optimizer(config, variables['params'],
                                       optimization.create_learning_rate_fn(config))
  return _state_from_variables(variables, tx, state_rng)


def abstract_train_state(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
                         tx: optax.GradientTransformation) -> TrainState:
  """Shapes and dtypes of the state (`jax.ShapeDtypeStruct`s): no compute, no file read."""
  def init(rng):
    return _state_from_variables(
        models.init_variables(model, rng, building.clip_shape(config)), tx, rng)
  return jax.eval_shape(init, jax.random.key(0))
