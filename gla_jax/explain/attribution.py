"""Input attributions: saliency, integrated gradients, SmoothGrad and occlusion, compiled.

Each method scores the pre-softmax logit of the target class (the argmax of
the logits unless given, as `explain.explain`) and gives every input voxel and
channel a value. All gradient steps, noise samples or occlusion windows of a
batch run in one jitted call: they are taken `chunk_size` at a time (a
`jax.lax.fori_loop` over chunks, each chunk one batched forward, plus backward
for the gradient methods, over B x chunk_size clips), with the sum carried
between chunks, so memory is bounded by the chunk whatever `steps`, `samples`
or the number of windows. Values agree with captum 0.9.0 (tests/explain/
test_attribution.py); the one deliberate difference is integrated gradients'
trapezoid weights (see `attribute`).

References:
  Simonyan, Vedaldi, Zisserman. "Deep Inside Convolutional Networks:
    Visualising Image Classification Models and Saliency Maps", ICLR-W 2014.
  Sundararajan, Taly, Yan. "Axiomatic Attribution for Deep Networks", ICML 2017.
  Smilkov et al. "SmoothGrad: removing noise by adding noise", arXiv 1706.03825, 2017.
  Zeiler, Fergus. "Visualizing and Understanding Convolutional Networks", ECCV 2014.
"""
import functools
import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import flax
import jax
import jax.numpy as jnp
import numpy as np

from gla_jax import models
from gla_jax.explain.attention import checked_inputs, minmax

ATTRIBUTION_METHODS = ('saliency', 'integrated_gradients', 'smoothgrad', 'occlusion')
Triple = Tuple[int, int, int]


@flax.struct.dataclass
class Attribution:
  """What `attribute` returns.

  Attributes:
    values: [B, T, H, W, 3] float32, the attribution of every input value (the
      input's shape; occlusion gives the three channels of a voxel one value).
    map: [B, T, H, W] float32 in [0, 1]: the sum over channels of |values|,
      min-max normalised per clip (a constant map becomes zeros), to draw or
      localize like the CAMs.
    logits: [B, num_classes] at the clips.
    target: [B] int32, the class explained.
    method: the method's name.
  """
  values: jax.Array
  map: jax.Array
  logits: jax.Array
  target: jax.Array
  method: str = flax.struct.field(pytree_node=False, default='')


def _scores(model, variables, clips, target):
  """Target logits [B, n] of clips [B, n, T, H, W, 3] (batch-major, so a sharded B stays split)."""
  flat = clips.reshape((-1,) + clips.shape[2:])
  logits = model.apply(variables, flat).reshape(clips.shape[:2] + (-1,))
  return jnp.take_along_axis(logits, target[:, None, None], axis=-1)[..., 0]


def _input_gradients(model, variables, clips, target):
  """d(target logit)/d(clip) [B, n, T, H, W, 3] of each of clips [B, n, T, H, W, 3]."""
  return jax.grad(lambda c: jnp.sum(_scores(model, variables, c, target)))(clips)


def _chunked_sum(contribution, num_items, chunk: int, init):
  """sum over chunks c of contribution(c, start, valid [chunk] bool), one loop over the chunks.

  `num_items` may be traced (integrated gradients' steps): the loop is then a
  while loop and one program serves every count.
  """
  def body(c, total):
    start = c * chunk
    valid = start + jnp.arange(chunk) < num_items
    return total + contribution(c, start, valid)

  return jax.lax.fori_loop(0, (num_items + chunk - 1) // chunk, body, init)


def occlusion_windows(size: Triple, patch: Triple, stride: Triple) -> np.ndarray:
  """Window starts [N, 3] over (T, H, W), as captum's Occlusion places them.

  Per axis ceil((size - patch) / stride) + 1 starts at multiples of the
  stride; the last window may run past the border and is cut there. Time
  varies slowest (row-major over the three axes).
  """
  starts = [np.arange(math.ceil((d - p) / s) + 1) * s for d, p, s in zip(size, patch, stride)]
  return np.stack(np.meshgrid(*starts, indexing='ij'), axis=-1).reshape(-1, 3)


def _window_masks(starts, patch, size):
  """bool [n, T, H, W]: True inside each window starting at starts [n, 3]."""
  inside = [(jnp.arange(d)[None, :] >= starts[:, a, None])
            & (jnp.arange(d)[None, :] < starts[:, a, None] + p)
            for a, (d, p) in enumerate(zip(size, patch))]
  return inside[0][:, :, None, None] & inside[1][:, None, :, None] & inside[2][:, None, None, :]


def _coverage(starts: np.ndarray, patch: Triple, size: Triple) -> np.ndarray:
  """float32 [T, H, W]: how many windows starting at starts [N, 3] cover each voxel."""
  count = np.zeros(size, np.float32)
  for t, h, w in starts:
    count[t:t + patch[0], h:h + patch[1], w:w + patch[2]] += 1
  return count


@functools.lru_cache(maxsize=64)
def make_attributor(model: models.ResNeXt3D, method: str = 'integrated_gradients',
                    samples: int = 16, patch: Optional[Triple] = None,
                    stride: Optional[Triple] = None, chunk_size: int = 8):
  """The jitted `(variables, video, target, baseline, steps, noise_std, rng, noise)` -> Attribution.

  Cached per model and options (arguments `attribute` has checked), so
  repeated calls with the same shapes compile once; integrated gradients'
  `steps` is an argument (an int32 scalar), so any number of steps runs the
  same program. `target` and `noise` may be None (the argmax class; noise
  drawn from `rng`).
  """

  def attribute_fn(variables, video, target, baseline, steps, noise_std, rng, noise):
    variables = {k: variables[k] for k in ('params', 'batch_stats')}
    video = video.astype(jnp.float32)
    logits = model.apply(variables, video)
    chosen = (jnp.argmax(logits, axis=-1) if target is None else target).astype(jnp.int32)
    batch, size = video.shape[0], video.shape[1:4]
    baseline = jnp.broadcast_to(baseline, video.shape)
    grads_of = functools.partial(_input_gradients, model, variables, target=chosen)
    zeros = jnp.zeros_like(video)
    if method == 'saliency':
      values = jnp.abs(grads_of(video[:, None])[:, 0])
    elif method == 'integrated_gradients':
      delta, last = video - baseline, steps - 1

      def ig_chunk(c, start, valid):
        i = start + jnp.arange(chunk_size)
        # Points i / (steps - 1) of [0, 1]; the trapezoid rule's weights, ends halved.
        a = jnp.minimum(i, last).astype(jnp.float32) / last
        w = jnp.where(valid, jnp.where((i == 0) | (i == last), 0.5, 1.0) / last, 0.0)
        path = baseline[:, None] + a[None, :, None, None, None, None] * delta[:, None]
        return jnp.einsum('bnthwc,n->bthwc', grads_of(path), w)

      values = delta * _chunked_sum(ig_chunk, steps, chunk_size, zeros)
    elif method == 'smoothgrad':
      chunk = min(chunk_size, samples)
      spread = jnp.max(video, axis=(1, 2, 3, 4)) - jnp.min(video, axis=(1, 2, 3, 4))
      sigma = (noise_std * spread)[:, None, None, None, None, None]
      if noise is not None:
        noise = jnp.pad(noise.astype(jnp.float32),
                        ((0, 0), (0, -samples % chunk)) + ((0, 0),) * 4)

      def smooth_chunk(c, start, valid):
        if noise is None:
          z = jax.random.normal(jax.random.fold_in(rng, c), (batch, chunk) + video.shape[1:])
        else:
          z = jax.lax.dynamic_slice_in_dim(noise, start, chunk, axis=1)
        g = jnp.abs(grads_of(video[:, None] + sigma * z))
        return jnp.einsum('bnthwc,n->bthwc', g, valid / samples)

      values = _chunked_sum(smooth_chunk, samples, chunk, zeros)
    elif method == 'occlusion':
      starts = occlusion_windows(size, patch, stride)
      num_windows = len(starts)
      covered = _coverage(starts, patch, size)
      chunk = min(chunk_size, num_windows)
      starts = jnp.asarray(np.pad(starts, ((0, -num_windows % chunk), (0, 0))), jnp.int32)
      score = jnp.take_along_axis(logits, chosen[:, None], axis=-1)

      def occlusion_chunk(c, start, valid):
        masks = _window_masks(jax.lax.dynamic_slice_in_dim(starts, start, chunk), patch, size)
        occluded = jnp.where(masks[None, ..., None], baseline[:, None], video[:, None])
        drop = (score - _scores(model, variables, occluded, chosen)) * valid
        return jnp.einsum('bn,nthw->bthw', drop, masks.astype(jnp.float32))

      total = _chunked_sum(occlusion_chunk, num_windows, chunk, zeros[..., 0])
      values = jnp.broadcast_to((total / covered)[..., None], video.shape)
    else:
      raise ValueError(f'Unknown attribution method {method!r}; choose one of '
                       f'{ATTRIBUTION_METHODS}.')
    return Attribution(values=values, map=minmax(jnp.sum(jnp.abs(values), axis=-1)),
                       logits=logits, target=chosen, method=method)

  return jax.jit(attribute_fn)


def _triple(value: Union[int, Sequence[int]], what: str) -> Triple:
  values = (value,) * 3 if isinstance(value, (int, np.integer)) else tuple(value)
  if len(values) != 3 or not all(isinstance(v, (int, np.integer)) for v in values):
    raise ValueError(f'{what}={value!r}: give three integers (t, h, w) or one for all axes.')
  return tuple(int(v) for v in values)


def check_window(patch, stride, size) -> Tuple[Triple, Triple]:
  """Checks the occlusion window against the clip size (T, H, W); returns (patch, stride)."""
  patch = _triple(patch, 'patch')
  stride = patch if stride is None else _triple(stride, 'stride')
  if min(patch) < 1:
    raise ValueError(f'patch={patch}: every side must be >= 1 voxel.')
  if any(p > d for p, d in zip(patch, size)):
    raise ValueError(f'patch={patch} is larger than the clip (T, H, W)={tuple(size)}; use a '
                     'patch no larger than the clip on every axis.')
  if min(stride) < 1:
    raise ValueError(f'stride={stride}: every step must be >= 1 voxel.')
  if any(s > p and p < d for s, p, d in zip(stride, patch, size)):
    raise ValueError(f'stride={stride} is larger than patch={patch} on an axis the patch does '
                     'not cover whole: voxels between windows would get no value; use '
                     'stride <= patch.')
  return patch, stride


def _check_counts(method, steps, samples, chunk_size, noise_std):
  if method == 'integrated_gradients' and (not isinstance(steps, (int, np.integer))
                                           or steps < 2):
    raise ValueError(f'steps={steps!r}: integrated_gradients needs an integer steps >= 2 (the '
                     'trapezoid rule takes both ends of the path); 32 or more is usual.')
  if method == 'smoothgrad':
    if not isinstance(samples, (int, np.integer)) or samples < 1:
      raise ValueError(f'samples={samples!r}: smoothgrad needs an integer samples >= 1.')
    if not noise_std >= 0:
      raise ValueError(f'noise_std={noise_std!r}: must be >= 0 (a fraction of each clip\'s '
                       'max - min; 0.1 to 0.2 is usual).')
  if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f'chunk_size={chunk_size!r}: must be an integer >= 1 (clips per batch '
                     'element in one forward pass).')


def attribute(model: models.ResNeXt3D, variables: Dict[str, Any], video: Any,
              method: str = 'integrated_gradients', target: Optional[Any] = None,
              steps: int = 32, baseline: Any = None, samples: int = 16,
              noise_std: float = 0.15, rng: Optional[jax.Array] = None,
              noise: Optional[Any] = None, patch: Union[int, Sequence[int]] = (2, 16, 16),
              stride: Optional[Union[int, Sequence[int]]] = None,
              chunk_size: int = 8) -> Attribution:
  """Attributes the target class score of each clip to its input voxels.

  Args:
    model: a `models.ResNeXt3D` (any preset, any dtype).
    variables: `{'params', 'batch_stats'}` (extra collections are ignored).
    video: [B, T, H, W, 3] float clips, normalised as the model expects. A
      batch sharded over a mesh (`parallel.shard_batch`, variables
      `parallel.replicate`) is attributed data parallel with the same values.
    method: `saliency` |d score / d x| (captum `Saliency(abs=True)`);
      `integrated_gradients` (x - x0) * sum_i w_i d score / d x at
      x0 + alpha_i (x - x0), alpha_i = i / (steps - 1), with the trapezoid
      rule's weights w = (1/2, 1, ..., 1, 1/2) / (steps - 1), summing to 1.
      captum's `riemann_trapezoid` weighs the same points by
      (1/2, 1, ..., 1, 1/2) / steps (sum (steps - 1) / steps), so its values
      are ours times (steps - 1) / steps; ours are complete (sum of values =
      score(x) - score(x0)) for a linear model at any steps;
      `smoothgrad` the mean over `samples` of |d score / d x| at
      x + sigma z, z ~ N(0, 1), sigma = noise_std * (max x - min x) of that
      clip (Smilkov et al.'s noise level), captum's `NoiseTunnel(Saliency)`
      with `nt_type='smoothgrad', stdevs=sigma`;
      `occlusion` a `patch` (t, h, w) of every channel slid by `stride` and
      set to `baseline`: each voxel gets the mean over the windows covering it
      of score(x) - score(occluded x), captum's `Occlusion` with
      `sliding_window_shapes=(3, t, h, w)`, `strides=(3, *stride)` in NCDHW.
    target: [B] classes to explain; None explains the argmax of the logits.
    steps: points on the integration path (integrated_gradients), >= 2.
    baseline: x0 of integrated_gradients and the occluding value of
      occlusion: None (zeros: the dataset's mean colour for normalised clips),
      a number or an array broadcastable to the clips.
    samples: noisy copies per clip (smoothgrad).
    noise_std: the noise level of smoothgrad, a fraction of each clip's range.
    rng: a `jax.random.key` for smoothgrad's noise (default `key(0)`): chunk
      c of the samples draws z = `jax.random.normal(jax.random.fold_in(rng, c),
      (B, chunk, T, H, W, 3))` (chunk = min(chunk_size, samples); the
      draws of a last, partial chunk beyond `samples` are unused).
    noise: optional standard normal z [B, samples, T, H, W, 3] to use instead
      of drawing it (scaled by sigma as above).
    patch: the occlusion window (t, h, w), or one int for all axes; at most
      the clip's size on every axis.
    stride: the occlusion step (t, h, w), >= 1 and <= patch where the patch
      does not span the axis; None: the patch (non-overlapping windows).
    chunk_size: steps, samples or windows per batched forward (and backward)
      pass, which bounds memory: about B x chunk_size clips at once.

  Returns:
    An `Attribution`.

  Raises:
    ValueError: an unknown method, steps < 2, samples or chunk_size < 1, a
      patch larger than the clip, stride < 1 or > patch, noise, baseline or
      target of the wrong shape, variables without params or batch_stats, or
      clips of the wrong shape; TypeError: clips that are not floating point.
      Each message says the fix.
  """
  if method not in ATTRIBUTION_METHODS:
    raise ValueError(f'Unknown attribution method {method!r}; choose one of '
                     f'{ATTRIBUTION_METHODS}.')
  video = checked_inputs(video, variables)
  _check_counts(method, steps, samples, chunk_size, noise_std)
  batch, size = video.shape[0], tuple(video.shape[1:4])
  if method == 'occlusion':
    patch, stride = check_window(patch, stride, size)
  else:
    patch = stride = None
  baseline = jnp.zeros((), jnp.float32) if baseline is None else jnp.asarray(baseline,
                                                                              jnp.float32)
  try:
    np.broadcast_shapes(baseline.shape, video.shape)
  except ValueError:
    raise ValueError(f'baseline of shape {baseline.shape} does not broadcast to the clips '
                     f'{video.shape}; give a number, a [3] colour or a [B, T, H, W, 3] '
                     'array.') from None
  if target is not None:
    target = np.asarray(target).reshape(-1)
    if len(target) != batch or not np.all((target >= 0) & (target < model.num_classes)):
      raise ValueError(f'target={target.tolist()}: give one class in [0, {model.num_classes}) '
                       f'per clip ({batch} clips).')
    target = jnp.asarray(target, jnp.int32)
  if method == 'smoothgrad' and noise is not None:
    noise = jnp.asarray(noise) if not isinstance(noise, jax.Array) else noise
    expected = (batch, samples) + tuple(video.shape[1:])
    if tuple(noise.shape) != expected:
      raise ValueError(f'noise of shape {tuple(noise.shape)}: expected [B, samples, T, H, W, 3]'
                       f' = {expected}, standard normal.')
  else:
    noise = None
  rng = jax.random.key(0) if rng is None else rng
  if method == 'integrated_gradients':
    chunk_size = min(chunk_size, steps)
  fn = make_attributor(model, method, int(samples) if method == 'smoothgrad' else 0, patch,
                       stride, int(chunk_size))
  try:
    return fn(variables, video, target, baseline, jnp.int32(steps), jnp.float32(noise_std),
              rng, noise)
  except flax.errors.FlaxError as error:
    raise ValueError(
        f'The variables do not fit the model ({model.__class__.__name__}, num_classes='
        f'{model.num_classes}): {str(error).splitlines()[0]} Load the weights written for this '
        'model.') from error
