"""Faithfulness of a map to the classifier: ROAD and average drop / increase in confidence.

ROAD (remove and debias) removes the most (MoRF) or least (LeRF) relevant
pixels and fills them by noisy linear imputation: each removed pixel becomes
the weighted mean of its 8 neighbours (weight 1/6 for the 4 sharing an edge,
1/12 for the 4 diagonal ones, out-of-frame neighbours left out), kept
neighbours being known values, plus Gaussian noise. Filling from the
neighbours, unlike a constant, leaves no mask shape for the classifier to read.
The score at each removed fraction is the change of the class probability; a
faithful map makes it fall fast for MoRF and stay for LeRF.

Average drop and increase in confidence score the clip multiplied by its map
(the normalised clip times a map in [0, 1]) against the clip itself.

The definitions are those of pytorch-grad-cam's `metrics.road` and
`metrics.cam_mult_image`; on clips the pixels are ranked over the whole clip
and each frame is imputed on its own (a 2D problem, as ROAD's images). The
linear systems are solved on the device, jitted and batched over frames.

References:
  Rong, Leemann, Borisov, Kasneci, Kasneci. "A Consistent and Efficient
    Evaluation Strategy for Attribution Methods", ICML 2022 (ROAD).
  Chattopadhay, Sarkar, Howlader, Balasubramanian. "Grad-CAM++: Generalized
    Gradient-based Visual Explanations for Deep Convolutional Networks",
    WACV 2018 (average drop, increase in confidence).
"""
from typing import Any, Callable, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from gla_jax import models
from gla_jax.explain import perturbation

# ROAD's neighbour weights (offset (row, column) -> weight); they sum to 1.
NEIGHBOUR_WEIGHTS = (((-1, -1), 1 / 12), ((-1, 0), 1 / 6), ((-1, 1), 1 / 12),
                     ((0, -1), 1 / 6), ((0, 1), 1 / 6),
                     ((1, -1), 1 / 12), ((1, 0), 1 / 6), ((1, 1), 1 / 12))
# ROAD's imputation noise: standard deviation, in units of the (normalised) clip.
NOISE = 0.01
# pytorch-grad-cam's ROAD*Average percentiles, as fractions of the pixels removed.
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Conjugate-gradient stopping rule per frame and channel: relative residual, and
# at most this many iterations per pixel of the frame's longer side (a removed
# blob d pixels across needs 2 to 3 d; tests/explain/test_faithfulness.py).
CG_TOLERANCE = 1e-5
CG_ITERATIONS_PER_PIXEL = 4
SCORES = ('road_morf', 'road_lerf', 'road_combined', 'average_drop', 'increase_in_confidence')


def neighbour_sum(frames: jax.Array) -> jax.Array:
  """sum over in-frame neighbours of weight * value, for [..., H, W] (zero outside the frame)."""
  height, width = frames.shape[-2:]
  padded = jnp.pad(frames, [(0, 0)] * (frames.ndim - 2) + [(1, 1), (1, 1)])
  total = jnp.zeros_like(frames)
  for (row, column), weight in NEIGHBOUR_WEIGHTS:
    total = total + weight * padded[..., 1 + row:1 + row + height, 1 + column:1 + column + width]
  return total


def conjugate_gradients(operator: Callable[[jax.Array], jax.Array], right: jax.Array,
                        max_iterations: int, tolerance: float = CG_TOLERANCE
                        ) -> Tuple[jax.Array, jax.Array]:
  """Solve operator(x) = right for every system [..., H, W] at once, from x = 0.

  Conjugate gradients (Hestenes and Stiefel 1952) with each system's own step
  sizes; `operator` must be symmetric positive semi-definite per system and
  act on each [H, W] slice alone. A system stops (its iterates freeze) once
  |residual| <= tolerance * |right|; the loop ends when all have or after
  `max_iterations`. A zero right-hand side gives x = 0.

  Returns:
    (x, the number of iterations run).
  """
  def dot(a, b):
    return jnp.sum(a * b, axis=(-2, -1), keepdims=True)

  squared = dot(right, right)
  stop = tolerance ** 2 * squared

  def running(state):
    iteration, _, _, _, residual_squared = state
    return (iteration < max_iterations) & jnp.any(residual_squared > stop)

  def step(state):
    iteration, x, residual, direction, residual_squared = state
    active = residual_squared > stop
    image = operator(direction)
    curvature = dot(direction, image)
    alpha = jnp.where(active & (curvature > 0), residual_squared / jnp.where(
        curvature > 0, curvature, 1), 0)
    x = x + alpha * direction
    residual = residual - alpha * image
    new_squared = dot(residual, residual)
    beta = jnp.where(active, new_squared / jnp.where(active, residual_squared, 1), 0)
    direction = jnp.where(active, residual + beta * direction, direction)
    return iteration + 1, x, residual, direction, jnp.where(active, new_squared, residual_squared)

  state = (jnp.int32(0), jnp.zeros_like(right), right, right, squared)
  iterations, x, _, _, _ = jax.lax.while_loop(running, step, state)
  return x, iterations


def road_system(values: jax.Array, removed: jax.Array
                ) -> Tuple[Callable[[jax.Array], jax.Array], jax.Array]:
  """ROAD's imputation system of frames [..., H, W] (one channel): (operator, right-hand side).

  For each removed pixel i: d_i x_i - sum_j w_ij x_j (j its removed
  neighbours) = sum_k w_ik v_k (k its kept neighbours), d_i the weight of its
  in-frame neighbours. On the whole frame: M (D - W) M x = M W (1 - M) v, M
  the removed pixels; symmetric positive semi-definite, and 0 on kept pixels.
  """
  mask = removed.astype(values.dtype)
  degree = neighbour_sum(jnp.ones(values.shape[-2:], values.dtype))

  def operator(x):
    return mask * (degree * x - neighbour_sum(mask * x))
  return operator, mask * neighbour_sum((1 - mask) * values)


@jax.jit
def _impute(frames: jax.Array, removed: jax.Array, noise: jax.Array, key: jax.Array
            ) -> jax.Array:
  """`impute` of float32 frames; `noise` a scalar, `key` a PRNG key."""
  channels = jnp.moveaxis(frames, -1, 0)                                  # [C, B, H, W]
  operator, right = road_system(channels, removed[None])
  filled, _ = conjugate_gradients(operator, right,
                                  CG_ITERATIONS_PER_PIXEL * max(frames.shape[1:3]))
  filled = jnp.moveaxis(filled, 0, -1) + noise * jax.random.normal(key, frames.shape,
                                                                   frames.dtype)
  return jnp.where(removed[..., None], filled, frames)


def impute(frames: Any, removed: Any, noise: float = NOISE, seed: int = 0) -> jax.Array:
  """ROAD's noisy linear imputation of frames [B, H, W, C] where `removed` [B, H, W] is True.

  Each frame and channel is its own linear system (`road_system`), all solved
  at once on the device by `conjugate_gradients` (relative residual
  CG_TOLERANCE, at most CG_ITERATIONS_PER_PIXEL * max(H, W) iterations; a
  removed blob d pixels across takes 2 to 3 d). A removed region that
  touches no kept pixel of its frame (e.g. a frame removed whole) has a
  singular block with a zero right-hand side: it takes 0 (the dataset mean
  colour of normalised clips), where ROAD's sparse solver fails on the
  singular matrix. Removed pixels get the solution plus `noise` * N(0, 1)
  (ROAD: 0.01 on normalised images; 0 gives the deterministic fill); kept
  pixels are returned unchanged.
  """
  frames = jnp.asarray(frames, jnp.float32)
  removed = jnp.asarray(removed, bool)
  if frames.ndim != 4 or removed.shape != frames.shape[:3]:
    raise ValueError(f'impute takes frames [B, H, W, C] and a removed mask [B, H, W] of the same '
                     f'B, H, W; got {frames.shape} and {removed.shape}.')
  _check_noise(noise)
  return _impute(frames, removed, jnp.float32(noise), jax.random.PRNGKey(seed))


def removal_masks(attention: jax.Array, fractions: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """(MoRF, LeRF) removed voxels [F, T, H, W] of a map [T, H, W] at each fraction [F].

  The voxels of the whole clip are ranked by the map (ties in raster order);
  round(fraction * T * H * W) of the most (MoRF) or least (LeRF) attended are
  removed. pytorch-grad-cam thresholds at np.percentile instead: without
  ties it removes floor((V - 1) * fraction) + 1 (the same for V = 100 and
  fractions k / 10), and with ties every pixel tied at the threshold.
  """
  flat = attention.reshape(-1)
  order = jnp.argsort(-flat, stable=True)
  ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  counts = jnp.round(fractions * flat.size).astype(jnp.int32)[:, None]
  most = ranks[None] < counts
  least = ranks[None] >= flat.size - counts
  shape = (len(fractions),) + attention.shape
  return most.reshape(shape), least.reshape(shape)


@jax.jit
def _road_clips(video: jax.Array, attention: jax.Array, fractions: jax.Array, noise: jax.Array,
                key: jax.Array) -> jax.Array:
  most, least = removal_masks(attention, fractions)
  removed = jnp.concatenate([most, least])                               # [2F, T, H, W]
  clips = jnp.broadcast_to(video, removed.shape + video.shape[-1:])
  frames = _impute(clips.reshape((-1,) + video.shape[1:]),
                   removed.reshape((-1,) + video.shape[1:3]), noise, key)
  return frames.reshape(clips.shape)


def road_clips(video: Any, attention: Any, fractions: Sequence[float] = FRACTIONS,
               noise: float = NOISE, seed: int = 0) -> jax.Array:
  """The ROAD clips [2F, T, H, W, C] of a clip: MoRF at each fraction, then LeRF at each.

  One jitted call builds the masks (`removal_masks`) and imputes every frame
  of every fraction (`impute`).
  """
  video, attention = _check_clip(video, attention)
  fractions = _check_fractions(fractions)
  _check_noise(noise)
  return _road_clips(video, attention, jnp.asarray(fractions, jnp.float32), jnp.float32(noise),
                     jax.random.PRNGKey(seed))


def clip_scores(score_fn: perturbation.ScoreFn, video: Any, attention: Any,
                fractions: Sequence[float] = FRACTIONS, batch_size: int = 8,
                noise: float = NOISE, seed: int = 0) -> Dict[str, np.ndarray]:
  """The class probabilities of one clip and its perturbations.

  Args:
    score_fn: clips [N, T, H, W, C] -> [N] probability of the explained class.
    video: float [T, H, W, C] the normalised clip. attention: [T, H, W] in [0, 1].
    fractions, noise, seed: `road_clips`'s.
    batch_size: clips per score_fn call (the last one padded to it).

  Returns:
    {'original' (Y), 'multiplied' (O: of video * attention): floats;
    'morf', 'lerf': [F] after removing each fraction}.
  """
  video, attention = _check_clip(video, attention)
  fractions = _check_fractions(fractions)
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size}: use >= 1.')
  removed = road_clips(video, attention, fractions, noise, seed)
  clips = jnp.concatenate([video[None], (video * attention[..., None])[None], removed])
  scores = perturbation._scores(score_fn, clips, batch_size)
  count = len(fractions)
  return dict(original=float(scores[0]), multiplied=float(scores[1]),
              morf=scores[2:2 + count], lerf=scores[2 + count:])


def summarize(scores: Sequence[Dict[str, Any]]) -> Dict[str, float]:
  """The metrics of `clip_scores` of several clips, averaged over them.

  road_morf, road_lerf: the mean over clips and fractions of the probability
  change (pytorch-grad-cam's ROAD*RelevantFirstAverage); road_combined:
  (road_lerf - road_morf) / 2 (its ROADCombined; higher is better);
  average_drop: 100 * mean of max(0, Y - O) / Y (lower is better; 0 where Y
  is 0); increase_in_confidence: 100 * the fraction of clips with O > Y
  (higher is better).
  """
  if not scores:
    raise ValueError('summarize needs the scores of at least one clip.')
  original = np.array([s['original'] for s in scores], np.float64)
  multiplied = np.array([s['multiplied'] for s in scores], np.float64)
  morf = float(np.mean([np.asarray(s['morf']) - s['original'] for s in scores]))
  lerf = float(np.mean([np.asarray(s['lerf']) - s['original'] for s in scores]))
  drop = np.maximum(original - multiplied, 0) / np.where(original > 0, original, 1)
  return dict(road_morf=morf, road_lerf=lerf, road_combined=(lerf - morf) / 2,
              average_drop=float(100 * drop.mean()),
              increase_in_confidence=float(100 * np.mean(multiplied > original)))


def method_scores(score_fn_for: Callable[[int], perturbation.ScoreFn], clips: Dict[str, Any],
                  indices: Sequence[int], mean: Sequence[float], std: Sequence[float],
                  batch_size: int, bar: Any) -> Dict[str, Dict[str, float]]:
  """`summarize` of every method's maps (`clips['maps']`) on the clips `indices`.

  `score_fn_for(i)` scores clip i's class; the uint8 clips (`clips['video']`)
  are normalised with `mean`, `std` first; clip i's imputation noise is seeded
  with i; `bar` (update(n), close()) advances once per clip and method.
  """
  indices = [int(index) for index in indices]
  if not indices:
    raise ValueError('ROAD needs at least one clip (config.localize.road_clips >= 1, or 0 to '
                     'skip it).')
  per_method: Dict[str, List[Dict[str, Any]]] = {name: [] for name in clips['maps']}
  try:
    for index in indices:
      score_fn = score_fn_for(index)
      video = models.normalize_video(clips['video'][index], mean, std)
      for name, maps in clips['maps'].items():
        per_method[name].append(clip_scores(score_fn, video, maps[index], batch_size=batch_size,
                                            seed=index))
        bar.update(1)
  finally:
    bar.close()
  return {name: summarize(scores) for name, scores in per_method.items()}


def _check_clip(video: Any, attention: Any) -> Tuple[jax.Array, jax.Array]:
  video = jnp.asarray(video, jnp.float32)
  attention = jnp.asarray(attention, jnp.float32)
  if video.ndim != 4 or attention.shape != video.shape[:3]:
    raise ValueError(f'Expected a normalised clip [T, H, W, C] and its map [T, H, W] of the same '
                     f'T, H, W; got {video.shape} and {attention.shape}.')
  return video, attention


def _check_fractions(fractions: Sequence[float]) -> Tuple[float, ...]:
  fractions = tuple(float(f) for f in fractions)
  if not fractions or not all(0 < f < 1 for f in fractions):
    raise ValueError(f'fractions={fractions}: give fractions of the pixels to remove, each in '
                     '(0, 1), e.g. faithfulness.FRACTIONS (0.1, ..., 0.9).')
  return fractions


def _check_noise(noise: float) -> None:
  if noise < 0:
    raise ValueError(f'noise={noise}: a standard deviation, use >= 0 (0: no noise).')
