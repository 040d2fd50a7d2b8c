"""Localization metrics against ground truth: box accuracy, IoU, pointing game, temporal IoU.

Ground truth is boxes [..., T, 4] (x0, y0, x1, y1) in pixels with x1/y1
exclusive, all -1 where the action is absent, and optionally `present`
[..., T] (else derived from the boxes). Spatial metrics are scored on present
frames only; a present frame without a predicted box is a miss (IoU 0).
`summarize` pools the frame metrics over all present frames of all clips and
averages the clip metrics (temporal IoU, the deletion/insertion AUCs of
`perturbation`); `threshold_sweep` picks each method's box threshold on
held-out clips (`split_clips`) and reports the others. Frame-mAP and
video-mAP are `detection_map`'s. Details: docs/design.md section 8.

References:
  Zhang et al. "Top-down Neural Attention by Excitation Backprop", ECCV 2016
    (pointing game, 15 px tolerance).
  Choe et al. "Evaluating Weakly Supervised Object Localization Methods Right",
    CVPR 2020 (choose the threshold on held-out data, report on other data).
"""
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from gla_jax.explain import localize
from gla_jax.explain import perturbation

# Box thresholds tried by `threshold_sweep` (fractions of the maximum).
DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


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
# Per-clip results, summaries and the threshold sweep.
# ----------------------------------------------------------------------------

def clip_metrics(pred_boxes: Any, gt_boxes: Any, present: Optional[Any] = None, *,
                 attention: Optional[Any] = None, pred_segments: Optional[Any] = None,
                 gt_segments: Optional[Any] = None,
                 curves: Optional[Mapping[str, perturbation.Curve]] = None,
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
                     '[N, T] and "segments" (per clip) - e.g. a data loader batch.')
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
             curves: Optional[Sequence[Mapping[str, perturbation.Curve]]] = None
             ) -> List[Dict[str, Any]]:
  """Localizes a batch of attention maps and scores every clip.

  Args:
    attention: [N, T, H, W] (e.g. `Explanation.attention`).
    gt: {'boxes': [N, T, 4], 'present': optional [N, T], 'segments':
      optional per-clip segments (None: the runs of present frames)}; a
      `loader` batch works as is.
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


def split_clips(video_index: Sequence[int], held_out_fraction: float, seed: int
                ) -> Tuple[np.ndarray, np.ndarray]:
  """Random (held-out, reported) clip indices, split by video; each part sorted and non-empty.

  All clips of a video fall on one side (a threshold chosen on a video's clips
  is not reported on other clips of the same video): `held_out_fraction` of
  the videos, chosen with `seed`, are held out.

  Args:
    video_index: int [N], the video of each clip.

  Raises:
    ValueError: fewer than 2 videos, or a fraction outside (0, 1).
  """
  if not 0 < held_out_fraction < 1:
    raise ValueError(f'config.localize.held_out_fraction={held_out_fraction}: use a fraction in '
                     '(0, 1); both the held-out and the reported part need clips.')
  video_index = np.asarray(video_index)
  videos = np.unique(video_index)
  if len(videos) < 2:
    raise ValueError(f'{len(video_index)} clip(s) of {len(videos)} video(s): the threshold is '
                     'chosen on held-out videos and reported on others, so at least 2 videos '
                     'are needed: raise config.localize.max_clips (0 = the whole split).')
  held = min(max(int(round(len(videos) * held_out_fraction)), 1), len(videos) - 1)
  held_videos = np.random.default_rng(seed).permutation(videos)[:held]
  in_held = np.isin(video_index, held_videos)
  return np.flatnonzero(in_held), np.flatnonzero(~in_held)
