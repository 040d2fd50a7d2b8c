"""Localization metrics on hand-made boxes and maps with known answers."""
import math

import numpy as np
import pytest

from gla_jax.explain import detection_map
from gla_jax.explain import loc_metrics
from gla_jax.explain import perturbation

ABSENT = [-1, -1, -1, -1]
GT = [0, 0, 10, 10]


def _frames():
  """Five frames: four present with known IoUs 1, 0.5, 1/3, 0 (no box), one absent."""
  gt = np.array([GT, GT, GT, GT, ABSENT], np.float32)
  pred = np.array([GT, [0, 0, 10, 5], [5, 0, 15, 10], ABSENT, [0, 0, 4, 4]], np.float32)
  return pred, gt


# --- frame metrics ------------------------------------------------------------

def test_localization_accuracy_and_mean_iou():
  pred, gt = _frames()
  # IoU 0.5 counts (>=); the missing box is a miss; the absent frame is not scored.
  assert loc_metrics.localization_accuracy(pred, gt) == pytest.approx(2 / 4)
  assert loc_metrics.localization_accuracy(pred, gt, iou_threshold=0.3) == pytest.approx(3 / 4)
  assert loc_metrics.mean_iou(pred, gt) == pytest.approx((1 + 0.5 + 1 / 3 + 0) / 4)
  # An explicit `present` that agrees with the boxes gives the same; batches work.
  present = np.array([1, 1, 1, 1, 0], bool)
  assert loc_metrics.localization_accuracy(pred[None], gt[None], present[None]) == 0.5


def test_presence_errors_and_empty():
  pred, gt = _frames()
  with pytest.raises(ValueError, match='marked present but'):
    loc_metrics.localization_accuracy(pred, gt, np.ones(5, bool))
  with pytest.raises(ValueError, match='one flag per frame'):
    loc_metrics.mean_iou(pred, gt, np.ones(4, bool))
  nothing = np.full((3, 4), -1, np.float32)
  assert math.isnan(loc_metrics.localization_accuracy(nothing, nothing))


def test_pointing_game():
  attention = np.zeros((4, 20, 20), np.float32)
  gt = np.array([[2, 2, 8, 8], [2, 2, 8, 8], [2, 2, 8, 8], [2, 2, 8, 8]], np.float32)
  attention[0, 7, 7] = 1.0          # last pixel inside (x1/y1 exclusive): hit
  attention[1, 5, 8] = 1.0          # first column outside: centre 0.5 px away
  attention[2, 11, 11] = 1.0        # centre (11.5, 11.5): 3.5 px from the corner each way
  # frame 3 is constant: no peak, a miss at any tolerance.
  np.testing.assert_array_equal(loc_metrics.pointing_hits(attention, gt), [1, 0, 0, 0])
  np.testing.assert_array_equal(loc_metrics.pointing_hits(attention, gt, tolerance=0.5),
                                [1, 1, 0, 0])
  dist = math.hypot(3.5, 3.5)
  np.testing.assert_array_equal(loc_metrics.pointing_hits(attention, gt, tolerance=dist),
                                [1, 1, 1, 0])
  assert loc_metrics.pointing_game(attention, gt) == pytest.approx(0.25)
  assert loc_metrics.pointing_game(attention, gt, tolerance=15) == pytest.approx(0.75)
  # Frames where the action is absent are not scored.
  gt[1:] = -1
  assert loc_metrics.pointing_game(attention, gt) == pytest.approx(1.0)
  with pytest.raises(ValueError, match='tolerance'):
    loc_metrics.pointing_game(attention, gt, tolerance=-1)


# --- per-clip results and summaries -----------------------------------------------------

def _blob_clips(offsets, size=20, frames=4):
  """Clips with a GT box per frame and an attention blob shifted by `offsets[i]` px."""
  attention = np.zeros((len(offsets), frames, size, size), np.float32)
  boxes = np.zeros((len(offsets), frames, 4), np.float32)
  for i, offset in enumerate(offsets):
    boxes[i] = [4, 4, 10, 10]
    attention[i, :, 4 + offset:10 + offset, 4:10] = 0.3   # halo, the box's size
    attention[i, :, 6 + offset:8 + offset, 6:8] = 1.0     # core
  return attention, boxes


def test_clip_metrics_and_summarize():
  pred, gt = _frames()
  attention = np.zeros((5, 12, 12), np.float32)
  attention[:, 3, 3] = 1.0                   # inside GT on the 4 present frames
  first = loc_metrics.clip_metrics(pred, gt, attention=attention, pred_segments=[(0, 2)])
  assert first == dict(iou_threshold=0.5, present_frames=4, correct_frames=2,
                       iou_sum=pytest.approx(1 + 0.5 + 1 / 3), pointing_hits=4,
                       temporal_iou=pytest.approx(0.5))       # GT segment: runs of present
  second = loc_metrics.clip_metrics(gt, gt, gt_segments=[(0, 2)], pred_segments=[(0, 4)])
  assert second['temporal_iou'] == pytest.approx(0.5)
  summary = loc_metrics.summarize([first, second])
  assert summary['loc_acc@0.5'] == pytest.approx(6 / 8)          # pooled over frames
  assert summary['mean_iou'] == pytest.approx((1 + 0.5 + 1 / 3 + 4) / 8)
  assert summary['pointing_game'] == pytest.approx(1.0)          # only clips with attention
  assert summary['temporal_iou'] == pytest.approx(0.5)
  assert math.isnan(summary['deletion_auc']) and math.isnan(summary['insertion_auc'])
  assert summary['num_clips'] == 2 and summary['num_present_frames'] == 8
  with pytest.raises(ValueError, match='mix IoU thresholds'):
    loc_metrics.summarize([first, loc_metrics.clip_metrics(pred, gt, iou_threshold=0.7)])


def test_evaluate_batch():
  attention, boxes = _blob_clips([0, 6])              # clip 1's blob is off by 6 px in y
  present = np.ones(boxes.shape[:2], bool)
  curve = perturbation.Curve(np.array([0.0, 1.0]), np.array([1.0, 0.0]), 0.5)
  results = loc_metrics.evaluate(attention, dict(boxes=boxes, present=present), threshold=0.2,
                                 curves=[dict(deletion=curve, insertion=curve)] * 2)
  assert [r['correct_frames'] for r in results] == [4, 0]
  assert [r['pointing_hits'] for r in results] == [4, 0]
  assert [r['temporal_iou'] for r in results] == [1.0, 1.0]
  summary = loc_metrics.summarize(results)
  assert summary['loc_acc@0.5'] == 0.5 and summary['deletion_auc'] == 0.5
  with pytest.raises(ValueError, match='mapping with "boxes"'):
    loc_metrics.evaluate(attention, boxes)


def test_threshold_sweep_picks_on_held_out_and_reports_evaluation():
  good, boxes = _blob_clips([0, 0, 0])      # the halo is the GT box, the core is smaller
  wrong, _ = _blob_clips([10, 10, 10])      # everything 10 px below the box
  thresholds = (0.1, 0.2, 0.3, 0.5, 0.9)
  report = loc_metrics.threshold_sweep(
      dict(good=good[:2], wrong=wrong[:2]), dict(boxes=boxes[:2]),
      dict(good=good[2:], wrong=wrong[2:]), dict(boxes=boxes[2:]), thresholds=thresholds)
  # Up to 0.3 of the max the mask is the halo = the GT box; above, the 2 x 2
  # core (IoU 4/36). Ties go to the lowest threshold.
  assert report['good']['threshold'] == 0.1
  assert report['good']['held_out_loc_acc'] == {0.1: 1.0, 0.2: 1.0, 0.3: 1.0, 0.5: 0.0,
                                                 0.9: 0.0}
  assert report['good']['summary']['loc_acc@0.5'] == 1.0
  assert report['good']['summary']['num_clips'] == 1
  assert report['wrong']['threshold'] == 0.1
  assert report['wrong']['summary']['loc_acc@0.5'] == 0.0
  with pytest.raises(ValueError, match='every method'):
    loc_metrics.threshold_sweep(dict(good=good), dict(boxes=boxes), dict(other=good),
                                dict(boxes=boxes))


# --- frame-mAP and video-mAP ---------------------------------------------------------

BOX = [0, 0, 10, 10]
HALF = [0, 0, 10, 5]          # IoU 0.5 with BOX
THIRD = [5, 0, 15, 10]        # IoU 1/3 with BOX


def _detection(video, frame, label, score, box=BOX):
  return dict(video=video, frame=frame, label=label, score=score, box=box)


def _truth(video, frame, label, box=BOX):
  return dict(video=video, frame=frame, label=label, box=box)


def test_average_precision_by_hand():
  # Ranked TP, FP, TP, FP, TP for 4 instances: precision 1, 1/2, 2/3, 2/4, 3/5 at
  # recall 1/4, 1/4, 2/4, 2/4, 3/4; raised to the best to the right: 1, 2/3, 3/5.
  ap = detection_map.average_precision([True, False, True, False, True], 4)
  assert ap == pytest.approx(0.25 * 1 + 0.25 * 2 / 3 + 0.25 * 3 / 5)
  # A later, better precision lifts the earlier recall level: 1/2 at recall 1/2 -> 2/3.
  assert detection_map.average_precision([False, True, True], 2) == pytest.approx(2 / 3)
  assert detection_map.average_precision([False, False], 3) == 0.0
  with pytest.raises(ValueError, match='at least one ground-truth'):
    detection_map.average_precision([True], 0)
  with pytest.raises(ValueError, match='at most one detection'):
    detection_map.average_precision([True, True], 1)


def test_frame_map_by_hand():
  truth = [_truth('a', 0, 1), _truth('a', 1, 1), _truth('b', 0, 1), _truth('a', 0, 2),
           _truth('b', 3, 3)]
  detections = [
      _detection('a', 0, 1, 0.9),              # TP
      _detection('a', 0, 1, 0.8),              # duplicate of a matched box: FP
      _detection('b', 0, 1, 0.7, HALF),        # TP at IoU 0.5 (>=)
      _detection('a', 1, 1, 0.6, THIRD),       # IoU 1/3: FP at 0.5, TP at 0.3
      _detection('c', 0, 1, 0.95),             # no truth in that video: FP
      _detection('a', 1, 2, 0.5),              # label 2's box is in frame 0, not 1: FP
      _detection('a', 0, 2, 0.4),              # TP
      _detection('z', 0, 7, 0.9)]              # label 7 has no truth: left out
  mean, aps = detection_map.frame_map(detections, truth)
  # Label 1 ranked: FP(0.95) TP(0.9) FP(0.8) TP(0.7) FP(0.6), 3 instances.
  label_1 = 1 / 3 * 1 / 2 + 1 / 3 * 2 / 4       # 1/2 at recall 1/3 and at 2/3, none at 1
  label_2 = 1 / 2                              # FP then TP, 1 instance
  assert aps == pytest.approx({1: label_1, 2: label_2, 3: 0.0})   # 3: truth, no detection
  assert mean == pytest.approx((label_1 + label_2) / 3)
  # At 0.3 the third-overlap box also matches: FP TP FP TP TP, precision 3/5 at full
  # recall lifts the two earlier recall levels (1/2 each) to 3/5.
  aps = detection_map.frame_map(detections, truth, iou_threshold=0.3)[1]
  assert aps[1] == pytest.approx(3 / 5)
  empty = detection_map.frame_map(detections, [])
  assert math.isnan(empty[0]) and empty[1] == {}


def test_frame_map_matches_the_best_box_and_keeps_ties_in_order():
  # Two instances in one frame: the detection takes the one it overlaps most.
  truth = [_truth('a', 0, 1, THIRD), _truth('a', 0, 1, BOX)]
  detections = [_detection('a', 0, 1, 0.9, BOX), _detection('a', 0, 1, 0.8, [4, 0, 14, 10])]
  # The first takes BOX (IoU 1, THIRD 1/3); the second overlaps BOX 60/140 and THIRD 90/110,
  # so it takes THIRD: both are found.
  assert detection_map.frame_map(detections, truth)[1] == {1: 1.0}
  # Equal scores keep their input order: the miss first gives 1/2 at recall 1, not 1.
  truth = [_truth('a', 0, 1)]
  tied = [_detection('a', 0, 1, 0.5, [50, 50, 60, 60]), _detection('a', 0, 1, 0.5)]
  assert detection_map.frame_map(tied, truth)[1][1] == pytest.approx(0.5)
  assert detection_map.frame_map(tied[::-1], truth)[1][1] == pytest.approx(1.0)


def test_tube_iou_and_video_map_by_hand():
  gt = {f: BOX for f in range(2, 6)}                       # frames 2..5
  early = {f: BOX for f in range(0, 4)}                    # 0..3: temporal 2/6, spatial 1
  half = {f: HALF for f in range(2, 6)}                    # same frames, IoU 0.5 each
  gappy = {2: BOX, 5: THIRD}                               # range 2..5, frames 2 and 5 shared
  assert detection_map.tube_iou(early, gt) == pytest.approx(2 / 6)
  assert detection_map.tube_iou(half, gt) == pytest.approx(0.5)
  assert detection_map.tube_iou(gappy, gt) == pytest.approx((1 + 1 / 3) / 2)
  assert detection_map.tube_iou({0: BOX, 1: BOX}, gt) == 0.0              # disjoint in time
  assert detection_map.tube_iou({1: BOX, 7: BOX}, {3: BOX, 4: BOX}) == 0.0  # overlap, no frame shared
  gt_tubes = [dict(video='a', label=0, boxes=gt), dict(video='b', label=0, boxes=gt),
              dict(video='c', label=1, boxes=gt)]
  tubes = [dict(video='a', label=0, score=0.9, boxes=early),
           dict(video='b', label=0, score=0.8, boxes=half),
           dict(video='a', label=0, score=0.7, boxes=gt)]
  # delta 0.2: both first tubes match (0.33, 0.5), the third duplicates video a: FP.
  assert detection_map.video_map(tubes, gt_tubes, 0.2) == (pytest.approx(0.5), {0: 1.0, 1: 0.0})
  # delta 0.5: FP (0.33) TP (0.5) TP -> 1/2 at recall 1/2, 2/3 at recall 1.
  mean, aps = detection_map.video_map(tubes, gt_tubes, 0.5)
  assert aps[0] == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3) and mean == pytest.approx(aps[0] / 2)


@pytest.mark.parametrize('call, message', [
    (lambda: detection_map.frame_map([dict(video=0, frame=0, label=0, box=BOX)], []),
     r"detections\[0\] lacks \['score'\]"),
    (lambda: detection_map.frame_map([], [_truth(0, 0, 0, [5, 5, 5, 9])]),
     r'ground_truth\[0\]: box \[5.0, 5.0, 5.0, 9.0\] has no area'),
    (lambda: detection_map.frame_map([_detection(0, 0, 0, 0.5, [1, 2, 3])], []),
     'must be 4 finite numbers'),
    (lambda: detection_map.frame_map([_detection(0, 0, 0, math.nan)], []), 'finite number'),
    (lambda: detection_map.frame_map([], [], iou_threshold=0), r'in \(0, 1\]'),
    (lambda: detection_map.video_map([], [], iou_threshold=1.5), r'in \(0, 1\]'),
    (lambda: detection_map.frame_map(_truth(0, 0, 0), []), 'sequence of dicts'),
    (lambda: detection_map.video_map([dict(video=0, label=0, score=1.0, boxes={})], []),
     r'tubes\[0\]: "boxes" must be a non-empty dict'),
    (lambda: detection_map.video_map([], [dict(video=0, label=0, boxes={0.5: BOX})]),
     'must be an integer frame index'),
    (lambda: detection_map.video_map([], [dict(video=0, boxes={0: BOX})]),
     r"gt_tubes\[0\] lacks \['label'\]"),
])
def test_detection_metrics_refuse_malformed_input(call, message):
  with pytest.raises(ValueError, match=message):
    call()


# An independent implementation: plain Python IoU, matching and AP as the mean over the
# true positives of the best precision at or after each (the all-point envelope).

def _iou(a, b):
  iw = min(a[2], b[2]) - max(a[0], b[0])
  ih = min(a[3], b[3]) - max(a[1], b[1])
  inter = max(iw, 0) * max(ih, 0)
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _reference_map(detections, truths, same, overlap, threshold):
  aps = {}
  for label in {t['label'] for t in truths}:
    gt = [t for t in truths if t['label'] == label]
    used = [False] * len(gt)
    ranked = sorted((d for d in detections if d['label'] == label), key=lambda d: -d['score'])
    hits = []
    for d in ranked:
      candidates = [(overlap(d, g), k) for k, g in enumerate(gt)
                    if same(d, g) and not used[k] and overlap(d, g) >= threshold]
      if candidates:
        best = max(candidates, key=lambda c: (c[0], -c[1]))[1]
        used[best] = True
      hits.append(bool(candidates))
    precision = [sum(hits[:k + 1]) / (k + 1) for k in range(len(hits))]
    total = 0.0
    for k in range(len(hits)):
      if hits[k]:
        best_after = 0.0
        for j in range(k, len(hits)):
          best_after = max(best_after, precision[j])
        total += best_after
    aps[label] = total / len(gt)
  return sum(aps.values()) / len(aps), aps


def _random_box(rng, size=20):
  x0, y0 = rng.integers(0, size - 2, 2)
  return [int(x0), int(y0), int(x0 + rng.integers(2, size - x0 + 1)),
          int(y0 + rng.integers(2, size - y0 + 1))]


@pytest.mark.parametrize('seed', range(6))
def test_frame_map_against_an_independent_implementation(seed):
  rng = np.random.default_rng(seed)
  truth = [_truth(int(rng.integers(3)), int(rng.integers(4)), int(rng.integers(3)),
                  _random_box(rng)) for _ in range(25)]
  # Detections near the truth and elsewhere; distinct scores (the reference sorts stably too).
  detections = [_detection(t['video'], t['frame'], t['label'] if rng.random() < 0.8 else 0,
                           0.0, [v + int(rng.integers(-2, 3)) for v in t['box']])
                for t in truth if rng.random() < 0.7]
  detections += [_detection(int(rng.integers(3)), int(rng.integers(4)), int(rng.integers(3)),
                            0.0, _random_box(rng)) for _ in range(20)]
  for d, score in zip(detections, rng.permutation(len(detections))):
    d['score'] = float(score) / len(detections)
    d['box'] = [min(max(v, 0), 25) for v in d['box']]
    if d['box'][2] <= d['box'][0] or d['box'][3] <= d['box'][1]:
      d['box'] = BOX
  for threshold in (0.3, 0.5):
    expected = _reference_map(
        detections, truth, lambda d, g: (d['video'], d['frame']) == (g['video'], g['frame']),
        lambda d, g: _iou(d['box'], g['box']), threshold)
    mean, aps = detection_map.frame_map(detections, truth, threshold)
    assert mean == pytest.approx(expected[0])
    assert aps == pytest.approx(expected[1])


def _reference_tube_iou(a, b):
  start, end = max(min(a), min(b)), min(max(a), max(b))
  if end < start:
    return 0.0
  shared = [f for f in a if f in b]
  if not shared:
    return 0.0
  temporal = (end - start + 1) / (max(max(a), max(b)) - min(min(a), min(b)) + 1)
  return temporal * sum(_iou(a[f], b[f]) for f in shared) / len(shared)


@pytest.mark.parametrize('seed', range(4))
def test_video_map_against_an_independent_implementation(seed):
  rng = np.random.default_rng(100 + seed)

  def tube(first):
    length = int(rng.integers(1, 8))
    return {f: _random_box(rng) for f in range(first, first + length) if rng.random() < 0.8} or {
        first: _random_box(rng)}

  def near(boxes):
    shift = int(rng.integers(-1, 2))
    return {f + shift: [min(max(v + int(rng.integers(-1, 2)), 0), 20) for v in box[:2]]
            + [min(max(v + int(rng.integers(-1, 2)), 1), 21) for v in box[2:]]
            for f, box in boxes.items() if rng.random() < 0.9} or {0: BOX}

  gt_tubes = [dict(video=v, label=int(rng.integers(3)), boxes=tube(int(rng.integers(5))))
              for v in range(8)]
  tubes = []
  for score in rng.permutation(20):
    if rng.random() < 0.6:                    # near a ground-truth tube, mostly its label
      gt = gt_tubes[int(rng.integers(8))]
      tubes.append(dict(video=gt['video'], label=gt['label'] if rng.random() < 0.8 else 0,
                        score=float(score) / 20, boxes=near(gt['boxes'])))
    else:
      tubes.append(dict(video=int(rng.integers(8)), label=int(rng.integers(3)),
                        score=float(score) / 20, boxes=tube(int(rng.integers(5)))))
  for tube_boxes in [t['boxes'] for t in tubes]:
    for f, box in tube_boxes.items():           # keep every box non-empty after the jitter
      if box[2] <= box[0] or box[3] <= box[1]:
        tube_boxes[f] = BOX
  for threshold in (0.2, 0.5):
    expected = _reference_map(tubes, gt_tubes, lambda d, g: d['video'] == g['video'],
                              lambda d, g: _reference_tube_iou(d['boxes'], g['boxes']),
                              threshold)
    mean, aps = detection_map.video_map(tubes, gt_tubes, threshold)
    assert mean == pytest.approx(expected[0]) and aps == pytest.approx(expected[1])
    for d in tubes:
      for g in gt_tubes:
        assert detection_map.tube_iou(d['boxes'], g['boxes']) == pytest.approx(
            _reference_tube_iou(d['boxes'], g['boxes']))
