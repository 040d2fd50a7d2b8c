"""The comparison's pieces on hand-made numbers: the clip split and the verdict."""
import math

import numpy as np
import pytest

from gla_jax.explain import comparison
from gla_jax.explain import detection_map
from gla_jax.explain import loc_metrics

METRICS = ('loc_acc@0.5', 'mean_iou', 'temporal_iou', 'pointing_game', 'deletion_auc',
           'insertion_auc', 'frame_map@0.5', 'video_map@0.2', 'video_map@0.5')
SETTINGS = dict(iou_threshold=0.5, frame_map_threshold=0.5, video_map_thresholds=(0.2, 0.5))


def test_split_is_seeded_and_both_parts_have_clips():
  held, reported = loc_metrics.split_clips(np.arange(10), 0.5, seed=3)
  again = loc_metrics.split_clips(np.arange(10), 0.5, seed=3)
  np.testing.assert_array_equal(held, again[0])
  assert len(held) == 5 and sorted(np.concatenate([held, reported]).tolist()) == list(range(10))
  assert [len(part) for part in loc_metrics.split_clips(np.arange(2), 0.9, seed=0)] == [1, 1]
  with pytest.raises(ValueError, match='at least 2'):
    loc_metrics.split_clips(np.arange(1), 0.5, seed=0)
  with pytest.raises(ValueError, match='at least 2 videos'):
    loc_metrics.split_clips(np.array([4, 4, 4]), 0.5, seed=0)
  with pytest.raises(ValueError, match='held_out_fraction'):
    loc_metrics.split_clips(np.arange(10), 1.0, seed=0)


@pytest.mark.parametrize('seed', range(5))
def test_split_keeps_every_video_on_one_side(seed):
  # 7 videos of 1-4 clips, in the order eval batches give them.
  video_index = np.array([3, 3, 3, 5, 8, 8, 9, 9, 9, 9, 11, 12, 12, 20])
  held, reported = loc_metrics.split_clips(video_index, 0.5, seed=seed)
  assert sorted(np.concatenate([held, reported]).tolist()) == list(range(len(video_index)))
  assert not set(video_index[held]) & set(video_index[reported])   # no video on both sides
  assert len(set(video_index[held])) == 4                             # round(7 * 0.5) videos
  np.testing.assert_array_equal(held, np.sort(held))


def test_collect_clips_takes_the_rows_of_the_mask(monkeypatch):
  """A padding row in the middle (an unreadable video) is left out; real rows after it are kept."""

  def fake_method_maps(model, variables, video, mean, std, pooling, normalization, **options):
    del model, variables, mean, std, pooling, normalization, options
    maps = {'gradcam:layer4': video[..., 0]}                  # a row's map names its clip
    logits = np.stack([np.zeros(len(video)), video[:, 0, 0, 0, 0]], axis=1)
    return maps, logits, np.ones(len(video), np.int64)

  monkeypatch.setattr(comparison, 'method_maps', fake_method_maps)

  def batch(video_index, mask):
    video_index, mask = np.array(video_index), np.array(mask)
    video = np.broadcast_to(video_index[:, None, None, None, None].astype(np.uint8),
                            (len(mask), 2, 3, 3, 3)) * mask[:, None, None, None, None]
    return dict(video=video, mask=mask, video_index=video_index, label=np.where(mask, 1, 0),
                boxes=np.full((len(mask), 2, 4), 1.0), present=np.ones((len(mask), 2), bool),
                frame_index=video_index[:, None] * 10 + np.arange(2))

  batches = [batch([0, -1, 2, 2], [True, False, True, True]),   # video 1 unreadable
             batch([3, 4, -1, -1], [True, True, False, False]),  # the last batch's padding
             batch([5, 5, 5, 5], [True] * 4)]
  clips = comparison.collect_clips(None, None, batches, wanted=6, batch_size=4,
                                   mean=(0.0,) * 3, std=(1.0,) * 3)
  np.testing.assert_array_equal(clips['video_index'], [0, 2, 2, 3, 4, 5])
  np.testing.assert_array_equal(clips['label'], [1] * 6)
  np.testing.assert_array_equal(clips['maps']['gradcam:layer4'][:, 0, 0, 0], [0, 2, 2, 3, 4, 5])
  assert clips['video'].shape == (6, 2, 3, 3, 3) and clips['boxes'].shape == (6, 2, 4)
  assert clips['video'].dtype == np.uint8                      # kept as drawn, 4x smaller
  np.testing.assert_array_equal(clips['frame_index'][:, 1], [1, 21, 21, 31, 41, 51])
  # The whole softmax, and the explained class's probability (class 1) from it.
  logits = np.stack([np.zeros(6), [0, 2, 2, 3, 4, 5]], axis=1)
  softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  np.testing.assert_allclose(clips['probabilities'], softmax, rtol=1e-6)
  assert clips['probabilities'].dtype == np.float32
  np.testing.assert_allclose(clips['probability'], softmax[:, 1], rtol=1e-6)


def test_verdict_from_hand_made_numbers():
  def entry(held_out, loc_acc, deletion):
    summary = dict.fromkeys(METRICS, 0.5)
    summary.update({'loc_acc@0.5': loc_acc, 'deletion_auc': deletion,
                    'insertion_auc': math.nan, 'num_clips': 4, 'num_present_frames': 30})
    return dict(threshold=0.5, held_out_loc_acc={0.5: held_out}, summary=summary)

  methods = {comparison.BASELINE: entry(0.9, 0.25, 0.2), 'global-local:mean': entry(0.1, 0.9, 0.1),
             'global-local:max': entry(0.6, 0.5, 0.3), 'global-local:product': entry(0.6, 1, 0)}
  best, text = comparison.verdict(methods, SETTINGS)
  assert best == 'global-local:max'          # best held-out accuracy; the first on ties
  assert 'beats last-layer Grad-CAM on localization accuracy: loc acc@0.5 0.500 vs 0.250 ' \
         '(+0.250)' in text
  assert 'worse on deletion AUC (lower better) 0.300 vs 0.200 (+0.100)' in text
  assert 'equal on mean IoU 0.500 vs 0.500' in text
  assert 'frame-mAP@0.5 0.500 vs 0.500 (+0.000); video-mAP@0.2 0.500 vs 0.500' in text
  assert 'Not measured: insertion AUC' in text
  assert 'constant' not in text
  methods[comparison.BASELINE]['constant_maps'] = 0.5
  assert 'Last-layer Grad-CAM is constant, so it gives no box, on 50% of the clips' in \
      comparison.verdict(methods, SETTINGS)[1]
  methods['global-local:max']['summary']['loc_acc@0.5'] = 0.1
  assert 'does not beat' in comparison.verdict(methods, SETTINGS)[1]


def test_verdict_of_another_upsampling_and_which_localizes_better():
  """Each up-sampling's fusion against its own baseline; the sentence's numbers by hand."""
  def entry(held_out, loc_acc):
    summary = dict.fromkeys(METRICS, 0.5)
    summary.update({'loc_acc@0.5': loc_acc, 'num_clips': 4, 'num_present_frames': 30})
    return dict(threshold=0.5, held_out_loc_acc={0.5: held_out}, summary=summary)

  own = {comparison.BASELINE: 0.2, 'global-local:mean': 0.4, 'global-local:max': 0.3,
         'global-local:product': 0.1, 'layercam:mean': math.nan}
  other = {comparison.BASELINE: 0.3, 'global-local:mean': 0.1, 'global-local:max': 0.6,
           'global-local:product': 0.3, 'layercam:mean': 0.9}
  methods = {name: entry(held_out=value, loc_acc=value) for name, value in own.items()}
  methods.update({f'{name}@receptive_field': entry(held_out=value, loc_acc=value)
                  for name, value in other.items()})
  best, text = comparison.verdict(methods, SETTINGS, '@receptive_field')
  assert best == 'global-local:max@receptive_field'
  assert text.startswith('With `receptive_field` up-sampling, the best global-local aggregation '
                         'on the held-out clips is the max of the stage maps '
                         '(`global-local:max@receptive_field`')
  assert 'last-layer Grad-CAM `gradcam:layer4@receptive_field`' in text
  assert 'loc acc@0.5 0.600 vs 0.300 (+0.300)' in text
  assert comparison.verdict(methods, SETTINGS)[0] == 'global-local:mean'
  # layercam has no accuracy under half_pixel: 4 pairs, receptive_field better for 3, worse for 1.
  ours, theirs = np.mean([0.2, 0.4, 0.3, 0.1]), np.mean([0.3, 0.1, 0.6, 0.3])
  assert comparison.upsampling_sentence(methods, 0.5, 'half_pixel', 'receptive_field') == (
      'Up-sampling: `receptive_field` up-sampling localizes better than `half_pixel`: mean loc '
      f'acc@0.5 over the 4 methods {theirs:.3f} vs {ours:.3f} ({theirs - ours:+.3f}); '
      '`receptive_field` is better for 3 of them, worse for 1.')
  for name in own:
    methods[f'{name}@receptive_field']['summary']['loc_acc@0.5'] = own[name]
  assert 'localize equally well' in comparison.upsampling_sentence(methods, 0.5, 'half_pixel',
                                                                   'receptive_field')


def test_deletion_works_on_the_clips_normalised(monkeypatch):
  """The uint8 clip is normalised first: deletion's 'zeros' baseline is the mean colour."""
  mean, std = (100.0, 110.0, 120.0), (50.0, 60.0, 70.0)
  video = np.random.default_rng(0).integers(0, 256, (1, 2, 3, 3, 3), np.uint8)
  scored = []

  def score_fn(clips):
    scored.append(np.asarray(clips))
    return np.zeros(len(clips))

  monkeypatch.setattr(comparison, 'target_probability', lambda model, variables, target: score_fn)
  clips = dict(video=video, target=np.array([0]),
               maps={'gradcam:layer4': np.random.default_rng(1).random((1, 2, 3, 3))})
  curves = comparison.perturbation_curves(None, None, clips, [0], steps=2, batch_size=3,
                                          mean=mean, std=std)
  assert len(curves['gradcam:layer4']) == 1
  deletion = scored[0]                  # fractions 0, 0.5, 1 of the voxels deleted
  normalised = (video[0].astype(np.float64) - np.asarray(mean)) / np.asarray(std)
  np.testing.assert_allclose(deletion[0], normalised, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(deletion[2], np.zeros_like(deletion[2]))


@pytest.mark.parametrize('shape, dtype, error, message', [
    ((1, 2, 3, 3, 3), np.float32, TypeError, r'method_maps takes uint8 RGB clips.*float32'),
    ((2, 3, 3, 3), np.uint8, ValueError, r'one clip.*video\[None\]'),
])
def test_method_maps_refuses_clips_it_cannot_normalise(shape, dtype, error, message):
  with pytest.raises(error, match=message):
    comparison.method_maps(None, None, np.zeros(shape, dtype), (0.0,) * 3, (1.0,) * 3)


BOX, HALF, NONE = [0, 0, 10, 10], [0, 0, 10, 5], [-1, -1, -1, -1]


def _detection_clips():
  """Video 0: clips 0 and 1 (the second loop-padded: frames 4, 5, 4, 5); video 1: clip 2."""
  probabilities = np.float32([[0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
  target = np.array([1, 0, 0])
  clips = dict(video_index=np.array([0, 0, 1]), label=np.array([1, 1, 0]), target=target,
               frame_index=np.array([[0, 1, 2, 3], [4, 5, 4, 5], [0, 1, 2, 3]]),
               probabilities=probabilities, probability=probabilities[np.arange(3), target],
               present=np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 1, 1]], bool))
  clips['boxes'] = np.where(clips['present'][..., None], np.float32(BOX), np.float32(NONE))
  pred = np.float32([[BOX, BOX, NONE, HALF], [BOX, BOX, BOX, BOX], [NONE, NONE, BOX, BOX]])
  return clips, pred


def test_frame_detections_number_frames_in_their_video_once():
  clips, pred = _detection_clips()
  detections, truths = detection_map.frame_detections(clips, [0, 1, 2], pred)
  # Explained class and its probability; the padded frames 4, 5 of clip 1 once.
  assert [(d['video'], d['frame'], d['label'], round(d['score'], 6)) for d in detections] == [
      (0, 0, 1, 0.8), (0, 1, 1, 0.8), (0, 3, 1, 0.8), (0, 4, 0, 0.6), (0, 5, 0, 0.6),
      (1, 2, 0, 0.7), (1, 3, 0, 0.7)]
  np.testing.assert_array_equal(detections[2]['box'], HALF)
  assert [(t['video'], t['frame'], t['label']) for t in truths] == [
      (0, 0, 1), (0, 1, 1), (0, 2, 1), (0, 3, 1), (0, 4, 1), (1, 1, 0), (1, 2, 0), (1, 3, 0)]
  detections, truths = detection_map.frame_detections(clips, [2], pred[2:])
  assert [d['frame'] for d in detections] == [2, 3] and len(truths) == 3


def test_video_tubes_label_by_the_mean_probability():
  clips, pred = _detection_clips()
  tubes, gt_tubes = detection_map.video_tubes(clips, [0, 1, 2], pred)
  # Video 0: mean (0.4, 0.6) -> class 1 at 0.6, although clip 1 explained class 0.
  assert [(t['video'], t['label'], round(t['score'], 6), sorted(t['boxes'])) for t in tubes] == [
      (0, 1, 0.6, [0, 1, 3, 4, 5]), (1, 0, 0.7, [2, 3])]
  assert [(t['video'], t['label'], sorted(t['boxes'])) for t in gt_tubes] == [
      (0, 1, [0, 1, 2, 3, 4]), (1, 0, [1, 2, 3])]
  bad = dict(clips, label=np.array([1, 0, 0]))
  with pytest.raises(ValueError, match=r'video 0 have labels \[0, 1\]'):
    detection_map.video_tubes(bad, [0, 1, 2], pred)
  # A video without any predicted box has no tube; its ground truth stays.
  tubes, gt_tubes = detection_map.video_tubes(clips, [2], np.full((1, 4, 4), -1, np.float32))
  assert tubes == [] and len(gt_tubes) == 1


def test_detection_metrics_by_hand():
  clips, pred = _detection_clips()
  means, per_class = detection_map.detection_metrics(clips, [0, 1, 2], pred, 0.5, (0.2, 0.7))
  # Frames: class 1 finds 3 of 5 boxes at precision 1 (HALF has IoU 0.5): AP 3/5; class 0
  # ranks 0.7, 0.7 (video 1: TP TP) before 0.6, 0.6 (video 0 has no class-0 box: FP): 2/3.
  assert per_class['frame_map@0.5'] == pytest.approx({0: 2 / 3, 1: 3 / 5})
  assert means['frame_map@0.5'] == pytest.approx((2 / 3 + 3 / 5) / 2)
  # Tubes: video 0 overlaps 5/6 in time x mean IoU (1 + 1 + 0.5 + 1) / 4 = 0.729; video 1
  # 2/3 x 1. Both above 0.2; at 0.7 only video 0's.
  assert means['video_map@0.2'] == 1.0
  assert per_class['video_map@0.7'] == {0: 0.0, 1: 1.0} and means['video_map@0.7'] == 0.5
  assert set(means) == {'frame_map@0.5', 'video_map@0.2', 'video_map@0.7'}


def test_metric_columns_name_the_detection_metrics():
  keys = [key for key, _, _ in comparison.metric_columns(SETTINGS)]
  assert keys == list(METRICS)
  assert comparison.metric_columns(SETTINGS)[-2][1] == 'video-mAP@0.2'
  assert len(comparison.metric_columns(dict(iou_threshold=0.3))) == 6    # a result without them
