"""Localization: contour boxes, segments, overlaps and stitching on hand-made maps."""
import jax
import numpy as np
import pytest

from gla_jax import explain
from gla_jax import models
from gla_jax.explain import localize

ABSENT = [-1, -1, -1, -1]


# --- box IoU ------------------------------------------------------------------

def test_box_iou_known_values():
  a = np.array([0, 0, 10, 10], np.float32)
  assert localize.box_iou(a, a) == pytest.approx(1.0)
  assert localize.box_iou(a, [10, 0, 20, 10]) == 0.0          # touching edges: x1 exclusive
  assert localize.box_iou(a, [20, 20, 30, 30]) == 0.0
  assert localize.box_iou(a, [0, 0, 10, 5]) == pytest.approx(0.5)      # half of a
  assert localize.box_iou(a, [5, 0, 15, 10]) == pytest.approx(50 / 150)
  # One pixel: (0, 0, 1, 1) has area 1 under the exclusive convention.
  assert localize.box_iou([0, 0, 1, 1], [0, 0, 2, 1]) == pytest.approx(0.5)


def test_box_iou_absent_and_broadcast():
  a = np.array([0, 0, 10, 10], np.float32)
  assert localize.box_iou(a, ABSENT) == 0.0
  assert localize.box_iou(ABSENT, ABSENT) == 0.0               # undefined -> 0, documented
  assert localize.box_iou(a, [3, 3, 3, 8]) == 0.0              # zero width
  pred = np.array([[a, ABSENT], [a, [0, 0, 10, 5]]])           # [2, 2, 4]
  iou = localize.box_iou(pred, a)
  assert iou.shape == (2, 2) and iou.dtype == np.float32
  np.testing.assert_allclose(iou, [[1, 0], [1, 0.5]])
  with pytest.raises(ValueError, match='last axis of 4'):
    localize.box_iou([0, 0, 1], a)


# --- temporal IoU ---------------------------------------------------------------

def test_temporal_iou_known_intervals():
  assert localize.temporal_iou([(0, 10)], [(0, 10)]) == pytest.approx(1.0)
  assert localize.temporal_iou([(0, 10)], [(5, 15)]) == pytest.approx(5 / 15)
  assert localize.temporal_iou([(0, 10)], [(10, 20)]) == 0.0
  assert localize.temporal_iou((0, 10), np.array([2, 7])) == pytest.approx(0.5)   # single pairs


def test_temporal_iou_unions():
  # Two pieces against one span: intersection 10, union 15.
  assert localize.temporal_iou([(0, 5), (10, 15)], [(0, 15)]) == pytest.approx(10 / 15)
  # Overlapping intervals within one set count once; order does not matter.
  assert localize.temporal_iou([(4, 10), (0, 6)], [(0, 10)]) == pytest.approx(1.0)
  assert localize.temporal_iou([(0, 4), (6, 10)], [(2, 8)]) == pytest.approx(4 / 10)
  assert localize.temporal_iou([], []) == 0.0
  assert localize.temporal_iou([], [(0, 3)]) == 0.0
  assert localize.merge_segments([(5, 7), (0, 2), (1, 3), (4, 4)]) == [(0, 3), (5, 7)]


# --- contour boxes ----------------------------------------------------------------

def test_blob_gives_its_box_exactly():
  attention = np.zeros((1, 16, 20), np.float32)
  attention[0, 3:8, 5:12] = 1.0            # rows 3..7, columns 5..11
  attention[0, 5, 8] = 0.6                 # a dip inside the blob keeps it whole
  loc = localize.localize(attention)
  np.testing.assert_array_equal(loc.boxes, [[5, 3, 12, 8]])      # x1/y1 exclusive
  assert loc.boxes.dtype == np.float32


def test_two_blobs_per_policy():
  attention = np.zeros((1, 32, 32), np.float32)
  attention[0, 2:10, 2:10] = 0.9           # 64 px
  attention[0, 20:24, 25:30] = 1.0         # 20 px, holds the peak
  largest = localize.localize(attention, policy='largest').boxes
  everything = localize.localize(attention, policy='all').boxes
  np.testing.assert_array_equal(largest, [[2, 2, 10, 10]])
  np.testing.assert_array_equal(everything, [[2, 2, 30, 24]])


def test_largest_counts_pixels_not_polygon_area():
  # cv2.contourArea gives a one-pixel-wide line area 0; it has 12 pixels,
  # more than the 2 x 2 square's 4.
  mask = np.zeros((10, 20), bool)
  mask[1, 2:14] = True
  mask[6:8, 6:8] = True
  np.testing.assert_array_equal(localize.mask_box(mask), [2, 1, 14, 2])
  np.testing.assert_array_equal(localize.mask_box(np.zeros((4, 4), bool)), ABSENT)


def test_relative_to_frame_versus_clip():
  attention = np.zeros((2, 20, 20), np.float32)
  attention[0, 2:6, 2:6] = 1.0                           # the clip's peak
  attention[1, 4:16, 4:16] = 0.25                        # weak halo ...
  attention[1, 8:12, 8:12] = 0.4                         # ... around a weak core
  frame = localize.localize(attention, threshold=0.3, relative_to='frame').boxes
  clip = localize.localize(attention, threshold=0.3, relative_to='clip').boxes
  # Frame: 0.3 * 0.4 = 0.12 keeps the halo; clip: 0.3 * 1.0 keeps the core only.
  np.testing.assert_array_equal(frame, [[2, 2, 6, 6], [4, 4, 16, 16]])
  np.testing.assert_array_equal(clip, [[2, 2, 6, 6], [8, 8, 12, 12]])
  clip_high = localize.localize(attention, threshold=0.5, relative_to='clip').boxes
  np.testing.assert_array_equal(clip_high, [[2, 2, 6, 6], ABSENT])   # nothing >= 0.5


def test_frames_without_attention_have_no_box():
  attention = np.zeros((2, 3, 8, 8), np.float32)
  attention[0, 1, 2:4, 2:4] = 1.0
  loc = localize.localize(attention)
  np.testing.assert_array_equal(loc.boxes[0, 0], ABSENT)
  np.testing.assert_array_equal(loc.boxes[0, 1], [2, 2, 4, 4])
  np.testing.assert_array_equal(loc.boxes[1], np.full((3, 4), -1))
  assert loc.segments == [[(1, 2)], []]                   # an all-zero clip: no segment
  np.testing.assert_array_equal(loc.frame_mass[1], 0)


def test_bad_arguments_name_the_problem():
  attention = np.zeros((2, 8, 8), np.float32)
  with pytest.raises(ValueError, match="policy 'biggest'"):
    localize.localize(attention, policy='biggest')
  with pytest.raises(ValueError, match='relative_to'):
    localize.localize(attention, relative_to='video')
  with pytest.raises(ValueError, match='threshold=1.5'):
    localize.localize(attention, threshold=1.5)
  with pytest.raises(ValueError, match=r'\[B, T, H, W\]'):
    localize.localize(np.zeros((8, 8)))
  with pytest.raises(ValueError, match='NaN'):
    localize.localize(np.full((1, 4, 4), np.nan))


# --- segments ---------------------------------------------------------------------

def test_segments_from_frame_mass():
  attention = np.zeros((10, 8, 8), np.float32)
  attention[:, 0, 0] = 0.5                         # every frame has a little attention
  attention[2:6, 2:6, 2:6] = 1.0                   # frames 2..5 carry most of it
  attention[8, 2:4, 2:4] = 1.0                     # frame 8 about a quarter of the peak
  loc = localize.localize(attention)               # unbatched: mirrors the input
  assert loc.boxes.shape == (10, 4)
  assert loc.segments == [(2, 6)]
  assert loc.frame_mass.shape == (10,)
  assert loc.frame_mass.max() == pytest.approx(1.0)
  assert loc.frame_mass[8] == pytest.approx(4.5 / 16.5)
  low = localize.localize(attention, temporal_threshold=0.2)
  assert low.segments == [(2, 6), (8, 9)]
  merged = localize.localize(attention, temporal_threshold=0.2, max_gap_frames=2)
  assert merged.segments == [(2, 9)]
  dropped = localize.localize(attention, temporal_threshold=0.2, min_segment_frames=2)
  assert dropped.segments == [(2, 6)]


def test_segments_from_mask():
  flags = [0, 1, 1, 0, 1, 0, 0, 0, 1, 1]
  assert localize.segments_from_mask(flags) == [(1, 3), (4, 5), (8, 10)]
  assert localize.segments_from_mask(flags, max_gap=1) == [(1, 5), (8, 10)]
  assert localize.segments_from_mask(flags, min_length=2) == [(1, 3), (8, 10)]
  assert localize.segments_from_mask(flags, min_length=3, max_gap=3) == [(1, 10)]
  assert localize.segments_from_mask([0, 0]) == []


# --- long videos ---------------------------------------------------------------------

def test_sliding_starts_cover_any_length():
  np.testing.assert_array_equal(localize.sliding_starts(20, 8, 4), [0, 4, 8, 12])
  np.testing.assert_array_equal(localize.sliding_starts(21, 8, 4), [0, 4, 8, 12, 13])
  np.testing.assert_array_equal(localize.sliding_starts(24, 8, 8), [0, 8, 16])
  np.testing.assert_array_equal(localize.sliding_starts(5, 8, 4), [0])    # loop-padded clip
  np.testing.assert_array_equal(localize.sliding_starts(8, 8, 3), [0])
  for num_frames in range(1, 40):
    for clip_len, stride in ((8, 8), (8, 3), (16, 1)):
      starts = localize.sliding_starts(num_frames, clip_len, stride)
      covered = np.zeros(num_frames, bool)
      for start in starts:
        covered[start:start + clip_len] = True
      assert covered.all()
      assert min(starts[-1] + clip_len, max(num_frames, clip_len)) == max(num_frames, clip_len)
  with pytest.raises(ValueError, match='stride=9'):
    localize.sliding_starts(20, 8, 9)


def test_stitch_places_and_averages():
  num_frames, clip_len, size = 20, 8, (3, 4)
  starts = localize.sliding_starts(num_frames, clip_len, 4)          # [0, 4, 8, 12]
  clip_maps = np.stack([np.full((clip_len,) + size, n + 1.0, np.float32)
                        for n in range(len(starts))])
  video = localize.stitch(clip_maps, starts, num_frames)
  assert video.shape == (num_frames,) + size and video.dtype == np.float32
  # Frames 0-3: clip 0 alone; then pairs of clips overlap; 16-19: clip 3 alone.
  expected = [1] * 4 + [1.5] * 4 + [2.5] * 4 + [3.5] * 4 + [4] * 4
  np.testing.assert_allclose(video[:, 0, 0], expected)


def test_stitch_of_a_video_cut_into_clips_is_the_video():
  rng = np.random.default_rng(0)
  volume = rng.random((23, 5, 6)).astype(np.float32)
  starts = localize.sliding_starts(23, 8, 3)
  clip_maps = np.stack([volume[s:s + 8] for s in starts])
  np.testing.assert_allclose(localize.stitch(clip_maps, starts, 23), volume, rtol=1e-6)
  # Non-overlapping frames equal the clip maps exactly.
  np.testing.assert_array_equal(localize.stitch(clip_maps, starts, 23)[:3], clip_maps[0, :3])


def test_stitch_uncovered_and_padded_frames():
  maps = np.ones((1, 8, 2, 2), np.float32)
  dropped = localize.stitch(maps, [0], 12, padding='drop')
  np.testing.assert_array_equal(dropped[:, 0, 0], [1] * 8 + [0] * 4)   # uncovered -> 0
  # A 5-frame video in one loop-padded 8-frame clip: clip frames 5, 6, 7 show
  # video frames 0, 1, 2 again, and are averaged with them.
  ramp = np.arange(8, dtype=np.float32)[None, :, None, None] * np.ones((1, 8, 2, 2), np.float32)
  looped = localize.stitch(ramp, [0], 5)
  np.testing.assert_allclose(looped[:, 0, 0], [2.5, 3.5, 4.5, 3, 4])
  assert localize.stitch(ramp, [0], 5, padding='drop')[:, 0, 0].tolist() == [0, 1, 2, 3, 4]
  with pytest.raises(ValueError, match='one start per clip'):
    localize.stitch(maps, [0, 4], 12)
  with pytest.raises(ValueError, match='must lie in'):
    localize.stitch(maps, [12], 12)


# --- the explanation's output --------------------------------------------------------

@pytest.fixture
def fast_compile():
  """Compiles with few XLA optimizations (halves compile time, docs/design.md 10), then restores.

  The flag is not part of jit's cache key, so the explainers compiled here
  are dropped afterwards: later tests must not reuse unoptimized executables.
  """
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)
  explain.make_explainer.cache_clear()


def test_localize_takes_explain_output_directly(fast_compile):
  model = models.ResNeXt3DTiny(num_classes=5)
  variables = models.init_variables(model, jax.random.key(0), (2, 8, 32, 32, 3))
  video = jax.random.normal(jax.random.key(1), (2, 8, 32, 32, 3))
  explanation = explain.explain(model, variables, video)
  assert isinstance(explanation.attention, jax.Array)
  loc = localize.localize(explanation.attention)
  same = localize.localize(explanation)
  np.testing.assert_array_equal(loc.boxes, same.boxes)
  assert loc.boxes.shape == (2, 8, 4) and loc.boxes.dtype == np.float32
  assert len(loc.segments) == 2
  has_box = loc.boxes[..., 2] > loc.boxes[..., 0]
  assert np.all(loc.boxes[~has_box] == -1)
  boxed = loc.boxes[has_box]
  assert np.all(boxed[:, :2] >= 0) and np.all(boxed[:, 2] <= 32) and np.all(boxed[:, 3] <= 32)
  # Every frame with attention gets a box relative to its own maximum.
  attention = np.asarray(explanation.attention)
  np.testing.assert_array_equal(has_box, attention.max(axis=(2, 3)) > 0)
  for segments in loc.segments:
    for start, end in segments:
      assert 0 <= start < end <= 8
