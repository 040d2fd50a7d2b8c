"""Localization metrics on hand-made boxes and maps with known answers."""
import math

import numpy as np
import pytest

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
