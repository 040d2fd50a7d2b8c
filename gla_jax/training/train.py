"""Training: SGD with momentum on a sharded batch, resumable checkpoints, evaluation.

One `jax.jit` runs a training step: the batch is split over the `'data'` mesh
axis, the state (parameters, BatchNorm statistics, optimizer state, step, RNG)
is replicated and donated, and XLA inserts the gradient all-reduce; BatchNorm
statistics are computed over the global batch (see `gla_jax.parallel`). The
same program runs on one CPU, several accelerators, or several hosts (each
process reads its own rows of every global batch).

Optimizer (Hara et al.'s `torch.optim.SGD`): L2 weight decay added to the
gradient of every trainable parameter (`optax.add_decayed_weights` before the
momentum, like PyTorch's `weight_decay`), momentum (`dampening=0`), optional
Nesterov; learning rate: linear warm-up from 0, then cosine decay to 0, steps
(multiplied by `step_decay` at each of `step_boundaries`), or constant.

Fine-tuning (Hara's `ft_begin_index`): `train.init_checkpoint` gives the
starting weights, `train.drop_head` re-initialises the parameters whose shape
depends on the class count, and `train.freeze_until` freezes everything up to
and including a stage: `conv1` is the stem (conv1 + bn1), `layerK` also freezes
layer1..layerK. Frozen parameters get no update at all (no weight decay, no
momentum state), as with Hara's learning rate 0 for them. Hara's
`ft_begin_index=4` (train layer4 and fc, the UCF101 recipe) is
`freeze_until='layer3'`. Modules outside the backbone stages (the classifier,
attention gates) always train.

Frozen BatchNorm layers: Hara's training calls `model.train()` on the whole
network, so frozen stages still normalise with batch statistics and still
update their running averages. We do the same (the faithful choice): only
parameters are frozen, `batch_stats` keep moving everywhere.

Resuming: the state is checkpointed in `<workdir>/checkpoints`, and batch s of
the input pipeline is a function of (seed, s) only, so a restarted run picks up
the latest checkpoint and continues with the same batches, giving the same
parameters as an uninterrupted run (same seed and device count). A process
killed at any moment, SIGKILL and a kill inside a checkpoint write included,
restarts with the same command from the latest complete checkpoint (Orbax
renames a step's directory into place only once it is complete; see
`checkpoint`). A checkpoint written for another model (preset, class count,
or a config change that alters the state, such as `freeze_until`) is refused
with the differences listed rather than half-restored.

Stopping on request: SIGTERM (what schedulers send before preempting) makes
the loop save a checkpoint at the end of the current step and return
`{'interrupted': 'SIGTERM', ...}`; a second SIGTERM acts as it did before
(normally: terminate at once). Each process handles its own signal, so a
multi-host run relies on the scheduler signalling every process (as SLURM
and Kubernetes do) before the same step boundary; otherwise the processes
that did not stop wait in the next collective until they are killed, and
the restart resumes from the checkpoint all of them wrote before.

Non-finite steps: a step whose loss, trainable gradients or BatchNorm
statistics are not finite (NaN or inf) is not applied: inside the jitted step
the parameters, BatchNorm statistics and optimizer moments keep their old
values (`jnp.where`); the step count, the optimizer's schedule count and the
RNG advance, so the data position and the learning-rate schedule stay those of
an uninterrupted run. The metric `nonfinite` marks such steps; the host logs
each with its step and the `video_index` of its batch, summaries report
`train/nonfinite_steps` (loss and accuracy average the applied steps only), and
after `train.max_nonfinite_steps` CONSECUTIVE skipped steps the run stops with
`NonFiniteTrainingError` (consecutive, because a diverged model fails on every
batch, while isolated bad batches are survivable). The step that trips the
limit is never checkpointed; every checkpoint holds finite parameters.

Unreadable videos are skipped, replaced deterministically, counted and
limited by the input pipeline (`input_pipeline`, `data.max_bad_fraction`);
the counts of each epoch are logged and written to metrics.jsonl
(`data/skipped_examples`, `data/unreadable_videos`).

References:
  Hara, Kataoka, Satoh. "Can Spatiotemporal 3D CNNs Retrace the History of 2D
  CNNs and ImageNet?" CVPR 2018 (https://github.com/kenshohara/3D-ResNets-PyTorch).
  Loshchilov, Hutter. "SGDR: Stochastic Gradient Descent with Warm Restarts"
  (cosine schedule), ICLR 2017. Goyal et al. "Accurate, Large Minibatch SGD:
  Training ImageNet in 1 Hour" (linear warm-up), 2017.
"""
import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gla_jax.training import checkpoints
from gla_jax import config_checks
from gla_jax.training import evaluate
from gla_jax.models import gating
from gla_jax.data import input_pipeline
from gla_jax import models
from gla_jax import parallel
from gla_jax import validation
from gla_jax.outputs import reports

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('cosine', 'step', 'constant')
# freeze_until values in network order; index k freezes stem (0) .. stage k.
FREEZE_POINTS = ('conv1',) + models.STAGE_NAMES
_STEM_MODULES = ('stem_conv', 'stem_bn')
# Batch entries the training step reads (boxes and present stay on the host).
_TRAIN_KEYS = ('video', 'label', 'mask')

TRAINABLE, FROZEN = 'trainable', 'frozen'
# Config keys listed when a resumed checkpoint does not fit.
_MAX_LISTED_CHANGES = 10


class NonFiniteTrainingError(FloatingPointError):
  """`train.max_nonfinite_steps` consecutive steps had a non-finite loss or gradient."""


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


# ------------------------------------------------------------------------------
# Model, optimizer, initial state.
# ------------------------------------------------------------------------------


def create_model(config: ml_collections.ConfigDict) -> models.ResNeXt3D:
  """The `config.model` network.

  `preset` names a `models.PRESETS` entry, `dtype` the compute dtype; every
  other key of `config.model` is a `ResNeXt3D` attribute (`num_classes`, and
  e.g. `gated` where the config has it).
  """
  model_config = config.model
  if model_config.preset not in models.PRESETS:
    raise ValueError(f'Unknown model preset {model_config.preset!r} (config.model.preset); '
                     f'choose one of {sorted(models.PRESETS)}.')
  if model_config.dtype not in DTYPES:
    raise ValueError(f'Unknown config.model.dtype {model_config.dtype!r}; choose one of '
                     f'{sorted(DTYPES)} (parameters stay float32 either way).')
  kwargs = {key: value for key, value in model_config.items() if key not in ('preset', 'dtype')}
  # ConfigDict turns tuples into lists and nests dicts: give the module plain values.
  kwargs = {key: tuple(value) if isinstance(value, list) else value
            for key, value in kwargs.items()}
  return models.create(model_config.preset, dtype=DTYPES[model_config.dtype], **kwargs)


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


def _module_stage(module: str) -> Optional[int]:
  """0 for the stem, s for `layer{s}_{b}`, None for modules outside the backbone stages."""
  if module in _STEM_MODULES:
    return 0
  if module.startswith('layer') and '_' in module:
    stage = module[len('layer'):].split('_')[0]
    if stage.isdigit():
      return int(stage)
  return None


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
    stage = _module_stage(module)
    frozen = stage is not None and stage <= last_frozen
    labels[module] = jax.tree.map(lambda _, f=frozen: FROZEN if f else TRAINABLE, subtree)
  return labels


def create_optimizer(config: ml_collections.ConfigDict, params: Any,
                     learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """`train.optimizer` on the trainable leaves; frozen stages excluded.

  'sgd' is Hara's `torch.optim.SGD(lr, momentum, weight_decay, nesterov)`:
  PyTorch adds `weight_decay * p` to the gradient and then applies momentum
  (buf = momentum * buf + g; p -= lr * buf); `add_decayed_weights` followed by
  `optax.sgd` (trace with decay=momentum) is the same update. 'adamw' is
  `optax.adamw` (decoupled weight decay, Loshchilov & Hutter, ICLR 2019) with
  `weight_decay` as its decay; momentum and nesterov do not apply. Frozen
  leaves go to `set_to_zero`: no update, no decay, no optimizer state.
  """
  train = config.train
  if train.optimizer == 'adamw':
    update = optax.adamw(learning_rate_fn, weight_decay=float(train.weight_decay))
  else:
    update = optax.chain(
        optax.add_decayed_weights(float(train.weight_decay)),
        optax.sgd(learning_rate_fn, momentum=float(train.momentum) or None,
                  nesterov=bool(train.nesterov)))
  labels = trainable_labels(params, train.freeze_until)
  if FROZEN not in jax.tree.leaves(labels):
    return update
  return optax.multi_transform({TRAINABLE: update, FROZEN: optax.set_to_zero()}, labels)


def _flat(tree: Any) -> Dict[Tuple[str, ...], Any]:
  return traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _head_paths(model: models.ResNeXt3D) -> set:
  """Paths of the variables whose shape depends on the class count (the classifiers)."""
  def shapes(num_classes):
    abstract = jax.eval_shape(functools.partial(model.clone(num_classes=num_classes).init,
                                                train=False),
                              jax.random.key(0), jax.ShapeDtypeStruct((1, 1, 1, 1, 3), jnp.float32))
    return {path: leaf.shape for path, leaf in
            _flat({'params': abstract['params'], 'batch_stats': abstract['batch_stats']}).items()}
  a, b = shapes(model.num_classes), shapes(model.num_classes + 1)
  return {path for path in a if a[path] != b.get(path)}


def _read_init_variables(path: str, model: models.ResNeXt3D, drop_head: bool,
                         rng: jax.Array) -> Dict[str, Any]:
  """Variables of `train.init_checkpoint`: a .pth file, a variables checkpoint or a workdir."""
  if os.path.isfile(path):
    # Imported here: conversion pulls in PyTorch only when a .pth is given.
    from gla_jax.models import convert  # pylint: disable=g-import-not-at-top
    logging.info('Converting the PyTorch checkpoint %s on the fly.', path)
    return convert.torch_to_flax(convert.load_torch_checkpoint(path), model, drop_head, rng)
  if os.path.isfile(os.path.join(path, checkpoints.METADATA_FILE)):
    variables, _ = checkpoints.load_variables(path)
    return variables
  if checkpoints.has_training_checkpoints(path):
    variables, _ = checkpoints.load_training_variables(path)
    return variables
  raise FileNotFoundError(
      f'config.train.init_checkpoint={path!r} is neither a PyTorch .pth file, nor a '
      'variables checkpoint (a directory with metadata.json, e.g. <workdir>/converted written '
      'by `main.py --mode=convert`), nor a training workdir (with checkpoints/). Fix the path.')


def merge_init_variables(fresh: Dict[str, Any], loaded: Dict[str, Any],
                         head_paths: set, drop_head: bool, source: str) -> Dict[str, Any]:
  """`fresh` variables with every leaf that `loaded` provides, checked leaf by leaf.

  Args:
    fresh: freshly initialised `{'params', 'batch_stats'}` of the model.
    loaded: variables read from a checkpoint.
    head_paths: paths of the class-count-dependent leaves (`_head_paths`).
    drop_head: keep the fresh classifier (`head_paths`) instead of the loaded one.
    source: the checkpoint's path, for error messages.

  Backbone leaves must all be present with the model's shapes. Leaves outside
  the backbone that the checkpoint lacks (attention gates added to a plain
  backbone) stay fresh.
  """
  fresh_flat = _flat({c: fresh[c] for c in ('params', 'batch_stats')})
  loaded_flat = _flat({c: loaded[c] for c in ('params', 'batch_stats') if c in loaded})
  if drop_head:
    loaded_flat = {p: v for p, v in loaded_flat.items() if p not in head_paths}
  missing = [p for p in fresh_flat if p not in loaded_flat
             and not (drop_head and p in head_paths) and _module_stage(p[1]) is not None]
  missing += [p for p in head_paths if not drop_head and p not in loaded_flat]
  unexpected = [p for p in loaded_flat if p not in fresh_flat]
  misshaped = [p for p in loaded_flat if p in fresh_flat
               and np.shape(loaded_flat[p]) != np.shape(fresh_flat[p])]
  if missing or unexpected or misshaped:
    def listing(paths):
      names = sorted('/'.join(p) for p in paths)
      return ', '.join(names[:8]) + (f', ... and {len(names) - 8} more' if len(names) > 8 else '')
    lines = [f'config.train.init_checkpoint={source!r} does not fit the model:']
    if missing:
      lines.append(f'  {len(missing)} missing: {listing(missing)}')
    if unexpected:
      lines.append(f'  {len(unexpected)} unexpected: {listing(unexpected)}')
    if misshaped:
      lines.append(f'  {len(misshaped)} with another shape: ' + ', '.join(
          f'{"/".join(p)} {np.shape(loaded_flat[p])} vs {np.shape(fresh_flat[p])}'
          for p in misshaped[:8]))
    if misshaped and all(p in head_paths for p in misshaped):
      lines.append('Only the classifier differs: set config.train.drop_head=True to fine-tune '
                   'to the new class count.')
    else:
      lines.append('Check config.model (preset, num_classes, gating) against the checkpoint.')
    raise ValueError('\n'.join(lines))
  merged = {p: np.asarray(loaded_flat.get(p, v), np.float32) if p in loaded_flat else v
            for p, v in fresh_flat.items()}
  variables = traverse_util.unflatten_dict(merged)
  return {'params': variables['params'], 'batch_stats': variables['batch_stats']}


def clip_shape(config: ml_collections.ConfigDict, batch: int = 1) -> Tuple[int, ...]:
  size = int(config.data.crop_size)
  return (batch, int(config.data.num_frames), size, size, 3)


def initial_variables(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
                      rng: jax.Array) -> Dict[str, Any]:
  """Random `{'params', 'batch_stats'}`, or `train.init_checkpoint`'s (fine-tuning)."""
  init_rng, head_rng = jax.random.split(rng)
  variables = models.init_variables(model, init_rng, clip_shape(config))
  source = config.train.init_checkpoint
  if source:
    loaded = _read_init_variables(source, model, config.train.drop_head, head_rng)
    variables = merge_init_variables(variables, loaded, _head_paths(model),
                                     config.train.drop_head, source)
    logging.info('Initialised from %s (drop_head=%s).', source, config.train.drop_head)
  return variables


def _state_from_variables(variables: Dict[str, Any], tx: optax.GradientTransformation,
                          rng: jax.Array) -> TrainState:
  params = jax.tree.map(jnp.asarray, variables['params'])
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=jax.tree.map(jnp.asarray, variables['batch_stats']),
                    opt_state=tx.init(params), rng=jax.random.key_data(rng))


def create_train_state(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
                       rng: jax.Array, tx: Optional[optax.GradientTransformation] = None
                       ) -> TrainState:
  """The initial state: random weights, or `train.init_checkpoint`'s (fine-tuning).

  Args:
    config: the whole config (`train` section and clip size).
    model: the network (`create_model(config)`).
    rng: a PRNG key; the initial weights, the fresh head and the state's RNG
      are split from it.
    tx: the optimizer; by default `create_optimizer(config, ...)`.

  Returns:
    A `TrainState` at step 0 on the default device (place it with
    `parallel.replicate`).
  """
  variables_rng, state_rng = jax.random.split(rng)
  variables = initial_variables(config, model, variables_rng)
  if tx is None:
    tx = create_optimizer(config, variables['params'], create_learning_rate_fn(config))
  return _state_from_variables(variables, tx, state_rng)


def abstract_train_state(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
                         tx: optax.GradientTransformation) -> TrainState:
  """Shapes and dtypes of the state (`jax.ShapeDtypeStruct`s): no compute, no file read."""
  def init(rng):
    return _state_from_variables(
        models.init_variables(model, rng, clip_shape(config)), tx, rng)
  return jax.eval_shape(init, jax.random.key(0))


# ------------------------------------------------------------------------------
# The training step.
# ------------------------------------------------------------------------------


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the rows where `mask` is True."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  weights = mask.astype(jnp.float32)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def train_step(state: TrainState, batch: Dict[str, jax.Array], *, model: models.ResNeXt3D,
               tx: optax.GradientTransformation, learning_rate_fn: optax.Schedule,
               labels: Any) -> Tuple[TrainState, Dict[str, jax.Array]]:
  """One SGD step on the (global) batch; BatchNorm in training mode.

  A step whose loss, trainable gradients or new BatchNorm statistics are not
  finite is not applied (module docstring): parameters, statistics and the
  optimizer's float state keep their values, counters advance.

  Returns:
    The new state and scalar metrics: loss, accuracy, learning_rate (the one
    this step used), grad_norm (global L2 norm of the trainable parameters'
    gradients, before weight decay), nonfinite (1.0 where the update was
    skipped, else 0.0).
  """
  rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))

  def loss_fn(params):
    logits, updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, batch['video'], train=True,
        mutable=['batch_stats'], rngs={'dropout': step_rng})
    return cross_entropy(logits, batch['label'], batch['mask']), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  # Norm of the trainable gradients only: XLA then drops the frozen layers' backward pass.
  trainable = [g for g, label in zip(jax.tree.leaves(grads), jax.tree.leaves(labels))
               if label == TRAINABLE]
  grad_norm = optax.tree.norm(trainable)
  updates_tx, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates_tx)
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            & jnp.isfinite(optax.tree.norm(updates['batch_stats'])))
  mask = batch['mask'].astype(jnp.float32)
  correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
  metrics = {
      'loss': loss,
      'accuracy': jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1.0),
      'learning_rate': learning_rate_fn(state.step),
      'grad_norm': grad_norm,
      'nonfinite': 1.0 - finite.astype(jnp.float32),
  }
  new_state = state.replace(
      step=state.step + 1, params=_if_finite(finite, params, state.params),
      batch_stats=_if_finite(finite, updates['batch_stats'], state.batch_stats),
      opt_state=_if_finite(finite, opt_state, state.opt_state), rng=jax.random.key_data(rng))
  return new_state, metrics


def _if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
  """`new` where `finite`, else `old`, leaf by leaf; integer leaves (counters) always advance."""
  return jax.tree.map(
      lambda n, o: n if jnp.issubdtype(n.dtype, jnp.integer) else jnp.where(finite, n, o),
      new, old)


def make_train_step(model: models.ResNeXt3D, tx: optax.GradientTransformation,
                    learning_rate_fn: optax.Schedule, labels: Any,
                    mesh: jax.sharding.Mesh) -> Callable:
  """`train_step` compiled once: batch split over `'data'`, state replicated and donated."""
  replicated = parallel.replicated_sharding(mesh)
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn,
                        labels=labels),
      in_shardings=(replicated, parallel.data_sharding(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,))


# ------------------------------------------------------------------------------
# Validation.
# ------------------------------------------------------------------------------


def check_clip_shape(model: models.ResNeXt3D, num_frames: int, crop_size: int) -> Dict[str, Tuple]:
  """Feature map shapes of `model` on a T x S x S clip; raises if the clip cannot pass.

  The stem keeps T and halves H, W (stride (1, 2, 2)), the max pool (if the
  model has it) halves all three and layer2..layer4 halve all three again
  (time by `model.temporal_strides`): total strides 16 in time and 32 in
  space for Hara's network (8 and 16 without the max pool).
  With Hara's symmetric padding every stride-2 layer maps a size n to
  ceil(n / 2), so any clip with T, S >= 1 reaches layer4 with at least
  1 x 1 x 1. A clip shorter or smaller than the strides runs, but layer4's
  3 x 3 x 3 windows then read partly zero padding: this logs a warning. The
  shapes are traced with `jax.eval_shape` (no compute), so a model variant
  with other strides is checked as it is.

  Returns:
    `{tap name: (T, H, W)}` of the feature maps.
  """
  if num_frames < 1 or crop_size < 1:
    raise ValueError(f'Clip {num_frames}x{crop_size}x{crop_size} (data.num_frames x '
                     'data.crop_size^2): both must be >= 1.')
  # init leaves 'intermediates' (the sown taps) out unless every collection is mutable.
  abstract = jax.eval_shape(
      functools.partial(model.init, train=False, mutable=True), jax.random.key(0),
      jax.ShapeDtypeStruct((1, num_frames, crop_size, crop_size, 3), jnp.float32))
  shapes = {name: tuple(value[0].shape[1:4])
            for name, value in abstract.get('intermediates', {}).items()
            if name in models.STAGE_NAMES + ('conv1',)}
  last = shapes.get(models.STAGE_NAMES[len(model.stage_sizes) - 1])
  if last is not None and min(last) < 1:
    raise ValueError(f'The last stage has a {last} feature map on a {num_frames}x{crop_size}x'
                     f'{crop_size} clip; raise data.num_frames or data.crop_size.')
  num_stages = len(model.stage_sizes)
  pool = 2 if model.max_pool else 1
  frame_stride = pool * math.prod(model.temporal_strides[:num_stages])
  pixel_stride = 2 * pool * math.prod(models.STAGE_STRIDES[:num_stages])
  if num_frames < frame_stride or crop_size < pixel_stride:
    logging.warning('A %dx%dx%d clip is smaller than the network\'s strides (%d frames, %d '
                    'pixels): layer4 (%s) is computed partly from zero padding.',
                    num_frames, crop_size, crop_size, frame_stride, pixel_stride, last)
  return shapes


def validate_config(config: ml_collections.ConfigDict, num_devices: int,
                    process_count: int = 1) -> None:
  """Checks the model, data, train and eval sections before anything is built.

  Raises:
    TypeError: a value of the wrong type (None, True for a count, text for a
      number), naming `config.<section>.<key>`.
    ValueError: a value out of range, an unknown choice, or settings that
      cannot work together (batch not divisible by the devices, freezing
      without init_checkpoint, ...), naming the keys and the fix.
  """
  model, train, evaluation = config.model, config.train, config.eval
  config_checks.integer(model, 'model', 'num_classes', minimum=1)
  models.check_stem_kernel(
      config_checks.numbers_tuple(model, 'model', 'stem_kernel', length=3, minimum=1,
                                  integers=True), 'config.model.stem_kernel')
  config_checks.boolean(model, 'model', 'max_pool')
  config_checks.numbers_tuple(model, 'model', 'temporal_strides', length=len(models.STAGE_NAMES),
                              minimum=1, integers=True)   # One per stage of every preset.
  config_checks.choice(train, 'train', 'optimizer', OPTIMIZERS)
  config_checks.boolean(model, 'model', 'gated')
  config_checks.choice(model, 'model', 'gate_normalization', gating.NORMALIZATIONS)
  config_checks.choice(model, 'model', 'gate_head', gating.HEADS)
  create_model(config)   # Unknown preset or dtype.
  validation.validate_data(config.data)

  for key, minimum, hint in (('batch_size', 1, 'global, over all devices'),
                             ('num_steps', 1, ''), ('warmup_steps', 0, ''), ('seed', 0, ''),
                             ('log_every', 1, ''), ('eval_every', 0, '0 = only at the end'),
                             ('checkpoint_every', 0, '0 = only at the end'),
                             ('keep_checkpoints', 1,
                              'the latest checkpoint is what a restart resumes from'),
                             ('max_nonfinite_steps', 1, 'consecutive skipped steps that stop '
                              'the run')):
    config_checks.integer(train, 'train', key, minimum=minimum, hint=hint)
  config_checks.number(train, 'train', 'learning_rate', minimum=0)
  config_checks.number(train, 'train', 'step_decay', above=0)
  config_checks.number(train, 'train', 'momentum', minimum=0, maximum=1)
  config_checks.number(train, 'train', 'weight_decay', minimum=0)
  for key in ('nesterov', 'drop_head', 'tensorboard'):
    config_checks.boolean(train, 'train', key)
  config_checks.string(train, 'train', 'init_checkpoint')
  config_checks.choice(train, 'train', 'schedule', SCHEDULES)
  config_checks.choice(train, 'train', 'freeze_until', ('',) + FREEZE_POINTS)
  config_checks.choice(train, 'train', 'best_metric', evaluate.RANKING_METRICS)
  boundaries = config_checks.numbers_tuple(train, 'train', 'step_boundaries', integers=True)
  if (train.freeze_until or train.drop_head) and not train.init_checkpoint:
    raise ValueError('config.train.freeze_until / drop_head are fine-tuning options: set '
                     'config.train.init_checkpoint to the weights to start from (freezing '
                     'random weights is never what you want).')
  if train.warmup_steps > train.num_steps:
    raise ValueError(f'config.train.warmup_steps={train.warmup_steps}: must be in [0, '
                     f'num_steps={train.num_steps}].')
  if train.schedule == 'step' and (list(boundaries) != sorted(set(boundaries))
                                   or any(b <= train.warmup_steps for b in boundaries)):
    raise ValueError(f'config.train.step_boundaries={boundaries}: must increase and '
                     f'lie after warmup_steps={train.warmup_steps}.')

  config_checks.integer(evaluation, 'eval', 'batch_size', minimum=1)
  config_checks.integer(evaluation, 'eval', 'max_batches', minimum=0,
                        hint='0 = the whole split')
  config_checks.choice(evaluation, 'eval', 'split', input_pipeline.SPLITS)
  config_checks.choice(evaluation, 'eval', 'checkpoint', checkpoints.WHICH)
  config_checks.integer(config, '', 'num_devices', minimum=0,
                        hint='0 = every visible device')
  config_checks.boolean(config, '', 'distributed')

  for section in ('train', 'eval'):
    batch_size = int(config[section].batch_size)
    multiple = np.lcm(num_devices, process_count)
    if batch_size % multiple:
      raise ValueError(
          f'config.{section}.batch_size={batch_size} is not divisible by the {num_devices} '
          f'devices' + (f' and {process_count} processes' if process_count > 1 else '') +
          f'; use a multiple of {multiple} (e.g. {multiple * max(1, batch_size // multiple)}).')


# ------------------------------------------------------------------------------
# The loop.
# ------------------------------------------------------------------------------


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """`jax.distributed.initialize()` when `config.distributed` and not done yet.

  Must run before any JAX computation. Without arguments JAX reads the
  coordinator and process ids from the cluster (SLURM, Open MPI, TPU pods,
  Kubernetes); a launcher may also initialise it itself before calling us.
  """
  if config.distributed and not jax.distributed.is_initialized():
    jax.distributed.initialize()


def checkpoint_metadata(config: ml_collections.ConfigDict, step: int) -> Dict[str, Any]:
  """What a training checkpoint records besides the state (JSON)."""
  return {
      'step': int(step),
      'preset': config.model.preset,
      'num_classes': int(config.model.num_classes),
      'config': config.to_dict(),
  }


def _host_batch(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  return {key: batch[key] for key in _TRAIN_KEYS}


def _mean_metrics(history) -> Dict[str, float]:
  """Averages per-step metric dicts (device scalars) over the applied steps; counts the others.

  Returns:
    The mean of every metric over the steps whose update was applied (NaN when
    none was), and `nonfinite_steps`, the number of skipped ones.
  """
  stacked = jax.device_get(history)
  applied = [m for m in stacked if not m['nonfinite']]
  means = {key: float(np.mean([m[key] for m in applied])) if applied else float('nan')
           for key in stacked[0] if key != 'nonfinite'}
  means['nonfinite_steps'] = float(len(stacked) - len(applied))
  return means


class _StopRequest:
  """While entered, SIGTERM asks the loop to checkpoint and stop at the next step boundary.

  The handler only sets `received`; it also puts the previous handler back,
  so a second SIGTERM acts as before (the default: terminate at once). Signal
  handlers can only be installed in the main thread: elsewhere (a training
  run in a worker thread) this does nothing and SIGTERM keeps its handler.
  """

  def __init__(self):
    self.received: Optional[str] = None
    self._previous = None

  def _handle(self, signum, frame) -> None:
    del frame
    self.received = signal.Signals(signum).name
    signal.signal(signum, self._previous)

  def __enter__(self) -> '_StopRequest':
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _NonFiniteGuard:
  """Reports the steps whose update was skipped and stops a run that keeps producing them.

  Args:
    max_consecutive: `train.max_nonfinite_steps`.
    manager: the checkpoint manager, to name the last good checkpoint.
  """

  def __init__(self, max_consecutive: int, manager: checkpoints.TrainCheckpointManager):
    self.max_consecutive, self.manager = max_consecutive, manager
    self.total = 0
    self.consecutive = 0

  def check(self, step: int, metrics: Dict[str, jax.Array], video_index: np.ndarray) -> None:
    """Looks at step `step`'s metrics (waiting for them).

    Raises:
      NonFiniteTrainingError: the `max_consecutive`-th skipped step in a row.
    """
    if not float(metrics['nonfinite']):
      self.consecutive = 0
      return
    self.total += 1
    self.consecutive += 1
    loss, grad_norm = (float(v) for v in jax.device_get((metrics['loss'], metrics['grad_norm'])))
    logging.warning(
        'Step %d: non-finite loss (%g) or gradient (norm %g); the update was skipped, so the '
        'parameters, BatchNorm statistics and momentum stay those of step %d. Videos of this '
        "process's rows of the batch (video_index): %s. %d consecutive skipped step(s); the run "
        'stops at %d (config.train.max_nonfinite_steps).', step, loss, grad_norm, step - 1,
        np.asarray(video_index).tolist(), self.consecutive, self.max_consecutive)
    if self.consecutive < self.max_consecutive:
      return
    self.manager.wait_until_finished()
    latest = self.manager.latest_step()
    kept = (f'The latest checkpoint, step {latest} in {self.manager.directory}, holds the last '
            'finite parameters; a restart resumes from it.' if latest is not None
            else 'No checkpoint was written before.')
    raise NonFiniteTrainingError(
        f'{self.consecutive} consecutive training steps ({step - self.consecutive + 1} to '
        f'{step}) had a non-finite loss or gradient (config.train.max_nonfinite_steps='
        f'{self.max_consecutive}); stopping without saving. {kept} To fix: lower '
        'config.train.learning_rate or add config.train.warmup_steps; use '
        "config.model.dtype='float32' if it is bfloat16; check the videos of the failing "
        'batches (logged above with their video_index) for corrupt frames.')


def _config_changes(saved: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
  """'model.gated: False -> True'-style lines for the model and train keys that differ."""
  def flat(tree, prefix=''):
    out = {}
    for key, value in tree.items():
      if isinstance(value, dict):
        out.update(flat(value, f'{prefix}{key}.'))
      else:
        out[f'{prefix}{key}'] = value
    return out
  # Through JSON, as the saved config was: tuples become lists on both sides.
  saved_flat = flat({k: v for k, v in saved.items() if k in ('model', 'train')})
  current_flat = flat(json.loads(json.dumps(
      {k: v for k, v in current.items() if k in ('model', 'train')})))
  return [f'{key}: {saved_flat.get(key, "(absent)")!r} -> {current_flat.get(key, "(absent)")!r}'
          for key in sorted(set(saved_flat) | set(current_flat))
          if saved_flat.get(key) != current_flat.get(key)]


def _restore_state(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
                   tx: optax.GradientTransformation, manager: checkpoints.TrainCheckpointManager,
                   step: int, sharding: jax.sharding.Sharding) -> TrainState:
  """The state checkpointed at `step`, after checking it was written for this model.

  Raises:
    ValueError: the checkpoint is of another preset or class count, or its
      state does not fit this config's model and optimizer (the changed config
      keys are listed), or it cannot be read.
  """
  metadata = manager.metadata(step)
  saved = (metadata.get('preset'), metadata.get('num_classes'))
  wanted = (config.model.preset, int(config.model.num_classes))
  if saved != wanted:
    raise ValueError(
        f'{manager.directory} holds checkpoints of a {saved[0]!r} model with {saved[1]} classes '
        f'(step {step}), but config.model asks for {wanted[0]!r} with {wanted[1]} classes. '
        'Resume with the config the run started with, or train this config in a new '
        '--workdir (to start from those weights, set config.train.init_checkpoint to this '
        'workdir' + (', with drop_head=True' if saved[0] == wanted[0] else '') + ').')
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          abstract_train_state(config, model, tx))
  try:
    state, _ = manager.restore(abstract, step)
  except Exception as error:  # pylint: disable=broad-except
    # Orbax raises several types for a tree or shape that does not fit.
    changes = _config_changes(metadata.get('config', {}), config.to_dict())
    listed = '; '.join(changes[:_MAX_LISTED_CHANGES]) + (
        f'; ... and {len(changes) - _MAX_LISTED_CHANGES} more' if
        len(changes) > _MAX_LISTED_CHANGES else '')
    where = os.path.join(manager.directory, str(step))
    first_line = str(error).strip().split('\n')[0][:300]
    raise ValueError(
        f'Cannot resume from {where} ({type(error).__name__}: {first_line}). '
        + (f'The config differs from the checkpoint\'s: {listed}. Resume with the config the '
           'run started with, or use a new --workdir.' if changes else
           f'The config is the checkpoint\'s, so the files may be damaged: delete {where} to '
           'resume from the previous checkpoint.')) from error
  return state


def resolve_init_checkpoint(config: ml_collections.ConfigDict,
                            workdir: str) -> ml_collections.ConfigDict:
  """`config` with a relative `train.init_checkpoint` found in `workdir` made absolute.

  So `init_checkpoint='converted'` means `<workdir>/converted`, where
  `--mode=convert` writes; a relative path that is not in the workdir is left
  to the working directory. Returns a copy; `config` is not changed.
  """
  source = config.train.init_checkpoint
  if not source or os.path.isabs(source) or not os.path.exists(os.path.join(workdir, source)):
    return config
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.train.init_checkpoint = os.path.join(workdir, source)
  resolved.lock()
  return resolved


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir`, evaluating and checkpointing on the way; resumes.

  Writes `<workdir>/checkpoints` (the last `keep_checkpoints` and the best by
  `train.best_metric`), `metrics.jsonl`, `eval_<split>.json`, `curves.png` and
  TensorBoard events (see `reporting`). Restarting the same command continues
  from the latest checkpoint (optimizer state, step, RNG and data position
  included); `init_checkpoint` is read only when the workdir has none.

  Returns:
    The final metrics: `step`, `train/*` (averaged over the last log
    interval), `eval/*` (the final evaluation), `best/*` (the best evaluation
    and its step) and `nonfinite_steps` (skipped steps of this process's run).
    After SIGTERM: `interrupted` ('SIGTERM') and no final evaluation; the
    checkpoint of the last step is saved.

  Raises:
    NonFiniteTrainingError: `train.max_nonfinite_steps` consecutive skipped steps.
    input_pipeline.BadDataError: more unreadable videos than
      `data.max_bad_fraction` tolerates.
  """
  initialize_distributed(config)
  workdir = os.path.abspath(workdir)
  config = resolve_init_checkpoint(config, workdir)
  mesh = parallel.make_mesh(config.num_devices or None)
  validate_config(config, mesh.devices.size, jax.process_count())
  model = create_model(config)
  check_clip_shape(model, int(config.data.num_frames), int(config.data.crop_size))
  evaluate.check_num_classes(config)
  is_main = jax.process_index() == 0

  learning_rate_fn = create_learning_rate_fn(config)
  rng = jax.random.key(int(config.train.seed))
  manager = checkpoints.TrainCheckpointManager(
      os.path.join(workdir, checkpoints.CHECKPOINTS_DIR), keep=int(config.train.keep_checkpoints),
      best_metric=config.train.best_metric)
  try:
    with _StopRequest() as stop:
      final = _train_loop(config, workdir, mesh, model, learning_rate_fn, rng, manager, is_main,
                          stop)
  finally:
    manager.close()
  if stop.received:
    logging.warning('Stopped by %s after step %d; its checkpoint is saved in %s. Run the same '
                    'command again to resume.', stop.received, final['step'], manager.directory)
  return final


def _train_loop(config, workdir, mesh, model, learning_rate_fn, rng, manager, is_main, stop):
  """The body of `train_and_evaluate` (the manager is closed by the caller)."""
  train, num_steps = config.train, int(config.train.num_steps)
  params_shapes = jax.eval_shape(
      functools.partial(models.init_variables, model, clip_shape=clip_shape(config)),
      jax.random.key(0))['params']
  labels = trainable_labels(params_shapes, train.freeze_until)
  tx = create_optimizer(config, params_shapes, learning_rate_fn)
  latest = manager.latest_step()
  if latest is None:
    state = parallel.replicate(create_train_state(config, model, rng, tx), mesh)
    start_step = 0
  else:
    state = _restore_state(config, model, tx, manager, latest,
                           parallel.replicated_sharding(mesh))
    start_step = int(jax.device_get(state.step))
    logging.info('Resuming from %s at step %d.', manager.directory, start_step)

  step_fn = make_train_step(model, tx, learning_rate_fn, labels, mesh)
  evaluator = evaluate.Evaluator(config, model, mesh, split=config.eval.split)
  reporter = reports.Reporter(
      workdir, total_steps=num_steps, start_step=start_step,
      clips_per_step=int(train.batch_size), tensorboard=bool(train.tensorboard),
      enabled=is_main)
  best = _best_so_far(manager, train.best_metric)
  final: Dict[str, Any] = {'step': start_step}
  eval_result = None
  health = input_pipeline.DataHealth('train', config.data.max_bad_fraction)
  batches = input_pipeline.train_batches(
      config.data, int(train.batch_size), int(train.seed), start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count(), health=health)
  guard = _NonFiniteGuard(int(train.max_nonfinite_steps), manager)
  try:
    history, unchecked = [], None
    interval_start, interval_step = time.perf_counter(), start_step
    for step in range(start_step, num_steps):
      host_batch = next(batches)
      state, metrics = step_fn(state, parallel.shard_batch(_host_batch(host_batch), mesh))
      done = step + 1
      # One step in flight at most: checking the previous step waits for it,
      # so the progress bar measures compute, not dispatch, and host batches
      # do not pile up in memory.
      if unchecked is not None:
        guard.check(*unchecked)
      unchecked = (done, metrics, host_batch['video_index'])
      history.append(metrics)
      reporter.tick(done)
      for report in health.pop_epoch_reports():
        reporter.write(done, report)
      last = done == num_steps
      logged = done % train.log_every == 0 or last
      evaluated = bool(train.eval_every and done % train.eval_every == 0) or last
      if logged or evaluated:
        # This step's results leave the device: check it first.
        guard.check(*unchecked)
        unchecked = None
      if logged:
        elapsed = time.perf_counter() - interval_start
        summary = {f'train/{k}': v for k, v in _mean_metrics(history).items()}
        summary['train/steps_per_second'] = (done - interval_step) / max(elapsed, 1e-9)
        summary['train/clips_per_second'] = summary['train/steps_per_second'] * train.batch_size
        reporter.write(done, summary)
        final.update(summary)
        history, interval_start, interval_step = [], time.perf_counter(), done
      if evaluated:
        eval_result = evaluator(state.variables, step=done)
        scalars = evaluate.scalar_metrics(eval_result)
        reporter.write(done, {f'eval/{k}': v for k, v in scalars.items()})
        if is_main:
          evaluate.write_results(workdir, config.eval.split, eval_result, evaluator.class_names,
                                 step=done)
        if best is None or scalars[train.best_metric] > best[1]:
          best = (done, scalars[train.best_metric])
      stopping = stop.received is not None
      if evaluated or stopping or (train.checkpoint_every and done % train.checkpoint_every == 0):
        if unchecked is not None:
          # The step that trips max_nonfinite_steps is never saved.
          guard.check(*unchecked)
          unchecked = None
        manager.save(done, state, checkpoint_metadata(config, done),
                     metrics=evaluate.scalar_metrics(eval_result) if evaluated else None)
      final['step'] = done
      if stopping:
        break
    if eval_result is None and stop.received is None:
      # Nothing left to train (a finished run restarted): report its final evaluation.
      eval_result = evaluator(state.variables, step=start_step)
      if best is None:
        best = (start_step, evaluate.scalar_metrics(eval_result)[train.best_metric])
  finally:
    batches.close()
    manager.wait_until_finished()
    reporter.close()
  final['nonfinite_steps'] = guard.total
  if stop.received is not None:
    final['interrupted'] = stop.received
    return final
  final.update({f'eval/{k}': v for k, v in evaluate.scalar_metrics(eval_result).items()})
  if best is not None:
    final['best/step'], final[f'best/{train.best_metric}'] = best
  return final


def _best_so_far(manager: 'checkpoints.TrainCheckpointManager',
                 metric: str) -> Optional[Tuple[int, float]]:
  step = manager.best_step()
  if step is None:
    return None
  metrics = manager.metrics(step)
  return (step, float(metrics[metric])) if metrics and metric in metrics else None
