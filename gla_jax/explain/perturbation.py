"""Deletion and insertion curves (RISE): is the attention where the classifier looks?

Voxels are removed (replaced by a baseline) or inserted (into the baseline),
most attended first, and the classifier's probability of the target class is
recorded after each step. A faithful map makes the deletion curve fall fast
(low AUC) and the insertion curve rise fast (high AUC).

References:
  Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018 (deletion and insertion metrics; zero
    baseline for deletion, blurred image for insertion).
"""
import dataclasses
from typing import Any, Callable, Dict, Optional, Union

import cv2
import numpy as np

ScoreFn = Callable[[np.ndarray], Any]
Baseline = Union[str, float, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Curve:
  """A deletion or insertion curve.

  Attributes:
    fractions: float [steps + 1] the fraction of voxels removed (deletion) or
      inserted (insertion), 0 to 1.
    scores: float [steps + 1] the target-class probability at each fraction.
    auc: area under the curve (trapezoid over fractions in [0, 1]).
  """
  fractions: np.ndarray
  scores: np.ndarray
  auc: float


def auc(scores: Any) -> float:
  """Trapezoid area under scores taken at evenly spaced x from 0 to 1."""
  y = np.asarray(scores, np.float64).reshape(-1)
  if len(y) < 2:
    raise ValueError(f'An area needs at least 2 points, got {len(y)}.')
  return float(np.sum(y[1:] + y[:-1]) / (2 * (len(y) - 1)))


def blur(video: Any, sigma: float = 5.0) -> np.ndarray:
  """Each frame of [T, H, W, C] Gaussian-blurred in space (RISE's insertion baseline).

  Spatial only: RISE blurs images, and a per-frame blur keeps the clip's
  timing while removing the detail the classifier reads. The border is
  reflected, so a constant clip stays constant.
  """
  video = np.asarray(video, np.float32)
  if sigma <= 0:
    raise ValueError(f'blur sigma={sigma}: must be > 0 pixels.')
  return np.stack([cv2.GaussianBlur(frame, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
                   .reshape(frame.shape) for frame in video])


def make_baseline(video: np.ndarray, baseline: Baseline, blur_sigma: float = 5.0) -> np.ndarray:
  """The clip that deleted voxels take and insertion starts from.

  Args:
    video: float32 [T, H, W, C].
    baseline: 'zeros' (for clips normalised by the dataset mean, 0 is the
      mean colour: "no information"), 'blur' (`blur(video, blur_sigma)`), a
      number (that value everywhere) or an array broadcastable to the video.
    blur_sigma: Gaussian sigma in pixels for 'blur'.

  Returns:
    float32 array of the video's shape.
  """
  if isinstance(baseline, str):
    if baseline == 'zeros':
      return np.zeros_like(video)
    if baseline == 'blur':
      return blur(video, blur_sigma)
    raise ValueError(f"Unknown baseline {baseline!r}; use 'zeros', 'blur', a number or an array "
                     'broadcastable to the video.')
  try:
    return np.broadcast_to(np.asarray(baseline, np.float32), video.shape).copy()
  except ValueError:
    raise ValueError(f'A baseline of shape {np.shape(baseline)} does not broadcast to the video '
                     f'{video.shape}.') from None


def _ranks(attention: np.ndarray) -> np.ndarray:
  """Rank of each voxel by attention, 0 = most attended; ties in raster order."""
  order = np.argsort(-attention.reshape(-1), kind='stable')
  ranks = np.empty(order.size, np.int64)
  ranks[order] = np.arange(order.size)
  return ranks.reshape(attention.shape)


def _scores(score_fn: ScoreFn, clips: np.ndarray, batch_size: int) -> np.ndarray:
  """score_fn over clips in chunks of exactly batch_size (the last one padded).

  Equal chunk shapes let a jitted score_fn compile once.
  """
  out = []
  for start in range(0, len(clips), batch_size):
    chunk = clips[start:start + batch_size]
    real = len(chunk)
    if real < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
    scores = np.asarray(score_fn(chunk), np.float64)
    if scores.shape != (batch_size,):
      raise ValueError(f'score_fn returned shape {scores.shape} for {batch_size} clips; it must '
                       'return [N], the probability of the target class per clip (e.g. '
                       'softmax(logits)[:, target]).')
    out.append(scores[:real])
  return np.concatenate(out)


def perturbation_curve(score_fn: ScoreFn, video: Any, attention: Any, mode: str = 'deletion',
                       steps: int = 100, baseline: Optional[Baseline] = None,
                       blur_sigma: float = 5.0, batch_size: int = 32) -> Curve:
  """Deletion or insertion curve of one clip.

  Step k of `steps` has the round(k / steps * V) most attended of the
  V = T * H * W voxels (all channels of a pixel together) replaced by the
  baseline (deletion) or taken from the video while the rest is the baseline
  (insertion). The steps' clips are built and scored in batches.

  Args:
    score_fn: videos [N, T, H, W, C] -> [N] probability of the target class
      (the caller closes over the model and the target; jit it).
    video: [T, H, W, C] the clip, as the model takes it.
    attention: [T, H, W] the map ranking the voxels.
    mode: 'deletion' or 'insertion'.
    steps: number of steps (curve points = steps + 1). 100 moves 1 % of the
      voxels per step; RISE moved 1/224 of an image's pixels per step.
    baseline: see `make_baseline`; None takes RISE's choice: 'zeros' for
      deletion, 'blur' for insertion.
    blur_sigma: sigma in pixels of the 'blur' baseline (RISE: 5 at 224 px).
    batch_size: clips per score_fn call (the last chunk is padded to it).

  Returns:
    A `Curve`.
  """
  if mode not in ('deletion', 'insertion'):
    raise ValueError(f"Unknown mode {mode!r}; use 'deletion' or 'insertion'.")
  if steps < 1 or batch_size < 1:
    raise ValueError(f'steps={steps}, batch_size={batch_size}: both must be >= 1.')
  video = np.asarray(video, np.float32)
  attention = np.asarray(attention, np.float32)
  if video.ndim != 4 or attention.shape != video.shape[:3]:
    raise ValueError(f'Expected video [T, H, W, C] and attention [T, H, W] of the same T, H, W; '
                     f'got {video.shape} and {attention.shape}.')
  if baseline is None:
    baseline = 'zeros' if mode == 'deletion' else 'blur'
  base = make_baseline(video, baseline, blur_sigma)
  # Deletion moves voxels from the video to the baseline; insertion the reverse.
  source, target = (video, base) if mode == 'deletion' else (base, video)
  ranks = _ranks(attention)
  counts = np.round(np.linspace(0, ranks.size, steps + 1)).astype(np.int64)
  scores = []
  for start in range(0, steps + 1, batch_size):
    chunk = counts[start:start + batch_size]
    moved = ranks[None] < chunk[:, None, None, None]                  # [n, T, H, W]
    clips = np.where(moved[..., None], target[None], source[None])    # [n, T, H, W, C]
    scores.append(_scores(score_fn, clips, batch_size))
  scores = np.concatenate(scores)
  return Curve(fractions=counts / ranks.size, scores=scores, auc=auc(scores))


def deletion_insertion(score_fn: ScoreFn, video: Any, attention: Any, steps: int = 100,
                       deletion_baseline: Baseline = 'zeros',
                       insertion_baseline: Baseline = 'blur', blur_sigma: float = 5.0,
                       batch_size: int = 32) -> Dict[str, Curve]:
  """Both curves of one clip: {'deletion': Curve, 'insertion': Curve}.

  Defaults follow RISE: deletion replaces voxels with zeros (the dataset
  mean, for mean-subtracted clips), insertion starts from the blurred clip.
  See `perturbation_curve` for the arguments.
  """
  return {mode: perturbation_curve(score_fn, video, attention, mode, steps, base, blur_sigma,
                                   batch_size)
          for mode, base in (('deletion', deletion_baseline),
                             ('insertion', insertion_baseline))}
