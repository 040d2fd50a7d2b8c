"""Synthetic action clips with exact ground truth: the project's embedded dataset.

No dataset can be downloaded on our machines and localization needs ground truth,
so this module renders labelled clips (DESIGN.md section 3). Each clip shows

- a textured background (smooth colour field + linear gradient + stripes,
  checkerboard or dots), different per clip;
- a few distractor shapes, static by default (`moving_distractors=True` makes
  them move with random motions from the class set);
- ONE actor shape whose MOTION is the class (`CLASS_NAMES`). Shape family and
  colour are drawn at random for the actor and the distractors alike, so only
  the motion identifies the class and appearance alone cannot identify the
  actor. Every shape (arrow, ell, hammer, flag, wedge) is elongated with a
  distinct head or side, so rotation is visible. The actor is present only in a temporal segment of at least
  `min_segment_fraction` of the frames (sometimes the whole clip) and absent
  outside it; it is drawn on top, so it is never occluded.

Ground truth is exact: the box of frame t is the tight bounding box of the
actor's rendered pixel mask, `[x0, y0, x1, y1]` in pixels with x1/y1
EXCLUSIVE, all -1 where the actor is absent. The renderer guarantees that
every actor pixel differs from the same clip rendered without the actor
(`render(params, draw_actor=False)`), so the box is also the bounding box of
the pixels that the actor changes.

Everything is deterministic from `(config.seed, split, index)`; the 'train' and
'val' splits use different seed streams. Drawing is numpy + cv2 only (about
2-2.5 ms per 16x112x112 clip on one core at the default difficulty, ~15 ms
with the hard preset's per-pixel noise; tests/test_synthetic.py prints it).

API:
  cfg = SyntheticConfig.default()  # or .hard(), .demo(), .demo_hard(), DIFFICULTIES['hard']
  clip = generate_clip(cfg, index, split='train')   # -> Clip
  clip.video   # uint8 [T, H, W, 3] RGB
  clip.boxes   # float32 [T, 4] (x0, y0, x1, y1), x1/y1 exclusive, -1 if absent
  clip.present # bool [T];  clip.segment int32 [2] (start, end_exclusive)
  clip.label   # int, index into CLASS_NAMES
  video, boxes, present = render(clip.params, draw_actor=False)
  long = generate_video(cfg, index, num_frames=256)  # one action in a long video
  ds = SyntheticDataset(cfg, split='val', size=512)  # ds[i] -> dict(video, label,
                                                     #   boxes, present, segment)
  export_video_folder(root, cfg, split='train', size=64)

Exported video folder (`export_video_folder`), one root per split:

  root/<class_name>/<class_name>_<index:06d><container>   (e.g. .avi)
  root/annotations.json
  root/classInd.txt      UCF101 style: "<label+1> <class_name>" per line
  root/trainlist01.txt   split 'train': "<class>/<file> <label+1>" per line
  root/testlist01.txt    split 'val':   "<class>/<file>" per line

annotations.json (frames are counted from 0; boxes in pixels, x1/y1 exclusive):

  {
    "classes": ["move_left", ...],          # label i is classes[i]
    "split": "train", "fps": 25.0, "codec": "MJPG",
    "generator": {...SyntheticConfig fields...},
    "videos": [
      {"path": "move_left/move_left_000000.avi",   # relative to root, '/'
       "label": 0,
       "num_frames": 16, "height": 112, "width": 112,
       "segments": [[start, end_exclusive]],       # one segment per video here
       "boxes": [[x0, y0, x1, y1] or null, ...],   # one entry per frame
       "index": 0}                                  # generator index
    ]
  }

Readers must ignore keys they do not know ("split", "fps", "codec",
"generator", "index" are informative).
"""
import colorsys
import dataclasses
import functools
import json
import math
import os
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

CLASS_NAMES: Tuple[str, ...] = (
    'move_left', 'move_right', 'move_up', 'move_down',
    'grow', 'shrink', 'rotate_cw', 'rotate_ccw')

SPLITS: Tuple[str, ...] = ('train', 'val')

# Unit polygons pointing along +x, scaled below so every vertex lies inside the
# unit circle (the placement code relies on that bound). All are one-sided and
# elongated, so a rotation changes the image and the principal axis of the mask
# (used by the tests to measure the orientation) is well defined.
_SHAPES: Dict[str, np.ndarray] = {
    'arrow': np.array([(1.0, 0.0), (0.15, 0.65), (0.15, 0.25), (-0.95, 0.25),
                       (-0.95, -0.25), (0.15, -0.25), (0.15, -0.65)]),
    'ell': np.array([(-0.95, -0.3), (0.95, -0.3), (0.95, 0.1), (-0.45, 0.1),
                     (-0.45, 0.75), (-0.95, 0.75)]),
    'hammer': np.array([(-0.95, -0.18), (0.45, -0.18), (0.45, -0.75),
                        (0.85, -0.75), (0.85, 0.35), (0.45, 0.35), (0.45, 0.18),
                        (-0.95, 0.18)]),
    'flag': np.array([(-0.95, -0.12), (0.95, -0.12), (0.95, 0.3), (0.25, 0.3),
                      (0.25, 0.12), (-0.95, 0.12)]),
    'wedge': np.array([(1.0, 0.0), (-0.8, 0.55), (-0.5, 0.0), (-0.8, -0.3)]),
}
_SHAPES = {name: vertices / np.linalg.norm(vertices, axis=1).max()
           for name, vertices in _SHAPES.items()}
SHAPE_NAMES: Tuple[str, ...] = tuple(_SHAPES)

# cv2.fillPoly with fractional bits gives sub-pixel motion (no 1-px snapping).
_SHIFT = 4
_SUBPIXEL = float(1 << _SHIFT)

# Smallest and largest shape radius. The floor keeps a shrinking or small actor
# a non-empty, recognisable mask even at 32x32; the ceiling keeps it in frame.
_MIN_RADIUS_PX = 2.5
_MIN_RADIUS_FRACTION = 0.05
_MAX_RADIUS_FRACTION = 0.45


def _check(condition: bool, message: str):
  if not condition:
    raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Generator settings; every clip is a function of (this, split, index).

  Attributes:
    num_frames: frames per clip T.
    height: frame height H in pixels (>= 16; 32, 64 and 112 are used).
    width: frame width W in pixels (>= 16).
    actor_size: (low, high) diameter of the actor and of the distractors as a
      fraction of min(H, W), sampled uniformly per shape (for grow/shrink it is
      the size in the middle of the motion).
    num_distractors: distractor shapes per clip.
    moving_distractors: distractors move with random motions from the class set
      over the whole clip; then only the actor's appearance in its segment
      tells it apart from them.
    noise_std: std of additive Gaussian pixel noise in uint8 levels (0 = none).
    min_segment_fraction: the actor's segment covers at least this fraction of
      the frames (and at least 2 frames, so the motion is visible).
    full_clip_probability: probability that the actor is present in every
      frame; otherwise it is absent from at least one frame.
    translation_speed: (low, high) move_* speed as a fraction of min(H, W) per
      frame; lowered per clip when the path would leave the frame.
    scale_speed: (low, high) grow/shrink rate in log-size per frame; lowered
      per clip when the radius would leave [max(2.5 px, 5%), 45%] of
      min(H, W).
    rotation_speed: (low, high) rotate_* speed in degrees per frame.
    seed: base seed; train and val use different streams derived from it.
  """
  num_frames: int = 16
  height: int = 112
  width: int = 112
  actor_size: Tuple[float, float] = (0.25, 0.4)
  num_distractors: int = 3
  moving_distractors: bool = False
  noise_std: float = 0.0
  min_segment_fraction: float = 0.5
  full_clip_probability: float = 0.2
  translation_speed: Tuple[float, float] = (0.02, 0.04)
  scale_speed: Tuple[float, float] = (0.03, 0.06)
  rotation_speed: Tuple[float, float] = (8.0, 15.0)
  seed: int = 0

  def __post_init__(self):
    _check(self.num_frames >= 2, f'num_frames={self.num_frames}: need >= 2 frames '
           'to show a motion; set num_frames >= 2.')
    _check(self.height >= 16 and self.width >= 16,
           f'height/width={self.height}x{self.width}: shapes cannot be drawn '
           'recognisably below 16 pixels; use >= 16 (32, 64 or 112).')
    for name, low_bound in (('actor_size', 0.0), ('translation_speed', 0.0),
                            ('scale_speed', 0.0), ('rotation_speed', 0.0)):
      value = getattr(self, name)
      _check(len(value) == 2 and low_bound < value[0] <= value[1],
             f'{name}={value}: must be a (low, high) pair with '
             f'{low_bound} < low <= high.')
    _check(self.actor_size[1] <= 2 * _MAX_RADIUS_FRACTION,
           f'actor_size={self.actor_size}: the diameter cannot exceed '
           f'{2 * _MAX_RADIUS_FRACTION} of the frame; lower the high end.')
    _check(self.num_distractors >= 0,
           f'num_distractors={self.num_distractors}: must be >= 0.')
    _check(self.noise_std >= 0, f'noise_std={self.noise_std}: must be >= 0.')
    _check(0 < self.min_segment_fraction <= 1,
           f'min_segment_fraction={self.min_segment_fraction}: must be in (0, 1].')
    _check(0 <= self.full_clip_probability <= 1,
           f'full_clip_probability={self.full_clip_probability}: must be in [0, 1].')
    _check(self.seed >= 0, f'seed={self.seed}: must be a non-negative integer.')

  @classmethod
  def default(cls, **overrides) -> 'SyntheticConfig':
    """The default difficulty: large actor, 3 static distractors, no noise."""
    return cls(**overrides)

  @classmethod
  def hard(cls, **overrides) -> 'SyntheticConfig':
    """Small actor, 5 moving distractors, pixel noise.

    The actor is never present in the whole clip here
    (`full_clip_probability=0`): with distractors moving like actors, its
    appearance and disappearance are what identify it.
    """
    params = dict(actor_size=(0.12, 0.2), num_distractors=5, moving_distractors=True,
                  noise_std=12.0, full_clip_probability=0.0)
    params.update(overrides)
    return cls(**params)

  @classmethod
  def demo(cls, **overrides) -> 'SyntheticConfig':
    """Larger and about 3x faster actors, for short small clips (configs/demo.py).

    The default speeds suit 16 frames of 112 x 112: on 8 frames of 32 x 32 an
    actor of the default difficulty moves 0.6-1.3 pixels or turns 8-15 degrees
    per frame, and a small 3D ResNeXt stays near chance (README "Training the
    demo"). Here it travels 2-4 pixels or turns 30-45 degrees per frame, is
    13-18 pixels across and is present in at least 6 of 8 frames; the static
    distractors remain, so the motion is still the only cue to the class.
    """
    params = dict(actor_size=(0.4, 0.55), translation_speed=(0.06, 0.12),
                  scale_speed=(0.1, 0.18), rotation_speed=(30.0, 45.0),
                  min_segment_fraction=0.75)
    params.update(overrides)
    return cls(**params)

  @classmethod
  def demo_hard(cls, **overrides) -> 'SyntheticConfig':
    """The demo's speeds with the hard preset's clutter: smaller actor, 5 moving
    distractors, pixel noise, never present in the whole clip."""
    params = dataclasses.asdict(cls.demo())
    params.update(actor_size=(0.15, 0.25), num_distractors=5, moving_distractors=True,
                  noise_std=12.0, full_clip_probability=0.0)
    params.update(overrides)
    return cls(**params)

  @classmethod
  def from_difficulty(cls, name: str, **overrides) -> 'SyntheticConfig':
    """The preset `name` in DIFFICULTIES with `overrides` applied."""
    if name not in DIFFICULTIES:
      raise ValueError(f'Unknown difficulty {name!r}; use one of {sorted(DIFFICULTIES)}.')
    return dataclasses.replace(DIFFICULTIES[name], **overrides)


DIFFICULTIES: Dict[str, SyntheticConfig] = {
    'default': SyntheticConfig.default(),
    'hard': SyntheticConfig.hard(),
    'demo': SyntheticConfig.demo(),
    'demo_hard': SyntheticConfig.demo_hard(),
}


@dataclasses.dataclass(frozen=True, eq=False)
class ShapeTrack:
  """One shape over all T frames of a clip (pixel units, image coordinates).

  Attributes:
    shape: key of the unit polygon in SHAPE_NAMES.
    color: RGB colour.
    motion: class index of the motion, or -1 for a static shape.
    center: float [T, 2] (x, y) of the rotation/scaling centre.
    radius: float [T] radius of the circle enclosing the shape.
    angle: float [T] radians; increasing angle turns clockwise on screen
      (image y axis points down).
  """
  shape: str
  color: Tuple[int, int, int]
  motion: int
  center: np.ndarray
  radius: np.ndarray
  angle: np.ndarray

  def polygons(self) -> np.ndarray:
    """Vertices per frame, float [T, K, 2] (x, y) in pixels."""
    unit = _SHAPES[self.shape]  # [K, 2]
    cos, sin = np.cos(self.angle)[:, None], np.sin(self.angle)[:, None]  # [T, 1]
    x = self.radius[:, None] * (unit[None, :, 0] * cos - unit[None, :, 1] * sin)
    y = self.radius[:, None] * (unit[None, :, 0] * sin + unit[None, :, 1] * cos)
    return np.stack([x + self.center[:, :1], y + self.center[:, 1:]], axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class ClipParams:
  """Everything `render` needs; sampled by `sample_params`.

  Attributes:
    label: class index of the actor's motion.
    segment: (start, end_exclusive) frames where the actor is present.
    background: uint8 [H, W, 3] texture (without any shape).
    actor: the actor's track.
    static_distractors: shapes drawn once on the background.
    moving_distractors: shapes drawn in every frame, under the actor.
    noise_std: Gaussian pixel noise std (uint8 levels).
    noise_seed: seed of the noise, shared by renders with and without actor.
  """
  label: int
  segment: Tuple[int, int]
  background: np.ndarray
  actor: ShapeTrack
  static_distractors: Tuple[ShapeTrack, ...]
  moving_distractors: Tuple[ShapeTrack, ...]
  noise_std: float
  noise_seed: int

  @property
  def num_frames(self) -> int:
    """T, the length of the clip."""
    return self.actor.center.shape[0]


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
  params: ClipParams

  @property
  def class_name(self) -> str:
    return CLASS_NAMES[self.label]

  def as_item(self) -> Dict[str, object]:
    """The dataset item: dict(video, label, boxes, present, segment)."""
    return dict(video=self.video, label=self.label, boxes=self.boxes,
                present=self.present, segment=self.segment)


def _rng(config: SyntheticConfig, split: str, index: int, stream: int) -> np.random.Generator:
  """Independent generator per (seed, split, kind of sample, index)."""
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; use one of {SPLITS}.')
  index = int(index)
  if index < 0:
    raise ValueError(f'index={index}: clip indices are non-negative.')
  # Split and stream go in a separate word from the index, so no (split, index)
  # pair can collide with another one: the splits are disjoint by construction.
  tag = SPLITS.index(split) * 2 + stream
  return np.random.default_rng(np.random.SeedSequence([config.seed, tag, index]))


def _random_color(rng: np.random.Generator) -> Tuple[int, int, int]:
  # Saturated and bright, unlike the muted background, so shapes stand out.
  r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
  return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


@functools.lru_cache(maxsize=64)
def _upsampling_matrix(length: int, cells: int) -> np.ndarray:
  """float32 [length, cells]: smoothstep interpolation between cell values.

  Upsampling as two small matrix products is several times faster than
  cv2.resize for these tiny inputs, and smoothstep hides the cell borders.
  """
  position = np.linspace(0, cells - 1, length)
  left = np.minimum(np.floor(position).astype(int), cells - 2)
  t = position - left
  t = t * t * (3 - 2 * t)
  matrix = np.zeros((length, cells), np.float32)
  matrix[np.arange(length), left] = 1 - t
  matrix[np.arange(length), left + 1] = t
  return matrix


def _wave(rng: np.random.Generator, freq: float, theta: float, xs: np.ndarray,
          ys: np.ndarray) -> np.ndarray:
  """sin(freq * (x cos(theta) + y sin(theta)) + phase), float32 [H, W].

  Expanded as sin(a + b) = sin a cos b + cos a sin b: outer products of 1-D
  waves cost far less than a sine over every pixel.
  """
  a = freq * np.cos(theta) * xs + rng.uniform(0, 2 * np.pi)  # [1, W]
  b = freq * np.sin(theta) * ys  # [H, 1]
  return np.sin(a) * np.cos(b) + np.cos(a) * np.sin(b)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """Muted smooth colour field + gradient + a periodic pattern, uint8 [H, W, 3]."""
  cells = int(rng.integers(2, 6))
  gray = rng.uniform(70, 170)
  low = (gray + rng.uniform(-35, 35, (1, cells, cells))
         + rng.uniform(-20, 20, (3, cells, cells))).astype(np.float32)  # [3, g, g]
  # Planar [3, H, W] layout so per-pixel [H, W] terms broadcast contiguously.
  image = _upsampling_matrix(height, cells) @ low @ _upsampling_matrix(width, cells).T
  ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]  # [H, 1]
  xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]  # [1, W]
  image += np.float32(rng.uniform(-40, 40)) * xs + np.float32(rng.uniform(-40, 40)) * ys
  theta = rng.uniform(0, np.pi)
  freq = 2 * np.pi * rng.uniform(3, 10)
  kind = int(rng.integers(3))
  pattern = _wave(rng, freq, theta, xs, ys)
  if kind == 1:  # checkerboard
    pattern = np.sign(pattern * _wave(rng, freq, theta + np.pi / 2, xs, ys))
  elif kind == 2:  # dots
    pattern = np.where(pattern * _wave(rng, freq, theta + np.pi / 2, xs, ys) > 0.6,
                       np.float32(1), np.float32(-1))
  # kind 0: stripes, the wave itself.
  tint = (rng.uniform(0.5, 1.0, 3) * rng.uniform(6, 22)).astype(np.float32)
  image += tint[:, None, None] * pattern
  image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return cv2.merge(list(image))  # [H, W, 3]; much faster than a transposed copy


def _sample_track(rng: np.random.Generator, config: SyntheticConfig, motion: int,
                  num_frames: int, start: int, end: int) -> ShapeTrack:
  """A random shape moving with `motion` in frames [start, end), still outside.

  Args:
    rng: generator to draw from.
    config: sizes, speeds and frame shape.
    motion: class index of the motion, or -1 for a static shape.
    num_frames: T of the clip.
    start: first frame of the motion.
    end: one past its last frame.

  Returns:
    The track; the whole shape stays inside the frame in every frame.
  """
  height, width = config.height, config.width
  side = min(height, width)
  shape = SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]
  color = _random_color(rng)
  min_radius = max(_MIN_RADIUS_PX, _MIN_RADIUS_FRACTION * side)
  max_radius = _MAX_RADIUS_FRACTION * side
  radius_mid = float(np.clip(rng.uniform(*config.actor_size) * side / 2, min_radius, max_radius))
  angle0 = rng.uniform(0, 2 * np.pi)
  steps = max(end - start - 1, 1)
  # Progress of the motion per frame: 0 before the segment, steps after it.
  progress = np.clip(np.arange(num_frames) - start, 0, steps).astype(np.float64)

  radius = np.full(num_frames, radius_mid)
  angle = np.full(num_frames, angle0)
  direction = np.zeros(2)
  speed = 0.0
  name = CLASS_NAMES[motion] if motion >= 0 else 'static'
  if name in ('grow', 'shrink'):
    rate = rng.uniform(*config.scale_speed)
    # Symmetric in log-size around radius_mid; slowed down to stay in bounds.
    headroom = 2 * min(math.log(max_radius / radius_mid), math.log(radius_mid / min_radius))
    rate = min(rate, headroom / steps)
    sign = 1.0 if name == 'grow' else -1.0
    radius = radius_mid * np.exp(sign * rate * (progress - steps / 2))
  elif name in ('rotate_cw', 'rotate_ccw'):
    sign = 1.0 if name == 'rotate_cw' else -1.0
    angle = angle0 + sign * np.deg2rad(rng.uniform(*config.rotation_speed)) * progress
  elif name.startswith('move_'):
    direction = {'move_left': (-1.0, 0.0), 'move_right': (1.0, 0.0),
                 'move_up': (0.0, -1.0), 'move_down': (0.0, 1.0)}[name]
    direction = np.array(direction)
    speed = rng.uniform(*config.translation_speed) * side

  reach = float(radius.max()) + 1.0  # one pixel of margin for rounding
  room = np.array([width, height]) - 2 * reach  # free travel along x and y
  if speed > 0:
    axis = int(np.argmax(np.abs(direction)))
    speed = min(speed, max(room[axis], 0.0) / steps)
  travel = direction * speed * steps  # signed displacement over the motion
  low = reach + np.maximum(-travel, 0.0)
  high = reach + room - np.maximum(travel, 0.0)
  center0 = low + rng.uniform(size=2) * np.maximum(high - low, 0.0)
  center = center0[None, :] + direction[None, :] * speed * progress[:, None]  # [T, 2]
  return ShapeTrack(shape=shape, color=color, motion=motion, center=center,
                    radius=radius, angle=angle)


def _sample_segment(rng: np.random.Generator, num_frames: int, min_length: int,
                    max_length: int, full_clip_probability: float) -> Tuple[int, int]:
  """(start, end_exclusive): the whole clip with full_clip_probability, else a
  strict part of it (so the actor enters or leaves) of length in
  [min_length, max_length]; lengths are at least 2 frames."""
  min_length = min(max(min_length, 2), num_frames)
  full = rng.uniform() < full_clip_probability
  if full or min_length >= num_frames:
    return 0, num_frames
  max_length = min(max(max_length, min_length), num_frames - 1)
  length = int(rng.integers(min_length, max_length + 1))
  start = int(rng.integers(0, num_frames - length + 1))
  return start, start + length


def _sample_scene(rng: np.random.Generator, config: SyntheticConfig, label: int,
                  num_frames: int, segment: Tuple[int, int]) -> ClipParams:
  background = _background(rng, config.height, config.width)
  actor = _sample_track(rng, config, label, num_frames, *segment)
  distractors = []
  for _ in range(config.num_distractors):
    motion = int(rng.integers(len(CLASS_NAMES))) if config.moving_distractors else -1
    distractors.append(_sample_track(rng, config, motion, num_frames, 0, num_frames))
  moving = tuple(distractors) if config.moving_distractors else ()
  static = () if config.moving_distractors else tuple(distractors)
  return ClipParams(label=label, segment=segment, background=background, actor=actor,
                    static_distractors=static, moving_distractors=moving,
                    noise_std=float(config.noise_std),
                    noise_seed=int(rng.integers(2**63 - 1)))


def sample_params(config: SyntheticConfig, index: int, split: str = 'train') -> ClipParams:
  """The random parameters of clip `index` of `split` (cheap; no rendering).

  Labels are balanced: clip `index` has label `index % len(CLASS_NAMES)`.
  """
  rng = _rng(config, split, index, stream=0)
  label = int(index) % len(CLASS_NAMES)
  min_length = math.ceil(config.min_segment_fraction * config.num_frames)
  segment = _sample_segment(rng, config.num_frames, min_length, config.num_frames,
                            config.full_clip_probability)
  return _sample_scene(rng, config, label, config.num_frames, segment)


def _fill(image: np.ndarray, polygon: np.ndarray, color) -> None:
  points = np.rint(polygon * _SUBPIXEL).astype(np.int32)[None]  # [1, K, 2]
  cv2.fillPoly(image, points, color, lineType=cv2.LINE_8, shift=_SHIFT)


def render(params: ClipParams, draw_actor: bool = True
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
  height, width = params.background.shape[:2]
  scene = params.background.copy()
  for track in params.static_distractors:
    _fill(scene, track.polygons()[0], track.color)
  moving = [(track.polygons(), track.color) for track in params.moving_distractors]
  actor_polygons = params.actor.polygons()
  actor_color = np.array(params.actor.color, np.uint8)
  noise_rng = np.random.default_rng(params.noise_seed)
  start, end = params.segment

  video = np.empty((num_frames, height, width, 3), np.uint8)
  boxes = np.full((num_frames, 4), -1, np.float32)
  present = np.zeros(num_frames, bool)
  mask = np.empty((height, width), np.uint8)
  for t in range(num_frames):
    frame = video[t]
    frame[...] = scene
    for polygons, color in moving:
      _fill(frame, polygons[t], color)
    noise = None
    if params.noise_std > 0:
      # Drawn for every frame whether or not the actor is drawn, so renders with
      # and without the actor share the noise exactly.
      noise = np.rint(noise_rng.standard_normal((height, width, 3), np.float32)
                      * np.float32(params.noise_std)).astype(np.int16)
    actor = None
    if start <= t < end:
      mask.fill(0)
      _fill(mask, actor_polygons[t], 1)
      x, y, w, h = cv2.boundingRect(mask)
      if w > 0 and h > 0:
        present[t] = True
        boxes[t] = (x, y, x + w, y + h)
        if draw_actor:
          inside = mask[y:y + h, x:x + w].view(bool)  # [h, w]; mask holds 0/1
          under = frame[y:y + h, x:x + w][inside]  # [N, 3] as shown without actor
          drawn = np.empty_like(under)
          drawn[:] = actor_color
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


def _clip_from_params(params: ClipParams) -> Clip:
  video, boxes, present = render(params)
  return Clip(video=video, label=params.label, boxes=boxes, present=present,
              segment=np.array(params.segment, np.int32), params=params)


def generate_clip(config: SyntheticConfig, index: int, split: str = 'train') -> Clip:
  """Clip `index` of `split`; a pure function of (config, index, split)."""
  return _clip_from_params(sample_params(config, index, split))


def generate_video(config: SyntheticConfig, index: int, num_frames: int,
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
  if segment_frames is None:
    segment_frames = (config.num_frames, 2 * config.num_frames)
  low, high = segment_frames
  if not 2 <= low <= high:
    raise ValueError(f'segment_frames={segment_frames}: need 2 <= low <= high.')
  if num_frames < 3:
    raise ValueError(f'num_frames={num_frames}: a video with a strict 2-frame action '
                     'segment needs >= 3 frames.')
  low, high = min(low, num_frames - 1), min(high, num_frames - 1)
  rng = _rng(config, split, index, stream=1)
  label = int(index) % len(CLASS_NAMES)
  # A long video is never filled by the action (that is what makes it a
  # localization problem), so the whole-clip case is off here.
  segment = _sample_segment(rng, num_frames, low, high, full_clip_probability=0.0)
  long_config = dataclasses.replace(config, num_frames=num_frames)
  return _clip_from_params(_sample_scene(rng, long_config, label, num_frames, segment))


class SyntheticDataset:
  """Random-access dataset of synthetic clips (rendered on access).

  Items are dicts: 'video' uint8 [T, H, W, 3] RGB, 'label' int, 'boxes'
  float32 [T, 4], 'present' bool [T], 'segment' int32 [2].
  """

  def __init__(self, config: SyntheticConfig, split: str = 'train', size: int = 1024):
    if split not in SPLITS:
      raise ValueError(f'Unknown split {split!r}; use one of {SPLITS}.')
    if size < 0:
      raise ValueError(f'size={size}: must be >= 0.')
    self.config = config
    self.split = split
    self.size = int(size)

  @property
  def class_names(self) -> List[str]:
    return list(CLASS_NAMES)

  @property
  def num_classes(self) -> int:
    return len(CLASS_NAMES)

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, i: int) -> Dict[str, object]:
    i = int(i)
    if i < 0:
      i += self.size
    if not 0 <= i < self.size:
      raise IndexError(f'index {i} out of range for a SyntheticDataset of size {self.size}.')
    return generate_clip(self.config, i, self.split).as_item()


def export_video_folder(root: str, config: SyntheticConfig, split: str = 'train',
                        size: int = 64, codec: str = 'MJPG', container: str = '.avi',
                        fps: float = 25.0) -> Dict[str, object]:
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
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; use one of {SPLITS}.')
  if len(codec) != 4:
    raise ValueError(f'codec={codec!r}: a FourCC has 4 characters, e.g. "MJPG".')
  if not container.startswith('.'):
    raise ValueError(f'container={container!r}: give the extension with its dot, e.g. ".avi".')
  for name in CLASS_NAMES:
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
  annotations = dict(classes=list(CLASS_NAMES), split=split, fps=float(fps), codec=codec,
                     generator=dataclasses.asdict(config), videos=videos)
  with open(os.path.join(root, 'annotations.json'), 'w') as f:
    json.dump(annotations, f)
  with open(os.path.join(root, 'classInd.txt'), 'w') as f:
    f.writelines(f'{label + 1} {name}\n' for label, name in enumerate(CLASS_NAMES))
  if split == 'train':
    with open(os.path.join(root, 'trainlist01.txt'), 'w') as f:
      f.writelines(f'{v["path"]} {v["label"] + 1}\n' for v in videos)
  else:
    with open(os.path.join(root, 'testlist01.txt'), 'w') as f:
      f.writelines(f'{v["path"]}\n' for v in videos)
  return annotations
