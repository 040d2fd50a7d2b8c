"""Settings of the synthetic action generator: the classes, `SyntheticConfig`, its difficulties.

Each clip's class is the MOTION of its one actor shape (`CLASS_NAMES`); the
difficulty presets (`DIFFICULTIES`) set actor size, clutter, noise, speeds and
whether the scene is made of photographs filmed by a moving camera ('natural').
The generator itself is `synthetic_scenes` (random parameters) and `synthetic`
(rendering); docs/design.md describes the dataset.
"""
import dataclasses
from typing import Dict, Tuple

CLASS_NAMES: Tuple[str, ...] = (
    'move_left', 'move_right', 'move_up', 'move_down',
    'grow', 'shrink', 'rotate_cw', 'rotate_ccw')

SPLITS: Tuple[str, ...] = ('train', 'val')

# Smallest and largest shape radius. The floor keeps a shrinking or small actor
# a non-empty, recognisable mask even at 32x32; the ceiling keeps it in frame.
MIN_RADIUS_PX = 2.5
MIN_RADIUS_FRACTION = 0.05
MAX_RADIUS_FRACTION = 0.45


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
    natural_images: the background is a view of a photograph and every shape
      is cut from another one (`natural_images.PHOTO_NAMES`; the texture
      moves, turns and scales with its shape) instead of a procedural
      background and flat-coloured shapes.
    camera_pan_speed: (low, high) speed of the camera's pan, in a random
      direction, as a fraction of min(H, W) per frame (natural_images only;
      lowered per clip to stay inside the photograph).
    camera_zoom_speed: (low, high) zoom rate of the camera in log-scale per
      frame, in or out at random (natural_images only; lowered likewise).
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
  natural_images: bool = False
  camera_pan_speed: Tuple[float, float] = (0.0, 0.0)
  camera_zoom_speed: Tuple[float, float] = (0.0, 0.0)
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
    for name in ('camera_pan_speed', 'camera_zoom_speed'):
      value = getattr(self, name)
      _check(len(value) == 2 and 0 <= value[0] <= value[1],
             f'{name}={value}: must be a (low, high) pair with 0 <= low <= high.')
      _check(self.natural_images or value[1] == 0,
             f'{name}={value}: only a photograph can be panned over or zoomed into; set '
             'natural_images=True or the speed to (0.0, 0.0).')
    _check(self.actor_size[1] <= 2 * MAX_RADIUS_FRACTION,
           f'actor_size={self.actor_size}: the diameter cannot exceed '
           f'{2 * MAX_RADIUS_FRACTION} of the frame; lower the high end.')
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
  def demo_medium(cls, **overrides) -> 'SyntheticConfig':
    """Between 'demo' and 'demo_hard' (studies/gated_vs_plain.py): the demo's speeds, an actor
    of 10-14 px at 32 x 32, 2 moving distractors, half the hard pixel noise, never present
    in the whole clip."""
    params = dataclasses.asdict(cls.demo())
    params.update(actor_size=(0.3, 0.45), num_distractors=2, moving_distractors=True,
                  noise_std=6.0, full_clip_probability=0.0)
    params.update(overrides)
    return cls(**params)

  @classmethod
  def natural(cls, **overrides) -> 'SyntheticConfig':
    """The demo's speeds on photographs filmed by a panning and zooming camera.

    Background: a view of one scikit-image photograph that pans at 1-3 % and
    zooms at 1-3 % in log-scale per frame; the actor and 2 distractors are
    cut from other photographs of the same pool and all move with class
    motions, so neither colour, texture nor motion alone tells the actor
    apart: it is never present in the whole clip (as in 'hard') and its
    appearance or disappearance identifies it.
    """
    params = dataclasses.asdict(cls.demo())
    params.update(natural_images=True, actor_size=(0.35, 0.5), num_distractors=2,
                  moving_distractors=True, full_clip_probability=0.0,
                  camera_pan_speed=(0.01, 0.03), camera_zoom_speed=(0.01, 0.03))
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
    'demo_medium': SyntheticConfig.demo_medium(),
    'natural': SyntheticConfig.natural(),
}
