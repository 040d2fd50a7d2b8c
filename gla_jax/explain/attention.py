"""Layer-wise gradient-weighted attention, global to local, in one compiled function.

`explain` runs the forward pass once, picks the target class (the argmax
unless given) and takes its score's gradient with respect to every selected
tapped activation (`jax.grad`, no second forward pass). Each layer's map is
up-sampled to the clip's T x H x W, normalised to [0, 1] and aggregated into
the global-local attention. Default map (`gradcam`, Selvaraju et al.):
w_k = mean over (t, h, w) of d(score)/dA_k, map = ReLU(sum_k w_k A_k),
trilinear up-sampling (`half_pixel`, PyTorch's `interpolate(mode='trilinear',
align_corners=False)`, or `receptive_field`), min-max normalisation
per clip (a constant map becomes zeros). Details: docs/design.md sections 1, 3.

The per-layer formulas and their references are in `cam_methods` and
`masked_cams`, the up-sampling in `upsampling`.

Reference:
  Yudistira, Kavitha, Kurita. "Weakly-Supervised Action Localization and Action
    Recognition using Global-Local Attention of 3D CNN", IJCV 2022.
"""
import functools
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import flax
import jax
import jax.numpy as jnp

from gla_jax import models
from gla_jax.explain.cam_methods import (MASKED_METHODS, METHODS, POOLINGS, canonical_method,
                                         layer_map)
from gla_jax.explain.masked_cams import masked_cam
from gla_jax.explain.upsampling import UPSAMPLINGS, upsample
AGGREGATES = ('mean', 'max', 'product', 'sum')
NORMALIZATIONS = ('minmax', 'tanh')
LAYER_SETS = ('stages', 'blocks')


@flax.struct.dataclass
class Explanation:
  """What `explain` returns; every map is float32 in [0, 1] at the clip's T x H x W.

  Attributes:
    attention: [B, T, H, W] the aggregated global-local map.
    layer_maps: {layer name: [B, T, H, W]} per-layer maps, global (deep) first.
    logits: [B, num_classes].
    target: [B] int32, the class explained.
    has_signal: [B] bool; False where every selected layer's map was constant
      (e.g. all gradients zero), so `attention` carries no information.
    gate_maps: {stage: [B, T, H, W]} the attention gates' own maps for a gated
      model (`models.ResNeXt3D(gated=True)`), up-sampled and min-max
      normalised like the CAMs; they need no backward pass. Empty otherwise.
    layer_names: the selected layers, global (deep) to local (shallow); the
      order of aggregation weights and of drawings (`layer_maps` is a dict
      whose order jit does not keep).
  """
  attention: jax.Array
  layer_maps: Dict[str, jax.Array]
  logits: jax.Array
  target: jax.Array
  has_signal: jax.Array
  gate_maps: Dict[str, jax.Array] = flax.struct.field(default_factory=dict)
  layer_names: Tuple[str, ...] = flax.struct.field(pytree_node=False, default=())


def minmax(maps: jax.Array) -> jax.Array:
  """Per-clip min-max normalisation of [B, ...] to [0, 1]; constant clips become 0."""
  axes = tuple(range(1, maps.ndim))
  low = jnp.min(maps, axis=axes, keepdims=True)
  span = jnp.max(maps, axis=axes, keepdims=True) - low
  scaled = (maps - low) / jnp.where(span > 0, span, 1.0)
  # XLA may recompute `maps` in the min and in the difference with another
  # summation order; the clip removes the resulting -1e-9s.
  return jnp.where(span > 0, jnp.clip(scaled, 0.0, 1.0), 0.0)


def normalize(maps: jax.Array, normalization: str = 'minmax', gamma: float = 2.0) -> jax.Array:
  """`minmax`, or LayerCAM's `tanh` scaling tanh(gamma * m / max m) before min-max.

  References:
    Jiang et al. 2021 (LayerCAM), section III-C: the tanh scaling lifts the
    weak but fine-grained maps of shallow layers before fusion.
  """
  if normalization == 'tanh':
    peak = jnp.max(maps, axis=tuple(range(1, maps.ndim)), keepdims=True)
    maps = jnp.tanh(gamma * maps / jnp.where(peak > 0, peak, 1.0))
  elif normalization != 'minmax':
    raise ValueError(f'Unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}.')
  return minmax(maps)


def aggregate_maps(maps: jax.Array, how: str = 'mean',
                   weights: Optional[Sequence[float]] = None) -> jax.Array:
  """Fuses normalised layer maps [L, B, T, H, W] into one map [B, T, H, W] in [0, 1].

  `mean` (optionally weighted by `weights`, one per layer), `max` (LayerCAM's
  fusion), `product` (where all layers agree), `sum`; the result is min-max
  normalised per clip again so every aggregate spans [0, 1].
  """
  if how == 'mean':
    if weights is None:
      fused = jnp.mean(maps, axis=0)
    else:
      w = jnp.asarray(weights, jnp.float32)
      fused = jnp.tensordot(w / jnp.sum(w), maps, axes=1)
  elif how == 'max':
    fused = jnp.max(maps, axis=0)
  elif how == 'product':
    fused = jnp.prod(maps, axis=0)
  elif how == 'sum':
    fused = jnp.sum(maps, axis=0)
  else:
    raise ValueError(f'Unknown aggregate {how!r}; choose one of {AGGREGATES}.')
  return minmax(fused)


# ----------------------------------------------------------------------------
# The compiled explanation.
# ----------------------------------------------------------------------------

def resolve_layers(model: models.ResNeXt3D, layers: Union[str, Sequence[str]]) -> Tuple[str, ...]:
  """Layer names for `stages`, `blocks` or an explicit list (checked against the taps)."""
  if isinstance(layers, str):
    if layers == 'stages':
      return models.stage_layer_names(model)
    if layers == 'blocks':
      return models.block_layer_names(model)
    layers = (layers,)
  layers = tuple(layers)
  unknown = [name for name in layers if name not in models.tap_names(model)]
  if unknown or not layers:
    raise ValueError(f'Unknown layers {unknown or layers!r}: use "stages", "blocks" or names '
                     f'from {models.tap_names(model)}.')
  return layers


def _check_options(method, pooling, aggregate, normalization, layers, weights,
                   upsampling='half_pixel'):
  for value, choices, what in ((method, METHODS, 'method'), (pooling, POOLINGS, 'pooling'),
                               (aggregate, AGGREGATES, 'aggregate'),
                               (normalization, NORMALIZATIONS, 'normalization'),
                               (upsampling, UPSAMPLINGS, 'upsampling')):
    if value not in choices:
      raise ValueError(f'Unknown {what} {value!r}; choose one of {choices}.')
  if weights is not None and len(weights) != len(layers):
    raise ValueError(f'{len(weights)} aggregation weights for {len(layers)} layers {layers}; '
                     'give one weight per layer.')


def tap_gradients(model: models.ResNeXt3D, variables: Dict[str, Any], video: jax.Array,
                  target: Optional[jax.Array] = None):
  """One forward and one backward pass: logits, target and every tap's value and gradient.

  The gradient of the target class score (the pre-softmax logit; the argmax
  class when `target` is None) with respect to each tapped activation is the
  gradient with respect to the zero perturbation added to it.

  Returns:
    (logits [B, K], target [B] int32, {tap: activation}, {tap: d score / d activation}).
    A gated model's gate maps are among the activations, as `gate_<stage>`
    ([B, t, h, w], no gradient).
  """
  variables = {k: variables[k] for k in ('params', 'batch_stats')}
  # Zero perturbations for every tap: flax requires all of them once the
  # collection is passed; gradients of taps nobody reads are dead code to XLA.
  shapes = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=['perturbations'])[1], variables, video)
  perturbations = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['perturbations'])

  def score_fn(perturbations):
    logits, state = model.apply(
        {**variables, 'perturbations': perturbations}, video, mutable=['intermediates'])
    chosen = jnp.argmax(logits, axis=-1) if target is None else target
    score = jnp.sum(jnp.take_along_axis(logits, chosen[:, None], axis=-1))
    # Taps sow a tuple; a gate sows its map inside its own scope.
    activations = {name: value[0] if isinstance(value, tuple) else value['attention'][0]
                   for name, value in state['intermediates'].items()}
    return score, (logits, chosen.astype(jnp.int32), activations)

  grads, (logits, chosen, activations) = jax.grad(score_fn, has_aux=True)(perturbations)
  return logits, chosen, activations, grads


@functools.lru_cache(maxsize=64)
def make_explainer(model: models.ResNeXt3D, method: str = 'gradcam',
                   layers: Union[str, Tuple[str, ...]] = 'stages', aggregate: str = 'mean',
                   pooling: str = 'global', normalization: str = 'minmax',
                   weights: Optional[Tuple[float, ...]] = None,
                   upsampling: str = 'half_pixel', chunk_size: int = 32):
  """The jitted `(variables, video, target) -> Explanation` for one set of options.

  Cached, so repeated calls with the same options and shapes compile once.
  `target` is a [B] int array or None (the argmax class). `chunk_size`: channels
  per batched forward of the masked methods (`masked_cams.masked_cam`).
  """
  method = canonical_method(method)
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f'chunk_size={chunk_size!r}: give a positive integer, the channels per '
                     'batched forward pass of scorecam/ablationcam (config.explain.chunk_size).')
  layers = resolve_layers(model, layers)
  _check_options(method, pooling, aggregate, normalization, layers, weights, upsampling)
  strides = models.tap_strides(model)

  def explain_fn(variables, video, target):
    logits, chosen, acts, grads = tap_gradients(model, variables, video, target)
    size = video.shape[1:4]

    def resize(maps, name):
      """Maps [B, t, h, w] of the tap (or gate) `name` at the clip's T x H x W."""
      return upsample(maps, size, upsampling, strides[name])

    raw = [resize(masked_cam(model, variables, video, chosen, acts[name], name, method,
                             lambda m: resize(m, name), chunk_size)
                  if method in MASKED_METHODS
                  else layer_map(acts[name], grads[name], method, pooling), name)
           for name in layers]
    has_signal = functools.reduce(
        jnp.logical_or, [jnp.max(m, axis=(1, 2, 3)) > jnp.min(m, axis=(1, 2, 3)) for m in raw])
    maps = [normalize(m, normalization) for m in raw]
    attention = aggregate_maps(jnp.stack(maps), aggregate, weights)
    gate_maps = {name[len('gate_'):]: minmax(resize(value, name))
                 for name, value in acts.items() if name.startswith('gate_')}
    return Explanation(attention=attention, layer_maps=dict(zip(layers, maps)),
                       logits=logits, target=chosen, has_signal=has_signal,
                       gate_maps=gate_maps, layer_names=layers)

  return jax.jit(explain_fn)


def explain(model: models.ResNeXt3D, variables: Dict[str, Any], video: jax.Array,
            method: str = 'gradcam', layers: Union[str, Sequence[str]] = 'stages',
            aggregate: str = 'mean', target: Optional[Any] = None, pooling: str = 'global',
            normalization: str = 'minmax',
            weights: Optional[Sequence[float]] = None,
            upsampling: str = 'half_pixel', chunk_size: int = 32) -> Explanation:
  """Explains a batch of clips with the global-local attention.

  Args:
    model: a `models.ResNeXt3D` (any preset, any dtype).
    variables: `{'params', 'batch_stats'}` (extra collections are ignored).
    video: [B, T, H, W, 3] float32 clips, normalised as the model expects. A
      batch sharded over a mesh (`parallel.shard_batch`) is explained data
      parallel with the same result.
    method: per-layer map, one of `METHODS` or an alias (`METHOD_ALIASES`); see
      `layer_map`, and `masked_cams` for `scorecam` / `ablationcam`.
    layers: `stages` (conv1, layer1..layer4), `blocks` (conv1 and every block)
      or a list of tap names (`models.tap_names`).
    aggregate: `mean` | `max` | `product` | `sum` (see `aggregate_maps`).
    target: [B] classes to explain; None explains the argmax of the logits.
    pooling: `global` or per-`time`-slice channel weights.
    normalization: `minmax` or LayerCAM's `tanh` scaling per layer.
    weights: optional per-layer weights for `aggregate='mean'`.
    upsampling: how a layer's cells are placed on the clip's voxels, one of
      `UPSAMPLINGS`: `half_pixel` (PyTorch's rule) or `receptive_field` (cell
      i at s * i, `models.tap_strides`); see `upsample`.
    chunk_size: channels per batched forward pass of `scorecam` and
      `ablationcam` (each runs B * chunk_size clips; see `masked_cams`).

  Returns:
    An `Explanation`.

  Raises:
    ValueError: clips of the wrong shape (no batch axis, not 3 channels, an
      empty axis), or variables that do not fit `model`; TypeError: clips that
      are not floating point (raw uint8 frames). Each message says the fix.
  """
  video = checked_inputs(video, variables)
  if target is not None:
    target = jnp.asarray(target, jnp.int32).reshape(video.shape[0])
  layers = layers if isinstance(layers, str) else tuple(layers)
  weights = None if weights is None else tuple(float(w) for w in weights)
  fn = make_explainer(model, canonical_method(method), layers, aggregate, pooling, normalization,
                      weights, upsampling, chunk_size)
  try:
    return fn(variables, video, target)
  except flax.errors.FlaxError as error:
    # Raised while tracing, before any compute: a missing or misshaped variable.
    raise ValueError(
        f'The variables do not fit the model ({model.__class__.__name__}, num_classes='
        f'{model.num_classes}): {str(error).splitlines()[0]} Load the weights written for this '
        'model, or set config.model (preset, num_classes, gated) to the checkpoint\'s.'
    ) from error


def checked_inputs(video: Any, variables: Dict[str, Any]) -> jax.Array:
  """`video` as a jax.Array once `check_clips` passes and `variables` has params and batch_stats."""
  video = jnp.asarray(video) if not isinstance(video, jax.Array) else video
  check_clips(video)
  missing = [c for c in ('params', 'batch_stats') if c not in variables]
  if missing:
    raise ValueError(f'variables lack {missing}: pass the {{"params", "batch_stats"}} dict of '
                     'a checkpoint (weights.for_config(...).variables or TrainState.variables).')
  return video


def check_clips(video: Any) -> None:
  """Raises ValueError or TypeError, saying the fix, unless `video` is [B, T, H, W, 3] float clips.

  Args:
    video: what `explain` (or the model) is about to be given.
  """
  shape = tuple(video.shape)
  if len(shape) == 4 and shape[-1] == 3:
    raise ValueError(f'Expected clips [B, T, H, W, 3], got one clip {shape}; add a batch axis '
                     'with video[None].')
  if len(shape) != 5:
    raise ValueError(f'Expected clips [B, T, H, W, 3], got shape {shape}; stack the clips '
                     'into one 5-D array.')
  if shape[-1] != 3:
    fix = {1: 'grayscale frames: repeat them to RGB with np.repeat(video, 3, axis=-1)',
           4: 'RGBA frames: drop the alpha channel with video[..., :3]'}.get(
               shape[-1], 'channels must be last (RGB): move them with np.moveaxis(video, 1, -1) '
               'for [B, 3, T, H, W]')
    raise ValueError(f'Expected 3 RGB channels last, got shape {shape} ({shape[-1]} channels); '
                     f'{fix}.')
  if min(shape[:4]) < 1:
    raise ValueError(f'Empty clips {shape}: batch, frames, height and width must all be >= 1; '
                     'a video shorter than a clip is loop-padded by '
                     'sampling.eval_frame_indices.')
  if not jnp.issubdtype(video.dtype, jnp.floating):
    raise TypeError(f'Clips must be floating point, normalised as in training ((x - data.mean) '
                    f'/ data.std); got {video.dtype}. Normalise uint8 clips (from the loader '
                    'or sampling.center_clip) with models.normalize_video(video, '
                    'config.data.mean, config.data.std).')
