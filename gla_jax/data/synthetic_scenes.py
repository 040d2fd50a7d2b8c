"""Random scene parameters of synthetic clips: shapes, motions, backgrounds, segments.

A clip is a textured background, a few distractor shapes and ONE actor shape
whose motion is the class (`synthetic_settings.CLASS_NAMES`), present in one
temporal segment. With `natural_images` the background is a camera path over
a photograph (`CameraPath`) and every shape carries a `Texture` cut from
another photograph (`natural_images`). Every draw comes from a generator seeded by (config.seed,
split, index), so a clip is a pure function of them; `synthetic.render` draws
the parameters sampled here.
"""
import colorsys
import dataclasses
import functools
import math
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from gla_jax.data import natural_images
from gla_jax.data import synthetic_settings

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


@dataclasses.dataclass(frozen=True)
class Texture:
  """A photograph glued to a shape: it moves, turns and scales with the shape.

  Attributes:
    photo: name in `natural_images.PHOTO_NAMES` (read at the frame's size,
      `natural_images.photo`).
    origin: (x, y) photo pixel at the shape's centre.
    scale: photo pixels per unit of the shape's radius.
  """
  photo: str
  origin: Tuple[float, float]
  scale: float


@dataclasses.dataclass(frozen=True, eq=False)
class CameraPath:
  """A camera filming a photograph: its view per frame.

  Attributes:
    photo: name in `natural_images.PHOTO_NAMES`.
    center: float [T, 2] (x, y) photo pixel at the frame's centre (the pan).
    scale: float [T] photo pixels per frame pixel (the zoom: smaller is closer).
    height: frame height H.
    width: frame width W.
  """
  photo: str
  center: np.ndarray
  scale: np.ndarray
  height: int
  width: int

  def affines(self) -> np.ndarray:
    """float [T, 2, 3]: frame pixel (x, y, 1) -> photo pixel, per frame."""
    frame_center = np.array([(self.width - 1) / 2, (self.height - 1) / 2])
    affines = np.zeros((len(self.scale), 2, 3))
    affines[:, 0, 0] = affines[:, 1, 1] = self.scale
    affines[:, :, 2] = self.center - self.scale[:, None] * frame_center
    return affines


@dataclasses.dataclass(frozen=True, eq=False)
class ShapeTrack:
  """One shape over all T frames of a clip (pixel units, image coordinates).

  Attributes:
    shape: key of the unit polygon in SHAPE_NAMES.
    color: RGB colour of a flat shape; None for a textured one.
    motion: class index of the motion, or -1 for a static shape.
    center: float [T, 2] (x, y) of the rotation/scaling centre.
    radius: float [T] radius of the circle enclosing the shape.
    angle: float [T] radians; increasing angle turns clockwise on screen
      (image y axis points down).
    texture: the photograph the shape is cut from (natural_images), or None.
  """
  shape: str
  color: Optional[Tuple[int, int, int]]
  motion: int
  center: np.ndarray
  radius: np.ndarray
  angle: np.ndarray
  texture: Optional[Texture] = None

  def polygons(self) -> np.ndarray:
    """Vertices per frame, float [T, K, 2] (x, y) in pixels."""
    unit = _SHAPES[self.shape]  # [K, 2]
    cos, sin = np.cos(self.angle)[:, None], np.sin(self.angle)[:, None]  # [T, 1]
    x = self.radius[:, None] * (unit[None, :, 0] * cos - unit[None, :, 1] * sin)
    y = self.radius[:, None] * (unit[None, :, 0] * sin + unit[None, :, 1] * cos)
    return np.stack([x + self.center[:, :1], y + self.center[:, 1:]], axis=-1)

  def texture_affines(self) -> np.ndarray:
    """float [T, 2, 3]: frame pixel (x, y, 1) -> texture photo pixel, per frame.

    The inverse of the shape's pose: the point at unit coordinates u of the
    shape shows photo pixel origin + scale * u in every frame.
    """
    if self.texture is None:
      raise ValueError(f'This {self.shape!r} track is flat-coloured: it has no texture to map.')
    cos, sin = np.cos(self.angle), np.sin(self.angle)
    gain = self.texture.scale / self.radius  # [T]
    linear = gain[:, None, None] * np.stack([np.stack([cos, sin], -1),
                                             np.stack([-sin, cos], -1)], -2)  # [T, 2, 2]
    offset = np.asarray(self.texture.origin)[None] - np.einsum('tij,tj->ti', linear, self.center)
    return np.concatenate([linear, offset[:, :, None]], axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class ClipParams:
  """Everything `render` needs; sampled by `sample_params`.

  Attributes:
    label: class index of the actor's motion.
    segment: (start, end_exclusive) frames where the actor is present.
    background: uint8 [H, W, 3] texture (without any shape); None with a camera.
    actor: the actor's track.
    static_distractors: shapes drawn once on the background.
    moving_distractors: shapes drawn in every frame, under the actor.
    noise_std: Gaussian pixel noise std (uint8 levels).
    noise_seed: seed of the noise, shared by renders with and without actor.
    camera: the moving view of a photograph that replaces the background
      (natural_images), or None.
  """
  label: int
  segment: Tuple[int, int]
  background: Optional[np.ndarray]
  actor: ShapeTrack
  static_distractors: Tuple[ShapeTrack, ...]
  moving_distractors: Tuple[ShapeTrack, ...]
  noise_std: float
  noise_seed: int
  camera: Optional[CameraPath] = None

  @property
  def num_frames(self) -> int:
    """T, the length of the clip."""
    return self.actor.center.shape[0]

  @property
  def frame_shape(self) -> Tuple[int, int]:
    """(H, W) of the frames."""
    if self.camera is not None:
      return self.camera.height, self.camera.width
    return self.background.shape[:2]



def _rng(config: synthetic_settings.SyntheticConfig, split: str, index: int,
         stream: int) -> np.random.Generator:
  """Independent generator per (seed, split, kind of sample, index)."""
  if split not in synthetic_settings.SPLITS:
    raise ValueError(f'Unknown split {split!r}; use one of {synthetic_settings.SPLITS}.')
  index = int(index)
  if index < 0:
    raise ValueError(f'index={index}: clip indices are non-negative.')
  # Split and stream go in a separate word from the index, so no (split, index)
  # pair can collide with another one: the splits are disjoint by construction.
  tag = synthetic_settings.SPLITS.index(split) * 2 + stream
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


def _sample_camera(rng: np.random.Generator, config: synthetic_settings.SyntheticConfig,
                   num_frames: int) -> CameraPath:
  """A random photograph filmed with a pan in a random direction and a zoom in or out.

  The view stays inside the photograph: zoom and pan are lowered per clip
  where the whole path would not fit (long videos).
  """
  height, width = config.height, config.width
  side = min(height, width)
  name = natural_images.PHOTO_NAMES[int(rng.integers(len(natural_images.PHOTO_NAMES)))]
  photo_height, photo_width = natural_images.photo(name, side).shape[:2]
  photo_size = np.array([photo_width, photo_height], np.float64)
  frame_half = np.array([width, height], np.float64) / 2
  steps = max(num_frames - 1, 1)
  # The largest scale at which the whole frame fits in the photograph, a little inside.
  fit_scale = 0.98 * float(np.min(photo_size / (2 * frame_half)))
  scale_mid = min(rng.uniform(0.8, 1.2), fit_scale)
  zoom = rng.uniform(*config.camera_zoom_speed) * (1.0 if rng.uniform() < 0.5 else -1.0)
  zoom_room = 2 * math.log(fit_scale / scale_mid) / steps
  zoom = math.copysign(min(abs(zoom), max(zoom_room, 0.0)), zoom)
  scale = scale_mid * np.exp(zoom * (np.arange(num_frames) - steps / 2))
  extent = float(scale.max()) * frame_half  # the largest half-view, photo pixels
  room = np.maximum(photo_size - 2 * extent, 0.0)
  theta = rng.uniform(0, 2 * np.pi)
  direction = np.array([math.cos(theta), math.sin(theta)])
  speed = rng.uniform(*config.camera_pan_speed) * side * scale_mid  # photo pixels per frame
  for axis in (0, 1):
    if abs(direction[axis]) > 1e-9:
      speed = min(speed, room[axis] / (abs(direction[axis]) * steps))
  travel = direction * speed * steps
  low = extent + np.maximum(-travel, 0.0)
  high = photo_size - extent - np.maximum(travel, 0.0)
  center0 = low + rng.uniform(size=2) * np.maximum(high - low, 0.0)
  center = center0[None] + direction[None] * speed * np.arange(num_frames)[:, None]
  return CameraPath(photo=name, center=center, scale=scale, height=height, width=width)


def _sample_texture(rng: np.random.Generator, side: int, radius: float,
                    exclude: Optional[str]) -> Texture:
  """A random crop of a photograph other than `exclude` (the background's), for a shape
  of `radius` frame pixels: about one photo pixel per frame pixel."""
  names = [name for name in natural_images.PHOTO_NAMES if name != exclude]
  name = names[int(rng.integers(len(names)))]
  photo_height, photo_width = natural_images.photo(name, side).shape[:2]
  scale = radius * rng.uniform(0.8, 1.25)
  margin = min(scale, photo_width / 2, photo_height / 2)
  origin = (rng.uniform(margin, photo_width - margin), rng.uniform(margin, photo_height - margin))
  return Texture(photo=name, origin=(float(origin[0]), float(origin[1])), scale=float(scale))


def _sample_track(rng: np.random.Generator, config: synthetic_settings.SyntheticConfig,
                  motion: int, num_frames: int, start: int, end: int,
                  exclude_photo: Optional[str] = None) -> ShapeTrack:
  """A random shape moving with `motion` in frames [start, end), still outside.

  Args:
    rng: generator to draw from.
    config: sizes, speeds and frame shape.
    motion: class index of the motion, or -1 for a static shape.
    num_frames: T of the clip.
    start: first frame of the motion.
    end: one past its last frame.
    exclude_photo: with natural_images, the background's photograph, which
      the shape's texture is not cut from.

  Returns:
    The track; the whole shape stays inside the frame in every frame.
  """
  height, width = config.height, config.width
  side = min(height, width)
  shape = SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]
  # Flat shapes only: the draws of the other difficulties stay as they were.
  color = None if config.natural_images else _random_color(rng)
  min_radius = max(synthetic_settings.MIN_RADIUS_PX, synthetic_settings.MIN_RADIUS_FRACTION * side)
  max_radius = synthetic_settings.MAX_RADIUS_FRACTION * side
  radius_mid = float(np.clip(rng.uniform(*config.actor_size) * side / 2, min_radius, max_radius))
  angle0 = rng.uniform(0, 2 * np.pi)
  steps = max(end - start - 1, 1)
  # Progress of the motion per frame: 0 before the segment, steps after it.
  progress = np.clip(np.arange(num_frames) - start, 0, steps).astype(np.float64)

  radius = np.full(num_frames, radius_mid)
  angle = np.full(num_frames, angle0)
  direction = np.zeros(2)
  speed = 0.0
  name = synthetic_settings.CLASS_NAMES[motion] if motion >= 0 else 'static'
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
  texture = (_sample_texture(rng, side, radius_mid, exclude_photo)
             if config.natural_images else None)
  return ShapeTrack(shape=shape, color=color, motion=motion, center=center,
                    radius=radius, angle=angle, texture=texture)


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


def _sample_scene(rng: np.random.Generator, config: synthetic_settings.SyntheticConfig,
                  label: int, num_frames: int, segment: Tuple[int, int]) -> ClipParams:
  camera = _sample_camera(rng, config, num_frames) if config.natural_images else None
  background = None if camera else _background(rng, config.height, config.width)
  photo = camera.photo if camera else None
  actor = _sample_track(rng, config, label, num_frames, *segment, exclude_photo=photo)
  distractors = []
  for _ in range(config.num_distractors):
    motion = (int(rng.integers(len(synthetic_settings.CLASS_NAMES)))
              if config.moving_distractors else -1)
    distractors.append(_sample_track(rng, config, motion, num_frames, 0, num_frames,
                                     exclude_photo=photo))
  moving = tuple(distractors) if config.moving_distractors else ()
  static = () if config.moving_distractors else tuple(distractors)
  return ClipParams(label=label, segment=segment, background=background, actor=actor,
                    static_distractors=static, moving_distractors=moving,
                    noise_std=float(config.noise_std),
                    noise_seed=int(rng.integers(2**63 - 1)), camera=camera)


def sample_params(config: synthetic_settings.SyntheticConfig, index: int,
                  split: str = 'train') -> ClipParams:
  """The random parameters of clip `index` of `split` (cheap; no rendering).

  Labels are balanced: clip `index` has label `index % len(CLASS_NAMES)`.
  """
  rng = _rng(config, split, index, stream=0)
  label = int(index) % len(synthetic_settings.CLASS_NAMES)
  min_length = math.ceil(config.min_segment_fraction * config.num_frames)
  segment = _sample_segment(rng, config.num_frames, min_length, config.num_frames,
                            config.full_clip_probability)
  return _sample_scene(rng, config, label, config.num_frames, segment)


def sample_video_params(config: synthetic_settings.SyntheticConfig, index: int, num_frames: int,
                        split: str = 'val',
                        segment_frames: Optional[Tuple[int, int]] = None) -> ClipParams:
  """The random parameters of long video `index` (`synthetic.generate_video`).

  Uses its own seed stream, so it is not a longer version of clip `index`;
  the arguments are those of `synthetic.generate_video`.
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
  label = int(index) % len(synthetic_settings.CLASS_NAMES)
  # A long video is never filled by the action (that is what makes it a
  # localization problem), so the whole-clip case is off here.
  segment = _sample_segment(rng, num_frames, low, high, full_clip_probability=0.0)
  long_config = dataclasses.replace(config, num_frames=num_frames)
  return _sample_scene(rng, long_config, label, num_frames, segment)
