"""Tests of gla_jax.data.sampling: frame indices, corner crops, boxes through crop and flip,
uint8 clips from the transform through the loader."""
import numpy as np
import pytest

from gla_jax import defaults
from gla_jax.data import loader
from gla_jax.data import sampling
from tests.data import small_data


def test_default_config_lockable():
  config = defaults.data_config()
  assert config.source == 'synthetic'
  assert (config.num_frames, config.frame_stride, config.crop_size) == (16, 1, 112)
  assert tuple(config.train_scales) == (1.0, 0.841, 0.707, 0.595, 0.5)
  assert tuple(config.mean) == (114.7748, 107.7354, 99.4750)
  config.lock()
  config.num_frames = 8
  config.synthetic.height = 64
  with pytest.raises(AttributeError):
    config.no_such_key = 1


def test_eval_frame_stride_and_short_videos():
  np.testing.assert_array_equal(sampling.eval_clip_starts(20, 4, 2), [0, 8, 16])
  np.testing.assert_array_equal(sampling.eval_frame_indices(20, 16, 4, 2), [16, 18, 16, 18])
  np.testing.assert_array_equal(sampling.eval_clip_starts(3, 16, 1), [0])
  np.testing.assert_array_equal(sampling.eval_frame_indices(3, 0, 5, 1), [0, 1, 2, 0, 1])
  rng = np.random.default_rng(0)
  for _ in range(50):
    indices = sampling.train_frame_indices(30, 8, 3, rng)
    assert len(indices) == 8 and np.all(np.diff(indices) == 3)
    assert 0 <= indices[0] and indices[-1] < 30
  np.testing.assert_array_equal(sampling.train_frame_indices(5, 4, 2, rng), [0, 2, 4, 0])


def test_corner_crop_positions():
  # 100 wide, 80 high, scale 0.5: side 40.
  assert sampling.corner_crop(80, 100, 0.5, 0) == (30, 20, 40)
  assert sampling.corner_crop(80, 100, 0.5, 1) == (0, 0, 40)
  assert sampling.corner_crop(80, 100, 0.5, 2) == (60, 0, 40)
  assert sampling.corner_crop(80, 100, 0.5, 3) == (0, 40, 40)
  assert sampling.corner_crop(80, 100, 0.5, 4) == (60, 40, 40)


def test_transform_boxes_by_hand():
  boxes = np.array([[24, 20, 40, 30],    # inside the crop
                    [0, 0, 30, 20],      # partly outside: clipped
                    [70, 60, 90, 75],    # outside: absent
                    [-1, -1, -1, -1]],   # absent stays absent
                   np.float32)
  present = np.array([True, True, True, False])
  # Crop (x0=20, y0=10, side 40) resized to 20: scale 0.5.
  out, visible = sampling.transform_boxes(boxes, present, 20, 10, 40, 20, flip=False)
  np.testing.assert_array_equal(visible, [True, True, False, False])
  np.testing.assert_allclose(out, [[2, 5, 10, 10], [0, 0, 5, 5], [-1] * 4, [-1] * 4])
  flipped, _ = sampling.transform_boxes(boxes, present, 20, 10, 40, 20, flip=True)
  np.testing.assert_allclose(flipped, [[10, 5, 18, 10], [15, 0, 20, 5], [-1] * 4, [-1] * 4])


def _hara_starts(num_frames, step):
  """0-based starts of Hara's test clips: `range(1, n_frames, step)` of 1-based frames."""
  return [j - 1 for j in range(1, num_frames, step)] or [0]   # a one-frame video: one clip


@pytest.mark.parametrize('num_frames, want', [(17, [0]), (33, [0, 16]), (16, [0]), (1, [0]),
                                              (5, [0]), (32, [0, 16]), (49, [0, 16, 32])])
def test_eval_clip_starts_follow_haras_range(num_frames, want):
  # No clip starts at the last frame: n = 17 has no one-frame clip 16 loop-padded 16 times.
  np.testing.assert_array_equal(sampling.eval_clip_starts(num_frames, 16, 1), want)
  assert want == _hara_starts(num_frames, 16)
  # With a frame stride the step is num_frames * stride (the same rule).
  np.testing.assert_array_equal(sampling.eval_clip_starts(num_frames, 8, 2), want)


def test_eval_video_subset_round_robin_over_classes():
  # 5 classes in class order (as a folder lists them), 6 videos each, 1-3 clips per video.
  labels = np.repeat(np.arange(5), 6)
  clip_counts = 1 + np.arange(30) % 3
  chosen = sampling.eval_video_subset(labels, clip_counts, max_clips=20, seed=4)
  np.testing.assert_array_equal(chosen, np.sort(chosen))               # index order
  assert clip_counts[chosen].sum() <= 20
  # Round-robin: every class has k or k + 1 of the chosen videos, so all 5 appear.
  per_class = np.bincount(labels[chosen], minlength=5)
  assert per_class.min() >= 1 and per_class.max() - per_class.min() <= 1
  # The next video of the order would not fit (the budget is used, not cut short).
  assert clip_counts[chosen].sum() > 20 - 3
  np.testing.assert_array_equal(chosen, sampling.eval_video_subset(labels, clip_counts, 20, 4))
  assert not np.array_equal(chosen, sampling.eval_video_subset(labels, clip_counts, 20, 5))
  # 0 or a budget over the split: every video with a clip, in index order.
  clip_counts[7] = 0                                                    # e.g. unreadable
  everything = np.delete(np.arange(30), 7)
  np.testing.assert_array_equal(sampling.eval_video_subset(labels, clip_counts, 0, 4), everything)
  np.testing.assert_array_equal(sampling.eval_video_subset(labels, clip_counts, 999, 4),
                                everything)
  # A video longer than the budget is still taken whole (at least one video).
  assert len(sampling.eval_video_subset(labels, np.full(30, 10), 4, 0)) == 1


def test_transform_and_center_clip_keep_uint8_pixels():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (3, 20, 30, 3), np.uint8)
  config = small_data.config(crop_size=10)
  # Square (x0=4, y0=2, side 10) at the crop size: exactly those pixels, then mirrored.
  example = sampling.ClipTransform(config).finish({'video': frames, 'label': 3}, 4, 2, 10,
                                                 flip=True)
  assert example['video'].dtype == np.uint8 and example['label'] == 3
  np.testing.assert_array_equal(example['video'], frames[:, 2:12, 4:14][:, :, ::-1])
  # The centre square (side 20 of 30 wide: x0 = 5), resized 20 -> 10 by 2 x 2 averages.
  clip = sampling.center_clip(frames, config)
  assert clip.dtype == np.uint8 and clip.shape == (3, 10, 10, 3)
  blocks = frames[:, :, 5:25].astype(np.float64).reshape(3, 10, 2, 10, 2, 3).mean(axis=(2, 4))
  assert np.abs(clip - blocks).max() <= 0.5 + 1e-9


@pytest.mark.parametrize('split', ['train', 'eval'])
def test_loader_batches_carry_uint8_clips(split):
  """4x fewer bytes than float32 cross to the device; the consumer normalises them there."""
  config = small_data.config(workers=0)
  batches = (loader.train_batches(config, batch_size=4, seed=0) if split == 'train'
             else loader.eval_batches(config, 'eval', batch_size=4))
  batch = next(batches)
  batches.close()
  assert batch['video'].dtype == np.uint8 and batch['video'].shape == (4, 8, 32, 32, 3)
  assert batch['video'].max() > 0      # real frames, not an empty padding batch
