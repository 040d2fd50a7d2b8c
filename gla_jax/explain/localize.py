"""Contour thresholding: attention maps to per-frame boxes and temporal segments.

The last step of the global-local attention method: the attention
[B, T, H, W] in [0, 1] from `explain.explain` becomes a box per frame (the
largest, or every, outer contour of the pixels >= `threshold` times the
frame's or the clip's maximum) and temporal segments per clip (runs of frames
whose attention mass is >= `temporal_threshold` of its maximum). Boxes are
(x0, y0, x1, y1) in pixels with x1/y1 exclusive, all -1 where there is none;
segments are (start, end_exclusive) frame pairs. For long videos,
`sliding_starts` gives clip starts that cover any length and `stitch`
averages the clip maps back into one volume. The defaults and why:
docs/design.md section 1.2.

References:
  Yudistira, Kavitha, Kurita. "Weakly-Supervised Action Localization and Action
    Recognition using Global-Local Attention of 3D CNN", IJCV 2022.
  Zhou et al. "Learning Deep Features for Discriminative Localization", CVPR
    2016 (CAM; boxes from the largest connected component above 20 % of the max).
  Selvaraju et al. "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017 (15 % of the max).
  Choe et al. "Evaluating Weakly Supervised Object Localization Methods Right",
    CVPR 2020 (contour boxes with cv2.findContours; threshold chosen on
    held-out data).
"""
import dataclasses
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

RELATIVE_TO = ('frame', 'clip')
POLICIES = ('largest', 'all')

Segment = Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Localization:
  """What `localize` returns (for a batched input [B, T, H, W]).

  For an unbatched input [T, H, W] the batch axis is dropped: boxes [T, 4],
  segments one list of pairs, frame_mass [T].

  Attributes:
    boxes: float32 [B, T, 4] (x0, y0, x1, y1) in pixels, x1/y1 exclusive;
      all -1 where a frame has no box.
    segments: per clip, a list of (start_frame, end_frame_exclusive).
    frame_mass: float32 [B, T] per-frame attention mass divided by the
      clip's largest (0 for a clip without attention): what the segments
      threshold.
  """
  boxes: np.ndarray
  segments: Union[List[List[Segment]], List[Segment]]
  frame_mass: np.ndarray


def _as_numpy_maps(attention: Any) -> Tuple[np.ndarray, bool]:
  """[B, T, H, W] float32 numpy and whether the input had a batch axis."""
  # An `explain.Explanation` carries the map in `.attention`; taking it here
  # spares callers a step without importing the model code.
  if hasattr(attention, 'attention') and hasattr(attention, 'layer_maps'):
    attention = attention.attention
  maps = np.asarray(attention, dtype=np.float32)
  if maps.ndim not in (3, 4):
    raise ValueError(f'Expected attention [B, T, H, W] or [T, H, W], got shape {maps.shape}; '
                     'pass Explanation.attention (or one clip of it).')
  if not np.all(np.isfinite(maps)):
    raise ValueError('The attention has NaN or infinite values; localization needs finite maps '
                     '(check the explanation, e.g. a diverged model).')
  batched = maps.ndim == 4
  return (maps if batched else maps[None]), batched


def _check_choice(value: str, choices: Tuple[str, ...], name: str):
  if value not in choices:
    raise ValueError(f'Unknown {name} {value!r}; choose one of {choices}.')


def _check_fraction(value: float, name: str):
  if not 0.0 <= value <= 1.0:
    raise ValueError(f'{name}={value}: it is a fraction of the maximum; use a value in [0, 1].')


def mask_box(mask: np.ndarray, weights: Optional[np.ndarray] = None,
             policy: str = 'largest') -> np.ndarray:
  """Box of a binary mask's outer contours (cv2.findContours, RETR_EXTERNAL).

  Args:
    mask: bool or uint8 [H, W].
    weights: optional float [H, W] (the attention) to break ties between
      contours that enclose the same number of pixels: the one holding more
      attention wins. Without it the first found wins.
    policy: 'largest': the box of the contour that encloses the most pixels
      (its region filled, holes included: the region its box stands for;
      exact, unlike cv2.contourArea, which gives 0 for one-pixel-wide blobs);
      'all': the box around every contour, i.e. around every mask pixel.

  Returns:
    float32 [4] (x0, y0, x1, y1), x1/y1 exclusive; all -1 for an empty mask.
  """
  _check_choice(policy, POLICIES, 'policy')
  mask = np.ascontiguousarray(mask, dtype=np.uint8)
  contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
  if not contours:
    return np.full(4, -1, np.float32)
  rects = [cv2.boundingRect(c) for c in contours]     # (x, y, w, h), w/h in pixels
  if policy == 'all':
    x0 = min(r[0] for r in rects)
    y0 = min(r[1] for r in rects)
    x1 = max(r[0] + r[2] for r in rects)
    y1 = max(r[1] + r[3] for r in rects)
    return np.array([x0, y0, x1, y1], np.float32)
  best_key, best_rect = None, None
  for contour, (x, y, w, h) in zip(contours, rects):
    # Fill the contour inside its bounding box only: O(box area) per contour.
    region = np.zeros((h, w), np.uint8)
    cv2.drawContours(region, [contour], -1, 1, thickness=cv2.FILLED, offset=(-x, -y))
    inside = region.astype(bool)
    mass = 0.0 if weights is None else float(weights[y:y + h, x:x + w][inside].sum())
    key = (int(inside.sum()), mass)
    if best_key is None or key > best_key:
      best_key, best_rect = key, (x, y, w, h)
  x, y, w, h = best_rect
  return np.array([x, y, x + w, y + h], np.float32)


def frame_boxes(attention: Any, threshold: float = 0.5, relative_to: str = 'frame',
                policy: str = 'largest') -> np.ndarray:
  """Per-frame boxes of [B, T, H, W] (or [T, H, W]) maps; see `localize`.

  Returns:
    float32 [B, T, 4] (or [T, 4]); all -1 where a frame has no box.
  """
  _check_fraction(threshold, 'threshold')
  _check_choice(relative_to, RELATIVE_TO, 'relative_to')
  _check_choice(policy, POLICIES, 'policy')
  maps, batched = _as_numpy_maps(attention)
  num_clips, num_frames = maps.shape[:2]
  boxes = np.full((num_clips, num_frames, 4), -1, np.float32)
  frame_max = maps.max(axis=(2, 3))                                   # [B, T]
  clip_max = frame_max.max(axis=1, keepdims=True)                     # [B, 1]
  reference = frame_max if relative_to == 'frame' else np.broadcast_to(clip_max, frame_max.shape)
  for b in range(num_clips):
    for t in range(num_frames):
      # A frame (or clip) whose maximum is 0 has no attention at all: no box,
      # rather than the whole frame that `>= 0` would select.
      if reference[b, t] <= 0:
        continue
      mask = maps[b, t] >= threshold * reference[b, t]
      boxes[b, t] = mask_box(mask, maps[b, t], policy)
  return boxes if batched else boxes[0]


def segments_from_mask(flags: Sequence[bool], min_length: int = 1,
                       max_gap: int = 0) -> List[Segment]:
  """Runs of True in a per-frame flag vector, as (start, end_exclusive) pairs.

  Args:
    flags: bool [T].
    min_length: runs shorter than this many frames are dropped (after
      merging), so isolated flickers do not count as actions.
    max_gap: runs separated by at most this many False frames are merged
      first (0: no merging).

  Returns:
    Sorted, disjoint segments.
  """
  if min_length < 1 or max_gap < 0:
    raise ValueError(f'min_length={min_length}, max_gap={max_gap}: need min_length >= 1 and '
                     'max_gap >= 0.')
  flags = np.asarray(flags, bool).reshape(-1)
  # Rising and falling edges of the zero-padded flags give run boundaries.
  edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
  starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
  merged: List[List[int]] = []
  for start, end in zip(starts.tolist(), ends.tolist()):
    if merged and start - merged[-1][1] <= max_gap:
      merged[-1][1] = end
    else:
      merged.append([start, end])
  return [(s, e) for s, e in merged if e - s >= min_length]


def frame_mass(attention: Any) -> np.ndarray:
  """Per-frame attention mass (sum over H, W) over its clip's maximum.

  The sum and the mean over H, W differ by the constant H * W, which the
  division removes; a clip without attention gives zeros.

  Returns:
    float32 [B, T] (or [T] for [T, H, W]) in [0, 1].
  """
  maps, batched = _as_numpy_maps(attention)
  mass = np.maximum(maps, 0).sum(axis=(2, 3), dtype=np.float64)          # [B, T]
  peak = mass.max(axis=1, keepdims=True)
  mass = np.where(peak > 0, mass / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)
  return mass if batched else mass[0]


def localize(attention: Any, threshold: float = 0.5, relative_to: str = 'frame',
             policy: str = 'largest', temporal_threshold: float = 0.5,
             min_segment_frames: int = 1, max_gap_frames: int = 0) -> Localization:
  """Boxes per frame and segments per clip from attention maps.

  Args:
    attention: [B, T, H, W] (numpy or jax array, e.g. `Explanation.attention`,
      or the `Explanation` itself) or one clip [T, H, W]; non-negative, as
      `explain` gives. The result mirrors the input: an unbatched clip gives
      unbatched boxes and segments.
    threshold: a pixel belongs to the mask when it is >= threshold * max.
    relative_to: 'frame': max is the frame's maximum, so every frame with any
      attention gets a box; 'clip': the clip's maximum, so weakly attended
      frames get no box (which also localizes in time).
    policy: 'largest' (box of the contour enclosing the most pixels) or 'all'
      (box around every contour).
    temporal_threshold: a frame is in a segment when its attention mass is
      >= temporal_threshold * the clip's largest frame mass.
    min_segment_frames: shorter segments are dropped.
    max_gap_frames: segments at most this many frames apart are merged.

  Returns:
    A `Localization`. Frames whose reference maximum is 0 have no box, and
    a clip whose attention is all 0 (e.g. `has_signal` False) has no box and
    no segment.
  """
  _check_fraction(temporal_threshold, 'temporal_threshold')
  maps, batched = _as_numpy_maps(attention)
  boxes = frame_boxes(maps, threshold, relative_to, policy)
  mass = frame_mass(maps)
  segments = []
  for clip_mass in mass:
    flags = (clip_mass >= temporal_threshold * clip_mass.max()) & (clip_mass > 0)
    segments.append(segments_from_mask(flags, min_segment_frames, max_gap_frames))
  if batched:
    return Localization(boxes=boxes, segments=segments, frame_mass=mass)
  return Localization(boxes=boxes[0], segments=segments[0], frame_mass=mass[0])


# ----------------------------------------------------------------------------
# Overlap measures.
# ----------------------------------------------------------------------------

def box_iou(a: Any, b: Any) -> np.ndarray:
  """Intersection over union of boxes, broadcast over leading axes.

  Boxes are (x0, y0, x1, y1) with x1/y1 exclusive, so areas are
  (x1 - x0) * (y1 - y0) (no +1 as in VOC's inclusive convention). A box with
  no area (x1 <= x0 or y1 <= y0; the all -1 "absent" box is one) has IoU 0
  with every box, and two absent boxes also give 0: IoU is undefined there,
  and 0 keeps "nothing predicted where nothing is" from counting as a hit.
  The metrics only score frames where the ground truth is present.

  Args:
    a: [..., 4].
    b: [..., 4], broadcastable with `a`.

  Returns:
    float32 [...] in [0, 1].
  """
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape[-1:] != (4,) or b.shape[-1:] != (4,):
    raise ValueError(f'Boxes must have a last axis of 4 (x0, y0, x1, y1); got {a.shape} and '
                     f'{b.shape}.')
  wa, ha = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
  wb, hb = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
  valid = (wa > 0) & (ha > 0) & (wb > 0) & (hb > 0)
  iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
  ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
  inter = np.maximum(iw, 0) * np.maximum(ih, 0)
  union = wa * ha + wb * hb - inter
  iou = np.where(valid, inter / np.where(valid, union, 1.0), 0.0)
  return iou.astype(np.float32)


def merge_segments(segments: Any) -> List[Tuple[float, float]]:
  """Sorted union of (start, end_exclusive) intervals; empty ones dropped.

  Accepts a list of pairs, an array [K, 2], or one pair (start, end) such as
  `synthetic.Clip.segment`.
  """
  array = np.asarray(segments, np.float64)
  if array.size == 0:
    return []
  if array.ndim == 1:
    array = array[None]
  if array.ndim != 2 or array.shape[1] != 2:
    raise ValueError(f'Segments must be (start, end) pairs, got an array of shape {array.shape}.')
  merged: List[List[float]] = []
  for start, end in sorted(array.tolist()):
    if end <= start:
      continue
    if merged and start <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], end)
    else:
      merged.append([start, end])
  return [(s, e) for s, e in merged]


def _total_length(segments: List[Tuple[float, float]]) -> float:
  return float(sum(e - s for s, e in segments))


def temporal_iou(seg_a: Any, seg_b: Any) -> float:
  """IoU of two sets of temporal segments, each taken as the union of its intervals.

  Lengths are end - start (end exclusive), i.e. frame counts for integer
  frames. Overlapping intervals within one set count once. Two empty sets
  give 0, as two absent boxes do in `box_iou`.

  Args:
    seg_a: (start, end_exclusive) pairs (see `merge_segments`).
    seg_b: the same.

  Returns:
    IoU in [0, 1].
  """
  a, b = merge_segments(seg_a), merge_segments(seg_b)
  inter, i, j = 0.0, 0, 0
  # Two-pointer sweep over the sorted, disjoint intervals.
  while i < len(a) and j < len(b):
    inter += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
    if a[i][1] < b[j][1]:
      i += 1
    else:
      j += 1
  union = _total_length(a) + _total_length(b) - inter
  return inter / union if union > 0 else 0.0


# ----------------------------------------------------------------------------
# Long videos.
# ----------------------------------------------------------------------------

def sliding_starts(num_frames: int, clip_len: int, stride: int) -> np.ndarray:
  """Start frames of clips of `clip_len` frames that cover `num_frames` frames.

  Starts are 0, stride, 2 * stride, ...; when the last of them does not reach
  the end, one more clip starts at num_frames - clip_len so that the last
  clip ends exactly at the last frame (its overlap with the one before is
  larger than the others'). A video shorter than a clip gives one clip at
  0, which the caller loop-pads (`sampling.loop_pad`).

  Args:
    num_frames: frames of the video (>= 1).
    clip_len: frames per clip (>= 1).
    stride: frames between starts (1 <= stride <= clip_len, so no frame is
      skipped; stride = clip_len gives Hara's non-overlapping test clips).

  Returns:
    int64 [N] increasing start frames.
  """
  if num_frames < 1 or clip_len < 1:
    raise ValueError(f'num_frames={num_frames}, clip_len={clip_len}: both must be >= 1.')
  if not 1 <= stride <= clip_len:
    raise ValueError(f'stride={stride}: use 1 <= stride <= clip_len ({clip_len}); a larger '
                     'stride leaves frames that no clip covers.')
  if num_frames <= clip_len:
    return np.zeros(1, np.int64)
  last = num_frames - clip_len
  starts = np.arange(0, last + 1, stride, dtype=np.int64)
  if starts[-1] != last:
    starts = np.append(starts, np.int64(last))
  return starts


def stitch(clip_maps: Any, starts: Sequence[int], num_frames: int,
           padding: str = 'loop') -> np.ndarray:
  """Places clip maps at their start frames and averages them into one volume.

  Each output frame is the mean of the clip frames that cover it (a clip
  frame's weight is 1, so overlaps are count-weighted averages); a frame
  that no clip covers is 0, i.e. "no attention", which `localize` turns
  into no box and no segment.

  Args:
    clip_maps: [N, T, H, W] maps (numpy or jax), clip n covering frames
      starts[n] .. starts[n] + T - 1.
    starts: [N] start frames in [0, num_frames).
    num_frames: frames of the video.
    padding: what clip frames past the video's end are: 'loop' (the clip was
      loop-padded as `sampling.loop_pad` does, so clip frame t shows
      video frame start + t mod (num_frames - start), and those maps are
      averaged into that frame), or 'drop' (they are ignored).

  Returns:
    float32 [num_frames, H, W].
  """
  maps = np.asarray(clip_maps, np.float32)
  starts = np.asarray(starts, np.int64).reshape(-1)
  if maps.ndim != 4:
    raise ValueError(f'Expected clip maps [N, T, H, W], got shape {maps.shape}.')
  if len(starts) != maps.shape[0]:
    raise ValueError(f'{len(starts)} start frames for {maps.shape[0]} clip maps: give one start '
                     'per clip.')
  if num_frames < 1:
    raise ValueError(f'num_frames={num_frames}: must be >= 1.')
  if np.any(starts < 0) or np.any(starts >= num_frames):
    raise ValueError(f'Start frames {starts.tolist()} must lie in [0, {num_frames}); clips that '
                     'begin past the video cannot be placed.')
  _check_choice(padding, ('loop', 'drop'), 'padding')
  clip_len = maps.shape[1]
  total = np.zeros((num_frames,) + maps.shape[2:], np.float64)
  count = np.zeros(num_frames, np.int64)
  offsets = np.arange(clip_len)
  for clip_map, start in zip(maps, starts.tolist()):
    frames = start + offsets
    if padding == 'loop':
      frames = start + offsets % (num_frames - start)
      keep = np.ones(clip_len, bool)
    else:
      keep = frames < num_frames
    # np.add.at, not +=, so repeated frames of a loop-padded clip all count.
    np.add.at(total, frames[keep], clip_map[keep])
    np.add.at(count, frames[keep], 1)
  covered = count > 0
  total[covered] /= count[covered][:, None, None]
  return total.astype(np.float32)
