"""Localization metrics against ground truth, and the faithfulness curves.

Ground truth is what `synthetic` and `input_pipeline` give: boxes [..., T, 4]
(x0, y0, x1, y1) in pixels with x1/y1 exclusive, all -1 where the action is
absent, and optionally `present` [..., T]. Where `present` is not given it is
derived from the boxes (a frame is present when its box has an area).

Spatial metrics are scored on present frames only:
  localization accuracy  the fraction of present frames whose predicted box
                         has IoU >= `iou_threshold` (0.5) with the ground
                         truth; a present frame without a predicted box is a
                         miss (its IoU is 0).
  mean IoU               the mean box IoU over present frames (0 for misses).
  pointing game          the fraction of present frames whose attention peak
                         lies within `tolerance` pixels of the ground-truth
                         box (Zhang et al. used 15 px on ~224 px images; our
                         default is 0: the peak must be inside the box).
Temporal IoU compares the predicted segments with the ground-truth ones.

Deletion and insertion (Petsiuk et al., RISE) measure whether the attention
points at what the classifier uses: voxels are removed (replaced by a
baseline) or inserted (into the baseline) most attended first, and the
classifier's probability of the target class is recorded after each step.
A faithful map makes the deletion curve fall fast (low AUC) and the
insertion curve rise fast (high AUC).

Per-clip results (`clip_metrics`, `evaluate`) are counts and sums, so
`summarize` pools the frame metrics over all present frames of all clips
(not a mean of per-clip means) and averages the clip metrics (temporal IoU,
AUCs) over the clips that have them. `threshold_sweep` picks the box
threshold of each method on held-out clips and reports the evaluation clips.

References:
  Zhang et al. "Top-down Neural Attention by Excitation Backprop", ECCV 2016
    (pointing game, 15 px tolerance).
  Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018 (deletion and insertion metrics; zero
    baseline for deletion, blurred image for insertion).
  Choe et al. "Evaluating Weakly Supervised Object Localization Methods Right",
    CVPR 2020 (choose the threshold on held-out data, report on other data).
"""
import dataclasses
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import cv2
import numpy as np

from gla_jax.explain import localize

# Box thresholds tried by `threshold_sweep` (fractions of the maximum).
DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))

ScoreFn = Callable[[np.ndarray], Any]
Baseline = Union[str, float, np.ndarray]


# ----------------------------------------------------------------------------
# Frame metrics.
# ----------------------------------------------------------------------------

def presence(gt_boxes: Any, present: Optional[Any] = None) -> np.ndarray:
  """The frames to score: bool [..., T].

  Args:
    gt_boxes: [..., T, 4] ground-truth boxes, all -1 where absent.
    present: optional bool [..., T]; None derives it from the boxes.

  Raises:
    ValueError: a frame is marked present but its box has no area.
  """
  gt_boxes = np.asarray(gt_boxes, np.float32)
  if gt_boxes.shape[-1:] != (4,):
    raise ValueError(f'Ground-truth boxes must be [..., T, 4], got shape {gt_boxes.shape}.')
  has_box = (gt_boxes[..., 2] > gt_boxes[..., 0]) & (gt_boxes[..., 3] > gt_boxes[..., 1])
  if present is None:
    return has_box
  present = np.asarray(present, bool)
  if present.shape != has_box.shape:
    raise ValueError(f'present has shape {present.shape} but the boxes give {has_box.shape}; '
                     'give one flag per frame.')
  bad = np.argwhere(present & ~has_box)
  if len(bad):
    raise ValueError(f'Frame(s) {bad[:5].tolist()} (index [..., t]) are marked present but their '
                     'ground-truth box is absent (-1) or empty: fix the ground truth, or pass '
                     'present=None to derive presence from the boxes.')
  return present


def _ratio(numerator: float, denominator: float) -> float:
  return float(numerator) / denominator if denominator > 0 else math.nan


def localization_accuracy(pred_boxes: Any, gt_boxes: Any, present: Optional[Any] = None,
                          iou_threshold: float = 0.5) -> float:
  """Fraction of present frames with IoU(pred, gt) >= iou_threshold.

  Args:
    pred_boxes: [..., T, 4], all -1 where no box was predicted (a miss).
    gt_boxes: [..., T, 4], all -1 where the action is absent.
    present: optional bool [..., T] (see `presence`).
    iou_threshold: the IoU a box needs to count as correct.

  Returns:
    The accuracy, NaN when no frame is present.
  """
  mask = presence(gt_boxes, present)
  iou = localize.box_iou(pred_boxes, gt_boxes)
  return _ratio(np.sum((iou >= iou_threshold) & mask), mask.sum())


def mean_iou(pred_boxes: Any, gt_boxes: Any, present: Optional[Any] = None) -> float:
  """Mean box IoU over present frames (0 where no box was predicted); NaN if none."""
  mask = presence(gt_boxes, present)
  iou = localize.box_iou(pred_boxes, gt_boxes)
  return _ratio(np.sum(iou[mask], dtype=np.float64), mask.sum())


def pointing_hits(attention: Any, gt_boxes: Any, present: Optional[Any] = None,
                  tolerance: float = 0.0) -> np.ndarray:
  """Whether each frame's attention peak lies within `tolerance` px of its box.

  The peak is the first maximum in row-major order; pixel (x, y) stands for
  its centre (x + 0.5, y + 0.5), whose Euclidean distance to the box
  [x0, x1] x [y0, y1] must be <= tolerance (0: inside the box). A frame
  whose attention is constant (e.g. all 0) has no peak and is a miss.

  Args:
    attention: [..., T, H, W].
    gt_boxes: [..., T, 4].
    present: optional bool [..., T] (see `presence`).
    tolerance: in pixels, >= 0.

  Returns:
    bool [..., T]; False on frames that are not present.
  """
  if tolerance < 0:
    raise ValueError(f'tolerance={tolerance}: a distance in pixels, use >= 0.')
  maps = np.asarray(attention, np.float32)
  gt_boxes = np.asarray(gt_boxes, np.float32)
  if maps.shape[:-2] != gt_boxes.shape[:-1]:
    raise ValueError(f'Attention {maps.shape} and boxes {gt_boxes.shape} disagree: need '
                     '[..., T, H, W] and [..., T, 4].')
  mask = presence(gt_boxes, present)
  width = maps.shape[-1]
  flat = maps.reshape(maps.shape[:-2] + (-1,))
  peak = np.argmax(flat, axis=-1)
  has_peak = flat.max(axis=-1) > flat.min(axis=-1)
  cx, cy = peak % width + 0.5, peak // width + 0.5
  dx = np.maximum(np.maximum(gt_boxes[..., 0] - cx, cx - gt_boxes[..., 2]), 0)
  dy = np.maximum(np.maximum(gt_boxes[..., 1] - cy, cy - gt_boxes[..., 3]), 0)
  return mask & has_peak & (np.hypot(dx, dy) <= tolerance)


def pointing_game(attention: Any, gt_boxes: Any, present: Optional[Any] = None,
                  tolerance: float = 0.0) -> float:
  """Hit rate of `pointing_hits` over present frames; NaN if none."""
  mask = presence(gt_boxes, present)
  return _ratio(pointing_hits(attention, gt_boxes, mask, tolerance).sum(), mask.sum())


# ----------------------------------------------------------------------------
# Deletion and insertion (RISE).
# ----------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------
# Per-clip results, summaries and the threshold sweep.
# ----------------------------------------------------------------------------

def clip_metrics(pred_boxes: Any, gt_boxes: Any, present: Optional[Any] = None, *,
                 attention: Optional[Any] = None, pred_segments: Optional[Any] = None,
                 gt_segments: Optional[Any] = None, curves: Optional[Mapping[str, Curve]] = None,
                 iou_threshold: float = 0.5, tolerance: float = 0.0) -> Dict[str, Any]:
  """Counts and sums of one clip, for `summarize`.

  Args:
    pred_boxes: [T, 4] predicted boxes (-1 where none).
    gt_boxes: [T, 4] ground truth (-1 where absent).
    present: optional bool [T] (see `presence`).
    attention: optional [T, H, W]: adds the pointing game.
    pred_segments: optional predicted (start, end) segments: adds temporal IoU.
    gt_segments: ground-truth segments; None takes the runs of present
      frames. A clip without any ground-truth segment gets no temporal IoU.
    curves: optional `deletion_insertion` output: adds the AUCs.
    iou_threshold: IoU for a correct box.
    tolerance: pointing-game tolerance in pixels.

  Returns:
    {'iou_threshold', 'present_frames', 'correct_frames', 'iou_sum'} and, when
    their inputs are given, 'pointing_hits', 'temporal_iou', 'deletion_auc',
    'insertion_auc'.
  """
  gt_boxes = np.asarray(gt_boxes, np.float32)
  if gt_boxes.ndim != 2:
    raise ValueError(f'clip_metrics scores one clip: boxes [T, 4], got {gt_boxes.shape}; use '
                     '`evaluate` for a batch.')
  mask = presence(gt_boxes, present)
  iou = localize.box_iou(pred_boxes, gt_boxes)
  result = dict(iou_threshold=float(iou_threshold), present_frames=int(mask.sum()),
                correct_frames=int(np.sum((iou >= iou_threshold) & mask)),
                iou_sum=float(np.sum(iou[mask], dtype=np.float64)))
  if attention is not None:
    result['pointing_hits'] = int(pointing_hits(attention, gt_boxes, mask, tolerance).sum())
  if pred_segments is not None:
    if gt_segments is None:
      gt_segments = localize.segments_from_mask(mask)
    if localize.merge_segments(gt_segments):
      result['temporal_iou'] = localize.temporal_iou(pred_segments, gt_segments)
  if curves is not None:
    result['deletion_auc'] = float(curves['deletion'].auc)
    result['insertion_auc'] = float(curves['insertion'].auc)
  return result


def _gt_fields(gt: Mapping[str, Any], num_clips: int, what: str):
  """(boxes [N, T, 4], present [N, T] or None, segments per clip or None) of a GT mapping."""
  if not isinstance(gt, Mapping) or 'boxes' not in gt:
    raise ValueError(f'{what} must be a mapping with "boxes" [N, T, 4] and optionally "present" '
                     '[N, T] and "segments" (per clip) - e.g. an input_pipeline batch.')
  boxes = np.asarray(gt['boxes'], np.float32)
  if boxes.ndim != 3 or boxes.shape[0] != num_clips:
    raise ValueError(f'{what}["boxes"] has shape {boxes.shape}; expected [{num_clips}, T, 4], '
                     'one row per clip of the attention.')
  present = gt.get('present')
  segments = gt.get('segments')
  if segments is not None and len(segments) != num_clips:
    raise ValueError(f'{what}["segments"] has {len(segments)} entries for {num_clips} clips.')
  return boxes, present, segments


def evaluate(attention: Any, gt: Mapping[str, Any], *, threshold: float = 0.5,
             relative_to: str = 'frame', policy: str = 'largest',
             temporal_threshold: float = 0.5, min_segment_frames: int = 1,
             max_gap_frames: int = 0, iou_threshold: float = 0.5, tolerance: float = 0.0,
             curves: Optional[Sequence[Mapping[str, Curve]]] = None) -> List[Dict[str, Any]]:
  """Localizes a batch of attention maps and scores every clip.

  Args:
    attention: [N, T, H, W] (e.g. `Explanation.attention`).
    gt: {'boxes': [N, T, 4], 'present': optional [N, T], 'segments':
      optional per-clip segments (None: the runs of present frames)}; an
      `input_pipeline` batch works as is.
    threshold, relative_to, policy, temporal_threshold, min_segment_frames,
      max_gap_frames: passed to `localize.localize`.
    iou_threshold: IoU for a correct box.
    tolerance: pointing-game tolerance in pixels.
    curves: optional per-clip `deletion_insertion` outputs.

  Returns:
    One `clip_metrics` dict per clip.
  """
  maps = np.asarray(getattr(attention, 'attention', attention), np.float32)
  if maps.ndim != 4:
    raise ValueError(f'Expected attention [N, T, H, W], got shape {maps.shape}.')
  boxes, present, segments = _gt_fields(gt, maps.shape[0], 'gt')
  if curves is not None and len(curves) != maps.shape[0]:
    raise ValueError(f'{len(curves)} curves for {maps.shape[0]} clips: give one per clip or None.')
  loc = localize.localize(maps, threshold, relative_to, policy, temporal_threshold,
                          min_segment_frames, max_gap_frames)
  return [clip_metrics(loc.boxes[i], boxes[i], None if present is None else present[i],
                       attention=maps[i], pred_segments=loc.segments[i],
                       gt_segments=None if segments is None else segments[i],
                       curves=None if curves is None else curves[i],
                       iou_threshold=iou_threshold, tolerance=tolerance)
          for i in range(maps.shape[0])]


def summarize(results: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
  """Pools per-clip results into one summary.

  Frame metrics are pooled over all present frames; temporal IoU and the
  AUCs are averaged over the clips that have them. A metric without data is
  NaN.

  Returns:
    {'loc_acc@<iou>', 'mean_iou', 'pointing_game', 'temporal_iou',
    'deletion_auc', 'insertion_auc', 'num_clips', 'num_present_frames'}.
  """
  if not results:
    raise ValueError('No per-clip results to summarize.')
  thresholds = {r['iou_threshold'] for r in results}
  if len(thresholds) != 1:
    raise ValueError(f'The results mix IoU thresholds {sorted(thresholds)}; summarize one '
                     'threshold at a time.')
  frames = sum(r['present_frames'] for r in results)

  def clip_mean(key):
    values = [r[key] for r in results if key in r]
    return float(np.mean(values)) if values else math.nan

  with_pointing = [r for r in results if 'pointing_hits' in r]
  return {
      f'loc_acc@{thresholds.pop():g}': _ratio(sum(r['correct_frames'] for r in results), frames),
      'mean_iou': _ratio(sum(r['iou_sum'] for r in results), frames),
      'pointing_game': _ratio(sum(r['pointing_hits'] for r in with_pointing),
                              sum(r['present_frames'] for r in with_pointing)),
      'temporal_iou': clip_mean('temporal_iou'),
      'deletion_auc': clip_mean('deletion_auc'),
      'insertion_auc': clip_mean('insertion_auc'),
      'num_clips': len(results),
      'num_present_frames': frames,
  }


def threshold_sweep(held_out: Mapping[str, Any], held_out_gt: Mapping[str, Any],
                    evaluation: Mapping[str, Any], evaluation_gt: Mapping[str, Any],
                    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                    iou_threshold: float = 0.5, relative_to: str = 'frame',
                    policy: str = 'largest', **evaluate_kwargs) -> Dict[str, Dict[str, Any]]:
  """Chooses each method's box threshold on held-out clips, reports the others.

  Choosing the threshold on the clips that are reported would flatter every
  method (Choe et al. 2020); here the threshold with the best localization
  accuracy on `held_out` (the lowest one on ties) is applied to `evaluation`.

  Args:
    held_out: {method name: attention [N, T, H, W]} to choose thresholds on.
    held_out_gt: ground truth of those clips (see `evaluate`).
    evaluation: {method name: attention [M, T, H, W]}, the same methods.
    evaluation_gt: ground truth of the evaluation clips.
    thresholds: the candidate thresholds.
    iou_threshold: IoU for a correct box.
    relative_to, policy: passed to `localize`.
    **evaluate_kwargs: further `evaluate` arguments for the evaluation part
      (temporal_threshold, tolerance, curves, ...).

  Returns:
    {method: {'threshold': the chosen one, 'held_out_loc_acc': {threshold:
    accuracy}, 'summary': `summarize` of the evaluation clips at it}}.
  """
  if set(held_out) != set(evaluation):
    raise ValueError(f'held_out has methods {sorted(held_out)} but evaluation has '
                     f'{sorted(evaluation)}; give both parts for every method.')
  if not len(thresholds):
    raise ValueError('No thresholds to sweep.')
  report = {}
  for method in held_out:
    maps = np.asarray(getattr(held_out[method], 'attention', held_out[method]), np.float32)
    if maps.ndim != 4:
      raise ValueError(f'held_out[{method!r}] has shape {maps.shape}; expected [N, T, H, W].')
    boxes, present, _ = _gt_fields(held_out_gt, maps.shape[0], 'held_out_gt')
    accuracy = {}
    for threshold in thresholds:
      # Only boxes matter for the choice: skip the temporal part of localize.
      pred = localize.frame_boxes(maps, threshold, relative_to, policy)
      accuracy[float(threshold)] = localization_accuracy(pred, boxes, present, iou_threshold)
    # max() keeps the first (lowest) threshold among equal accuracies; NaN
    # (no present frame) cannot be compared, so it ranks last.
    best = max(accuracy, key=lambda t: -math.inf if math.isnan(accuracy[t]) else accuracy[t])
    results = evaluate(evaluation[method], evaluation_gt, threshold=best,
                       relative_to=relative_to, policy=policy, iou_threshold=iou_threshold,
                       **evaluate_kwargs)
    report[method] = dict(threshold=best, held_out_loc_acc=accuracy, summary=summarize(results))
  return report
