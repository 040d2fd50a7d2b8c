"""Synthetic action clips with exact ground truth: rendering, the dataset, the video-folder export.

`synthetic_scenes` samples a clip's parameters and `render` draws them (numpy and
cv2 only, about 2-2.5 ms per 16 x 112 x 112 clip on one core; natural clips,
camera views of photographs with textured shapes, take about as long). The box of frame t
is the tight box of the actor's rendered pixels, `[x0, y0, x1, y1]` with x1/y1
exclusive, -1 where the actor is absent. `generate_clip(cfg, index, split)` gives a
`Clip`, `generate_video` one action in a long video, `SyntheticDataset` indexed
access, and `export_video_folder` a UCF101-style folder with `annotations.json`
(docs/design.md, the synthetic dataset).
"""
import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from gla_jax.data import natural_images
from gla_jax.data import synthetic_scenes
from gla_jax.data import synthetic_settings

# cv2.fillPoly with fractional bits gives sub-pixel motion (no 1-px snapping).
_SHIFT = 4
_SUBPIXEL = float(1 << _SHIFT)


@dataclasses.dataclass(frozen=True, eq=False)
class Clip:
  """A rendered clip with its ground truth.

  Attributes:
    video: uint8 [T, H, W, 3] RGB.
    label: class index into CLASS_NAMES.
    boxes: float32 [T, 4] (x0, y0, x1, y1), x1/y1 exclusive; -1 where absent.
    present: bool [T], True where the actor is visible.
    segment: int32 [2] (start, end_exclusive) of the actor's presence.
    params: the sampled parameters (`render(params, draw_actor=False)`
      renders the same clip without the actor).
  """
  video: np.ndarray
  label: int
  boxes: np.ndarray
  present: np.ndarray
  segment: np.ndarray
  params: synthetic_scenes.ClipParams

  @property
  def class_name(self) -> str:
    return synthetic_settings.CLASS_NAMES[self.label]

  def as_item(self) -> Dict[str, object]:
    """The dataset item: dict(video, label, boxes, present, segment)."""
    return dict(video=self.video, label=self.label, boxes=self.boxes,
                present=self.present, segment=self.segment)


def _fill(image: np.ndarray, polygon: np.ndarray, color) -> None:
  points = np.rint(polygon * _SUBPIXEL).astype(np.int32)[None]  # [1, K, 2]
  cv2.fillPoly(image, points, color, lineType=cv2.LINE_8, shift=_SHIFT)


class _Painter:
  """Draws one track's shape into frames: flat colour, or its texture's view."""

  def __init__(self, track: synthetic_scenes.ShapeTrack, frame_side: int):
    self.polygons = track.polygons()
    self.color = track.color
    self.photo = self.affines = None
    if track.texture is not None:
      self.photo = natural_images.photo(track.texture.photo, frame_side)
      self.affines = track.texture_affines()

  def pixels(self, t: int, mask: np.ndarray):
    """(box (x, y, w, h), bool [h, w] inside, uint8 [N, 3] pixels) of frame t, or None
    where the shape covers no pixel; `mask` is uint8 [H, W] scratch space."""
    mask.fill(0)
    _fill(mask, self.polygons[t], 1)
    x, y, w, h = cv2.boundingRect(mask)
    if w <= 0 or h <= 0:
      return None
    inside = mask[y:y + h, x:x + w].view(bool)  # [h, w]; mask holds 0/1
    if self.photo is None:
      drawn = np.empty((int(inside.sum()), 3), np.uint8)
      drawn[:] = self.color
    else:
      affine = self.affines[t].copy()
      affine[:, 2] += affine[:, :2] @ np.array([x, y], np.float64)  # the box's origin
      drawn = natural_images.view(self.photo, affine, w, h)[inside]
    return (x, y, w, h), inside, drawn

  def paint(self, frame: np.ndarray, t: int, mask: np.ndarray) -> None:
    if self.photo is None:
      _fill(frame, self.polygons[t], self.color)
      return
    found = self.pixels(t, mask)
    if found is not None:
      (x, y, w, h), inside, drawn = found
      frame[y:y + h, x:x + w][inside] = drawn


def render(params: synthetic_scenes.ClipParams, draw_actor: bool = True
           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Draws a clip.

  Args:
    params: from `sample_params` (or `Clip.params`).
    draw_actor: False renders the identical clip (same background, distractors
      and noise) without the actor; the ground truth then still describes where
      the actor would be.

  Returns:
    video uint8 [T, H, W, 3] RGB, boxes float32 [T, 4] (x0, y0, x1, y1) with
    x1/y1 exclusive and -1 where absent, present bool [T].
  """
  num_frames = params.num_frames
  height, width = params.frame_shape
  side = min(height, width)
  camera = params.camera
  per_frame = list(params.moving_distractors)
  if camera is None:
    scene = params.background.copy()
    for track in params.static_distractors:
      _Painter(track, side).paint(scene, 0, None)
  else:  # The view changes in every frame: static shapes are drawn in each.
    camera_photo = natural_images.photo(camera.photo, side)
    camera_affines = camera.affines()
    per_frame = list(params.static_distractors) + per_frame
  painters = [_Painter(track, side) for track in per_frame]
  actor_painter = _Painter(params.actor, side)
  noise_rng = np.random.default_rng(params.noise_seed)
  start, end = params.segment

  video = np.empty((num_frames, height, width, 3), np.uint8)
  boxes = np.full((num_frames, 4), -1, np.float32)
  present = np.zeros(num_frames, bool)
  mask = np.empty((height, width), np.uint8)
  for t in range(num_frames):
    frame = video[t]
    if camera is None:
      frame[...] = scene
    else:
      frame[...] = natural_images.view(camera_photo, camera_affines[t], width, height)
    for painter in painters:
      painter.paint(frame, t, mask)
    noise = None
    if params.noise_std > 0:
      # Drawn for every frame whether or not the actor is drawn, so renders with
      # and without the actor share the noise exactly.
      noise = np.rint(noise_rng.standard_normal((height, width, 3), np.float32)
                      * np.float32(params.noise_std)).astype(np.int16)
    actor = None
    if start <= t < end:
      found = actor_painter.pixels(t, mask)
      if found is not None:
        (x, y, w, h), inside, drawn = found
        present[t] = True
        boxes[t] = (x, y, x + w, y + h)
        if draw_actor:
          under = frame[y:y + h, x:x + w][inside]  # [N, 3] as shown without actor
          if noise is not None:
            pixel_noise = noise[y:y + h, x:x + w][inside]
            under = _saturate(under + pixel_noise)
            drawn = _saturate(drawn + pixel_noise)
          # Where the actor's colour happens to equal what is under it (same
          # colour distractor, noise saturating), invert the pixel: the actor
          # then changes every pixel of its mask, so its box is exactly the box
          # of the pixels it changes (255 - v != v for integers).
          same = np.all(drawn == under, axis=-1)
          if same.any():
            drawn[same] = 255 - under[same]
          actor = (slice(y, y + h), slice(x, x + w), inside, drawn)
    if noise is not None:
      frame[...] = _saturate(frame + noise)
    if actor is not None:
      rows, cols, inside, drawn = actor
      frame[rows, cols][inside] = drawn
  return video, boxes, present


def _saturate(values: np.ndarray) -> np.ndarray:
  """int16 -> uint8 with clipping to [0, 255]."""
  return np.minimum(np.maximum(values, 0), 255).astype(np.uint8)


def _clip_from_params(params: synthetic_scenes.ClipParams) -> Clip:
  video, boxes, present = render(params)
  return Clip(video=video, label=params.label, boxes=boxes, present=present,
              segment=np.array(params.segment, np.int32), params=params)


def generate_clip(config: synthetic_settings.SyntheticConfig, index: int,
                  split: str = 'train') -> Clip:
  """Clip `index` of `split`; a pure function of (config, index, split)."""
  return _clip_from_params(synthetic_scenes.sample_params(config, index, split))


def generate_video(config: synthetic_settings.SyntheticConfig, index: int, num_frames: int,
                   split: str = 'val',
                   segment_frames: Optional[Tuple[int, int]] = None) -> Clip:
  """A long video with one action segment, for sliding-window localization.

  Uses its own seed stream, so it is not a longer version of clip `index`.
  Motion speeds are the clip speeds, lowered where a long segment would carry
  the actor out of the frame or past the size limits.

  Args:
    config: generator settings; its num_frames is ignored.
    index: video index (labels balanced as in `sample_params`).
    num_frames: frames of the video.
    split: 'train' or 'val'.
    segment_frames: (low, high) length of the action segment in frames;
      default (config.num_frames, 2 * config.num_frames), capped at
      num_frames - 1 so the actor always enters or leaves.

  Returns:
    The video as a Clip.
  """
  return _clip_from_params(synthetic_scenes.sample_video_params(
      config, index, num_frames, split, segment_frames))


class SyntheticDataset:
  """Random-access dataset of synthetic clips (rendered on access).

  Items are dicts: 'video' uint8 [T, H, W, 3] RGB, 'label' int, 'boxes'
  float32 [T, 4], 'present' bool [T], 'segment' int32 [2].
  """

  def __init__(self, config: synthetic_settings.SyntheticConfig, split: str = 'train',
               size: int = 1024):
    if split not in synthetic_settings.SPLITS:
      raise ValueError(f'Unknown split {split!r}; use one of {synthetic_settings.SPLITS}.')
    if size < 0:
      raise ValueError(f'size={size}: must be >= 0.')
    self.config = config
    self.split = split
    self.size = int(size)

  @property
  def class_names(self) -> List[str]:
    return list(synthetic_settings.CLASS_NAMES)

  @property
  def num_classes(self) -> int:
    return len(synthetic_settings.CLASS_NAMES)

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, i: int) -> Dict[str, object]:
    i = int(i)
    if i < 0:
      i += self.size
    if not 0 <= i < self.size:
      raise IndexError(f'index {i} out of range for a SyntheticDataset of size {self.size}.')
    return generate_clip(self.config, i, self.split).as_item()


def export_video_folder(root: str, config: synthetic_settings.SyntheticConfig,
                        split: str = 'train', size: int = 64, codec: str = 'MJPG',
                        container: str = '.avi', fps: float = 25.0) -> Dict[str, object]:
  """Writes clips 0..size-1 of `split` as video files plus annotations.

  Layout and annotation format are in the module docstring. Use one root per
  split: file names are per index and would collide across splits.
  Verified to decode back with cv2.VideoCapture here (opencv 5.0 headless):
  MJPG/.avi, mp4v/.mp4, XVID/.avi, FFV1/.avi (lossless); avc1/H.264 is not
  available in that build.

  Args:
    root: output directory (created).
    config: generator settings.
    split: 'train' or 'val'.
    size: number of clips.
    codec: FourCC passed to cv2.VideoWriter.
    container: file extension, with the dot.
    fps: frame rate stored in the files.

  Returns:
    The annotation dict also written to root/annotations.json.
  """
  if split not in synthetic_settings.SPLITS:
    raise ValueError(f'Unknown split {split!r}; use one of {synthetic_settings.SPLITS}.')
  if len(codec) != 4:
    raise ValueError(f'codec={codec!r}: a FourCC has 4 characters, e.g. "MJPG".')
  if not container.startswith('.'):
    raise ValueError(f'container={container!r}: give the extension with its dot, e.g. ".avi".')
  for name in synthetic_settings.CLASS_NAMES:
    os.makedirs(os.path.join(root, name), exist_ok=True)
  fourcc = cv2.VideoWriter.fourcc(*codec)
  videos = []
  for index in range(size):
    clip = generate_clip(config, index, split)
    relative = f'{clip.class_name}/{clip.class_name}_{index:06d}{container}'
    path = os.path.join(root, *relative.split('/'))
    writer = cv2.VideoWriter(path, fourcc, float(fps), (config.width, config.height))
    if not writer.isOpened():
      raise RuntimeError(
          f'cv2.VideoWriter cannot write {path!r} with codec {codec!r} in '
          f'{container!r}: this OpenCV build lacks that encoder/container pair. '
          "Use codec='MJPG' with container='.avi' (always available).")
    try:
      for frame in clip.video:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
      writer.release()
    videos.append(dict(
        path=relative, label=clip.label, num_frames=config.num_frames,
        height=config.height, width=config.width,
        segments=[[int(clip.segment[0]), int(clip.segment[1])]],
        boxes=[[int(v) for v in box] if present else None
               for box, present in zip(clip.boxes, clip.present)],
        index=index))
  annotations = dict(classes=list(synthetic_settings.CLASS_NAMES), split=split, fps=float(fps),
                     codec=codec, generator=dataclasses.asdict(config), videos=videos)
  with open(os.path.join(root, 'annotations.json'), 'w') as f:
    json.dump(annotations, f)
  with open(os.path.join(root, 'classInd.txt'), 'w') as f:
    f.writelines(f'{label + 1} {name}\n'
                 for label, name in enumerate(synthetic_settings.CLASS_NAMES))
  if split == 'train':
    with open(os.path.join(root, 'trainlist01.txt'), 'w') as f:
      f.writelines(f'{v["path"]} {v["label"] + 1}\n' for v in videos)
  else:
    with open(os.path.join(root, 'testlist01.txt'), 'w') as f:
      f.writelines(f'{v["path"]}\n' for v in videos)
  return annotations
