"""Frame-mAP and video-mAP: the detection metrics of spatio-temporal action localization.

`frame_map` scores per-frame boxes and `video_map` per-video tubes, each with a
label and a score, by VOC average precision per label; `frame_detections`,
`video_tubes` and `detection_metrics` build them from `--mode=loc_eval`'s
collected clips (`comparison.collect_clips`) and a method's boxes. Boxes are
x0, y0, x1, y1 in pixels with x1/y1 exclusive. Details: docs/design.md section 8.

References:
  Everingham et al. "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010
    (all-point interpolated average precision).
  Gkioxari, Malik. "Finding Action Tubes", CVPR 2015 (frame-mAP, video-mAP).
  Chéron, Alayrac, Laptev, Schmid. "A flexible model for training action localization
    with varying levels of supervision", NeurIPS 2018 (video-level labels only).
"""
import math
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from gla_jax.explain import loc_metrics
from gla_jax.explain import localize

# ----------------------------------------------------------------------------
# Detection metrics: frame-mAP and video-mAP.
# ----------------------------------------------------------------------------

_DETECTION_KEYS = ('video', 'frame', 'label', 'score', 'box')
_FRAME_TRUTH_KEYS = ('video', 'frame', 'label', 'box')
_TUBE_KEYS = ('video', 'label', 'score', 'boxes')
_TUBE_TRUTH_KEYS = ('video', 'label', 'boxes')


def average_precision(is_true_positive: Sequence[bool], num_ground_truth: int) -> float:
  """VOC all-point interpolated AP of detections ranked by decreasing score.

  The area under the precision-recall curve after each precision is raised to
  the highest precision at any higher recall (Everingham et al. 2010, the
  VOC2010+ rule; no 11-point sampling).

  Args:
    is_true_positive: per detection, best first, whether it matched.
    num_ground_truth: the instances to find (>= 1).
  """
  if num_ground_truth < 1:
    raise ValueError(f'num_ground_truth={num_ground_truth}: AP needs at least one ground-truth '
                     'instance; leave labels without ground truth out.')
  hits = np.asarray(is_true_positive, bool)
  true_positives = np.cumsum(hits)
  if true_positives[-1:].sum() > num_ground_truth:
    raise ValueError(f'{true_positives[-1]} true positives for {num_ground_truth} ground-truth '
                     'instances: each instance matches at most one detection.')
  recall = np.concatenate([[0.0], true_positives / num_ground_truth, [1.0]])
  precision = np.concatenate([[0.0], true_positives / np.arange(1, len(hits) + 1), [0.0]])
  envelope = np.maximum.accumulate(precision[::-1])[::-1]
  steps = np.flatnonzero(recall[1:] != recall[:-1])
  return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _check_iou_threshold(iou_threshold: float) -> float:
  if not 0 < iou_threshold <= 1:
    raise ValueError(f'iou_threshold={iou_threshold}: an overlap in (0, 1], e.g. 0.5.')
  return float(iou_threshold)


def _box(value: Any, where: str) -> np.ndarray:
  """A (x0, y0, x1, y1) box with x1 > x0 and y1 > y0, as float64 [4]."""
  box = np.asarray(value, np.float64)
  if box.shape != (4,) or not np.all(np.isfinite(box)):
    raise ValueError(f'{where}: box {value!r} must be 4 finite numbers (x0, y0, x1, y1).')
  if box[2] <= box[0] or box[3] <= box[1]:
    raise ValueError(f'{where}: box {box.tolist()} has no area; boxes are (x0, y0, x1, y1) with '
                     'x1 > x0 and y1 > y0 (x1/y1 exclusive), leave frames without a box out.')
  return box


def _records(records: Sequence[Mapping[str, Any]], keys: Tuple[str, ...], what: str
             ) -> List[Mapping[str, Any]]:
  """`records` as a list, each a mapping with `keys` (and a finite 'score' if asked for)."""
  if isinstance(records, Mapping) or isinstance(records, (str, bytes)):
    raise ValueError(f'{what} must be a sequence of dicts with keys {keys}, got a '
                     f'{type(records).__name__}.')
  records = list(records)
  for index, record in enumerate(records):
    if not isinstance(record, Mapping):
      raise ValueError(f'{what}[{index}] is a {type(record).__name__}; each entry is a dict with '
                       f'keys {keys}.')
    missing = [key for key in keys if key not in record]
    if missing:
      raise ValueError(f'{what}[{index}] lacks {missing}; each entry needs {keys}.')
    if 'score' in keys and not (isinstance(record['score'], (int, float, np.number))
                                and math.isfinite(record['score'])):
      raise ValueError(f'{what}[{index}]: score {record["score"]!r} must be a finite number.')
  return records


def _tube_boxes(record: Mapping[str, Any], where: str) -> Dict[int, np.ndarray]:
  """A tube's {frame: box}, non-empty, with integer frames."""
  boxes = record['boxes']
  if not isinstance(boxes, Mapping) or not boxes:
    raise ValueError(f'{where}: "boxes" must be a non-empty dict {{frame: box}}; a tube without '
                     'frames cannot be matched, leave it out.')
  tube = {}
  for frame, box in boxes.items():
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
      raise ValueError(f'{where}: frame {frame!r} must be an integer frame index.')
    tube[int(frame)] = _box(box, f'{where}, frame {frame}')
  return tube


def _mean_ap(detections: Sequence[Mapping[str, Any]], truths: Sequence[Mapping[str, Any]],
             overlap: Callable[[Any, Any], float], iou_threshold: float
             ) -> Tuple[float, Dict[Any, float]]:
  """Greedy matching and AP per label, shared by `frame_map` and `video_map`.

  Each entry has 'label', 'group' (what must agree for a match: the video and
  frame, or the video) and 'shape' (a box, or a tube's {frame: box}); each
  detection also 'score'. Per label, detections in decreasing score (equal
  scores in input order) each take the unmatched instance of their group with
  the highest overlap >= iou_threshold (the first on ties); the others are
  false positives.
  """
  labels = {truth['label'] for truth in truths}
  try:
    labels = sorted(labels)
  except TypeError:                  # Labels of mixed types: any fixed order will do.
    labels = sorted(labels, key=repr)
  aps = {}
  for label in labels:
    pool: Dict[Any, List[Any]] = {}
    for truth in truths:
      if truth['label'] == label:
        pool.setdefault(truth['group'], []).append(truth['shape'])
    taken = {group: [False] * len(shapes) for group, shapes in pool.items()}
    mine = [d for d in detections if d['label'] == label]
    hits = []
    for index in np.argsort([-d['score'] for d in mine], kind='stable'):
      detection = mine[index]
      best, best_overlap = None, -1.0
      for k, shape in enumerate(pool.get(detection['group'], ())):
        value = overlap(detection['shape'], shape)
        if not taken[detection['group']][k] and iou_threshold <= value and value > best_overlap:
          best, best_overlap = k, value
      if best is not None:
        taken[detection['group']][best] = True
      hits.append(best is not None)
    count = sum(len(shapes) for shapes in pool.values())
    aps[label] = average_precision(hits, count) if hits else 0.0
  return (float(np.mean(list(aps.values()))) if aps else math.nan), aps


def _pair_iou(a: np.ndarray, b: np.ndarray) -> float:
  return float(localize.box_iou(a, b))


def frame_map(detections: Sequence[Mapping[str, Any]],
              ground_truth: Sequence[Mapping[str, Any]], iou_threshold: float = 0.5
              ) -> Tuple[float, Dict[Any, float]]:
  """Frame-mAP: per-frame box detections against ground-truth boxes, VOC AP per label.

  A detection is correct when it has the label of an unmatched ground-truth
  box of its video and frame and IoU >= iou_threshold with it; duplicates are
  false positives (see `_mean_ap` for the matching and `average_precision`).
  Labels without ground truth are left out; a label with ground truth and no
  detection has AP 0. (Gkioxari and Malik, "Finding action tubes", CVPR 2015.)

  Args:
    detections: dicts {'video', 'frame', 'label', 'score', 'box'}.
    ground_truth: dicts {'video', 'frame', 'label', 'box'}.
    iou_threshold: in (0, 1].
    Boxes are (x0, y0, x1, y1) with x1/y1 exclusive, as everywhere here.

  Returns:
    (mean AP over the labels with ground truth, NaN if none; {label: AP}).
  """
  iou_threshold = _check_iou_threshold(iou_threshold)

  def entries(records, keys, what):
    return [dict(label=r['label'], group=(r['video'], r['frame']), score=r.get('score'),
                 shape=_box(r['box'], f'{what}[{index}]'))
            for index, r in enumerate(_records(records, keys, what))]

  return _mean_ap(entries(detections, _DETECTION_KEYS, 'detections'),
                  entries(ground_truth, _FRAME_TRUTH_KEYS, 'ground_truth'),
                  _pair_iou, iou_threshold)


def tube_iou(tube: Mapping[int, Any], other: Mapping[int, Any]) -> float:
  """Spatio-temporal IoU of two tubes {frame: box}.

  The temporal IoU of their frame ranges (first to last frame, both included)
  times the mean box IoU over the frames both have (0 when they share none);
  Weinzaepfel, Harchaoui, Schmid, "Learning to track for spatio-temporal action
  localization", ICCV 2015.
  """
  first = max(min(tube), min(other))
  last = min(max(tube), max(other))
  if last < first:
    return 0.0
  span = max(max(tube), max(other)) - min(min(tube), min(other)) + 1
  shared = sorted(set(tube) & set(other))
  if not shared:
    return 0.0
  spatial = localize.box_iou(np.stack([tube[f] for f in shared]),
                             np.stack([other[f] for f in shared]))
  return (last - first + 1) / span * float(np.mean(spatial, dtype=np.float64))


def video_map(tubes: Sequence[Mapping[str, Any]], gt_tubes: Sequence[Mapping[str, Any]],
              iou_threshold: float = 0.5) -> Tuple[float, Dict[Any, float]]:
  """Video-mAP: action tubes against ground-truth tubes by `tube_iou`, VOC AP per label.

  Matching and AP as in `frame_map`, within each video; the field reports it
  at delta = iou_threshold 0.2 and 0.5 (e.g. Cheron et al., NeurIPS 2018).

  Args:
    tubes: dicts {'video', 'label', 'score', 'boxes': {frame: box}}.
    gt_tubes: dicts {'video', 'label', 'boxes': {frame: box}}.
    iou_threshold: in (0, 1].

  Returns:
    (mean AP over the labels with ground truth, NaN if none; {label: AP}).
  """
  iou_threshold = _check_iou_threshold(iou_threshold)

  def entries(records, keys, what):
    return [dict(label=r['label'], group=r['video'], score=r.get('score'),
                 shape=_tube_boxes(r, f'{what}[{index}]'))
            for index, r in enumerate(_records(records, keys, what))]

  return _mean_ap(entries(tubes, _TUBE_KEYS, 'tubes'),
                  entries(gt_tubes, _TUBE_TRUTH_KEYS, 'gt_tubes'), tube_iou, iou_threshold)


# ----------------------------------------------------------------------------
# Detections: frame-mAP and video-mAP from the collected clips.
# ----------------------------------------------------------------------------

def _frames(clips: Dict[str, Any], indices: Sequence[int]):
  """(position in indices, clip, t, (video, frame)) of the clips `indices`, each frame once.

  A video's last clip is loop-padded (`sampling.eval_frame_indices`): its
  repeated frames are left out, so no frame counts twice.
  """
  seen = set()
  for i, clip in enumerate(indices):
    video = int(clips['video_index'][clip])
    for t, frame in enumerate(np.asarray(clips['frame_index'][clip]).tolist()):
      if (video, frame) not in seen:
        seen.add((video, frame))
        yield i, clip, t, (video, frame)


def frame_detections(clips: Dict[str, Any], indices: Sequence[int], pred_boxes: Any
                     ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
  """`frame_map`'s detections and ground truth of the clips `indices`.

  A detection per frame with a predicted box, labelled with the clip's
  explained class and scored with the clip's probability of it; a
  ground-truth box per frame where one is present, labelled with the clip's
  label. Frames are numbered in their video (`clips['frame_index']`).

  Args:
    clips: `collect_clips`'s output.
    indices: the clips to use.
    pred_boxes: [len(indices), T, 4] boxes of those clips (-1 where none).
  """
  pred_boxes = np.asarray(pred_boxes, np.float32)
  has_box = loc_metrics.presence(pred_boxes)
  detections, truths = [], []
  for i, clip, t, (video, frame) in _frames(clips, indices):
    if has_box[i, t]:
      detections.append(dict(video=video, frame=frame, label=int(clips['target'][clip]),
                             score=float(clips['probability'][clip]), box=pred_boxes[i, t]))
    if clips['present'][clip][t]:
      truths.append(dict(video=video, frame=frame, label=int(clips['label'][clip]),
                         box=clips['boxes'][clip][t]))
  return detections, truths


def video_tubes(clips: Dict[str, Any], indices: Sequence[int], pred_boxes: Any
                ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
  """`video_map`'s tubes and ground-truth tubes of the clips `indices`.

  One tube per video from the predicted boxes of all its clips among
  `indices`, labelled with the class of the highest mean probability over
  those clips and scored with that mean; one ground-truth tube per video
  from its present boxes, labelled with its label. A video without any box
  (predicted, or ground truth) has no tube (respectively no ground truth).

  Args: as `frame_detections`.

  Raises:
    ValueError: the clips of a video disagree on its label.
  """
  pred_boxes = np.asarray(pred_boxes, np.float32)
  has_box = loc_metrics.presence(pred_boxes)
  boxes: Dict[int, Dict[int, np.ndarray]] = {}
  truth: Dict[int, Dict[int, np.ndarray]] = {}
  for i, clip, t, (video, frame) in _frames(clips, indices):
    if has_box[i, t]:
      boxes.setdefault(video, {})[frame] = pred_boxes[i, t]
    if clips['present'][clip][t]:
      truth.setdefault(video, {})[frame] = clips['boxes'][clip][t]
  tubes, gt_tubes = [], []
  video_index = np.asarray(clips['video_index'])[np.asarray(indices, int)]
  for video in np.unique(video_index).tolist():
    rows = np.asarray(indices, int)[video_index == video]
    labels = np.unique(np.asarray(clips['label'])[rows])
    if len(labels) != 1:
      raise ValueError(f'The clips of video {video} have labels {labels.tolist()}; a video has '
                       'one class: check the source.')
    mean = np.mean(np.asarray(clips['probabilities'])[rows], axis=0, dtype=np.float64)
    label = int(np.argmax(mean))
    if video in boxes:
      tubes.append(dict(video=video, label=label, score=float(mean[label]), boxes=boxes[video]))
    if video in truth:
      gt_tubes.append(dict(video=video, label=int(labels[0]), boxes=truth[video]))
  return tubes, gt_tubes


def detection_metrics(clips: Dict[str, Any], indices: Sequence[int], pred_boxes: Any,
                      frame_threshold: float, video_thresholds: Sequence[float]
                      ) -> Tuple[Dict[str, float], Dict[str, Dict[int, float]]]:
  """Frame-mAP and video-mAP of the clips `indices` with boxes `pred_boxes`.

  Returns:
    ({'frame_map@<t>', 'video_map@<t>' per video threshold: mean AP, NaN
    without ground truth}, {the same keys: {label: AP}}).
  """
  detections, truths = frame_detections(clips, indices, pred_boxes)
  tubes, gt_tubes = video_tubes(clips, indices, pred_boxes)
  means, per_class = {}, {}
  key = f'frame_map@{frame_threshold:g}'
  means[key], per_class[key] = frame_map(detections, truths, frame_threshold)
  for threshold in video_thresholds:
    key = f'video_map@{threshold:g}'
    means[key], per_class[key] = video_map(tubes, gt_tubes, threshold)
  return means, per_class
