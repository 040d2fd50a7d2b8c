"""Clip sampling and augmentation as Hara et al. do (3D-ResNets-PyTorch).

Training: a random window of `num_frames` frames every `frame_stride`
(`TemporalRandomCrop`), loop-padded when the video is shorter; one square
corner crop per clip (`MultiScaleCornerCrop`) resized to `crop_size`; a
left-right flip with probability 0.5 (`RandomHorizontalFlip`). Evaluation:
non-overlapping windows from frame 0, the last loop-padded (`LoopPadding`),
and the centre square (`CenterCrop`); a capped evaluation reads a seeded
subset of whole videos spread over the classes. Pure numpy/cv2 functions of
explicit arguments; the reasoning behind each choice is in docs/design.md.
"""
from typing import Any, Dict, Sequence, Tuple

import cv2
import ml_collections
import numpy as np

Example = Dict[str, Any]   # What `sources.Source.load` returns.

# Hara et al.'s preprocessing for their published weights (docs/design.md).
ACTIVITYNET_MEAN = (114.7748, 107.7354, 99.4750)
HARA_SCALES = (1.0, 0.841, 0.707, 0.595, 0.5)
# The SeedSequence word of the evaluation subset (the loader's streams are 0 and 1).
_EVAL_SUBSET_STREAM = 2


def loop_pad(indices: np.ndarray, length: int) -> np.ndarray:
  """Repeats `indices` cyclically up to `length` (Hara's LoopPadding)."""
  return np.resize(np.asarray(indices, np.int64), length)


def train_frame_indices(num_frames: int, clip_frames: int, stride: int,
                        rng: np.random.Generator) -> np.ndarray:
  """A random window of `clip_frames` frames every `stride`, loop-padded.

  Returns:
    int64 [clip_frames], each in [0, num_frames).
  """
  span = (clip_frames - 1) * stride + 1
  start = int(rng.integers(0, max(num_frames - span, 0) + 1))
  return loop_pad(np.arange(start, min(start + span, num_frames), stride), clip_frames)


def eval_clip_starts(num_frames: int, clip_frames: int, stride: int) -> np.ndarray:
  """First frames of the non-overlapping evaluation clips (at least one).

  Hara's test clips start at `range(1, n_frames, step)` of 1-based frames:
  0, step, ... below num_frames - 1 here, so no clip starts at the last frame
  (a one-frame clip loop-padded to a whole one); a one-frame video has one.
  """
  return np.arange(0, max(num_frames - 1, 1), clip_frames * stride)


def eval_video_subset(labels: Sequence[int], clip_counts: Sequence[int], max_clips: int,
                      seed: int) -> np.ndarray:
  """The videos a capped evaluation reads: whole videos, round-robin over the classes.

  Each class's videos in a seeded order; each round takes the next video of
  every class (the classes in a seeded order too) while its clips fit in
  `max_clips` (the first video always). So a cap sees every class about
  equally, not the first classes of a split sorted by class.

  Args:
    labels: int [V], the class of each video.
    clip_counts: int [V], its evaluation clips (0: left out, e.g. unreadable).
    max_clips: the clip budget; 0 = every video.
    seed: which subset; the same on every process.

  Returns:
    int64 video indices in increasing order.
  """
  labels, clip_counts = np.asarray(labels, np.int64), np.asarray(clip_counts, np.int64)
  videos = np.flatnonzero(clip_counts > 0)
  if not max_clips or clip_counts.sum() <= max_clips:
    return videos
  rng = np.random.default_rng([seed, _EVAL_SUBSET_STREAM])
  queues = {int(c): list(rng.permutation(videos[labels[videos] == c]))
            for c in np.unique(labels[videos])}
  chosen, total = [], 0
  while queues:
    for c in rng.permutation(sorted(queues)):
      video = queues[int(c)].pop(0)
      if chosen and total + clip_counts[video] > max_clips:
        return np.sort(np.array(chosen, np.int64))
      chosen.append(video)
      total += clip_counts[video]
      if not queues[int(c)]:
        del queues[int(c)]
  return np.sort(np.array(chosen, np.int64))


def eval_frame_indices(num_frames: int, start: int, clip_frames: int, stride: int) -> np.ndarray:
  """Frames of the evaluation clip starting at `start`, loop-padded."""
  end = min(start + clip_frames * stride, num_frames)
  return loop_pad(np.arange(start, max(end, start + 1), stride), clip_frames)


def corner_crop(height: int, width: int, scale: float, position: int) -> Tuple[int, int, int]:
  """Hara's MultiScaleCornerCrop box: (x0, y0, side).

  Args:
    height, width: frame size.
    scale: side as a fraction of min(height, width).
    position: 0 centre, 1 top-left, 2 top-right, 3 bottom-left, 4 bottom-right.
  """
  side = max(1, int(min(height, width) * scale))
  x0, y0 = {0: ((width - side) // 2, (height - side) // 2),
            1: (0, 0), 2: (width - side, 0),
            3: (0, height - side), 4: (width - side, height - side)}[position]
  return x0, y0, side


def transform_boxes(boxes: np.ndarray, present: np.ndarray, x0: int, y0: int, side: int,
                    size: int, flip: bool) -> Tuple[np.ndarray, np.ndarray]:
  """Maps boxes through crop (x0, y0, side) -> resize to `size` -> optional flip.

  Boxes are continuous pixel-edge coordinates (x1/y1 exclusive), so a crop is
  a shift, a resize a scaling by size / side, and a flip x -> size - x with the
  edges swapped. A box cut out by the crop becomes absent.

  Args:
    boxes: float [T, 4] (x0, y0, x1, y1) in the frame, -1 where absent.
    present: bool [T].
    x0, y0, side: the crop square in the frame.
    size: output side.
    flip: mirrored left-right after the resize.

  Returns:
    boxes float32 [T, 4] in the output clip (-1 where absent), present bool [T].
  """
  scale = size / side
  out = (np.asarray(boxes, np.float32) - np.array([x0, y0, x0, y0], np.float32)) * scale
  out = np.clip(out, 0, size)
  visible = np.asarray(present, bool) & (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
  if flip:
    out = np.stack([size - out[:, 2], out[:, 1], size - out[:, 0], out[:, 3]], axis=1)
  out[~visible] = -1
  return out.astype(np.float32), visible


def crop_resize(video: np.ndarray, x0: int, y0: int, side: int, size: int) -> np.ndarray:
  """Crops the square (x0, y0, side) of every frame and resizes it to size x size."""
  crop = video[:, y0:y0 + side, x0:x0 + side]
  if side == size:
    return np.array(crop)
  interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
  return np.stack([cv2.resize(frame, (size, size), interpolation=interpolation)
                   for frame in crop])


class ClipTransform:
  """Crop/resize/flip settings, picklable for process workers.

  Clips stay uint8 RGB: the consumer normalises them on the device
  (`models.input_normalization.normalize_video`), so 4x fewer bytes cross.
  """

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.num_frames = int(data_config.num_frames)
    self.stride = int(data_config.frame_stride)
    self.crop_size = int(data_config.crop_size)
    self.scales = tuple(float(s) for s in data_config.train_scales)
    self.flip = bool(data_config.flip)

  def finish(self, example: Example, x0: int, y0: int, side: int, flip: bool) -> Example:
    """`example` cropped to the square (x0, y0, side), resized and flipped (uint8); boxes follow."""
    video = crop_resize(example['video'], x0, y0, side, self.crop_size)
    if flip:
      video = video[:, :, ::-1]
    out = dict(video=video, label=example['label'])
    if 'boxes' in example:
      out['boxes'], out['present'] = transform_boxes(
          example['boxes'], example['present'], x0, y0, side, self.crop_size, flip)
    return out


def center_region(height: int, width: int) -> Tuple[int, int, int]:
  """(x0, y0, side) of the centre square of H x W frames: the crop of evaluation and explanation."""
  return corner_crop(height, width, 1.0, 0)


def center_clip(frames: np.ndarray, data_config: ml_collections.ConfigDict) -> np.ndarray:
  """Evaluation preprocessing of raw frames, for explaining arbitrary videos.

  Args:
    frames: uint8 [T, H, W, 3] RGB.
    data_config: `config.data` (crop size).

  Returns:
    uint8 [T, S, S, 3]: the centre square resized to `crop_size`, for drawing
    and for the model (which normalises it on the device).
  """
  x0, y0, side = center_region(frames.shape[1], frames.shape[2])
  return crop_resize(frames, x0, y0, side, int(data_config.crop_size))
