"""Photographs shipped with scikit-image: the backgrounds and shape textures of natural clips.

The 'natural' difficulty (`synthetic_settings.SyntheticConfig.natural`) films a
crop of one photograph with a moving camera and cuts the actor and the
distractors out of the others (`synthetic_scenes`). The photographs are the
sample images inside the scikit-image package (`skimage.data`), read from disk
without any download; the three grey textures (grass, gravel, brick) are
tinted to colour. Each is read and resized once per process (`photo`) and
views of it are taken with one affine warp (`view`).
"""
import functools
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

# Photographs of the pool, in a fixed order (scene parameters store names).
PHOTO_NAMES: Tuple[str, ...] = (
    'astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry',
    'retina', 'grass', 'gravel', 'brick')

# RGB gains of the grey textures: grass green, gravel grey-brown, brick red.
_TINTS: Dict[str, Tuple[float, float, float]] = {
    'grass': (0.55, 0.85, 0.35), 'gravel': (0.8, 0.72, 0.6), 'brick': (0.95, 0.55, 0.4)}
# Central fraction kept: outside it the fundus photograph is a black disc border.
_CENTRAL_FRACTION: Dict[str, float] = {'retina': 0.65}
# A photograph's short side in pixels is this multiple of the frame's short side,
# so a camera view or a shape texture samples it at about one photo pixel per
# frame pixel with room to pan and zoom.
OVERSAMPLING = 2.0


def _load(name: str) -> np.ndarray:
  """`skimage.data.<name>()` (imported here: only natural clips need scikit-image)."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  loader: Callable[[], np.ndarray] = getattr(data, name)
  return loader()


@functools.lru_cache(maxsize=None)
def original(name: str) -> np.ndarray:
  """Photograph `name` of PHOTO_NAMES as RGB uint8 [h, w, 3] (read-only, cached)."""
  if name not in PHOTO_NAMES:
    raise ValueError(f'Unknown photograph {name!r}; use one of {PHOTO_NAMES}.')
  image = np.asarray(_load(name))
  if image.ndim == 2:
    gains = np.array(_TINTS[name], np.float32)
    image = np.clip(np.rint(image[..., None].astype(np.float32) * gains), 0, 255)
  image = image[..., :3].astype(np.uint8)
  if name in _CENTRAL_FRACTION:
    height, width = image.shape[:2]
    keep = _CENTRAL_FRACTION[name]
    top, left = int(height * (1 - keep) / 2), int(width * (1 - keep) / 2)
    image = image[top:height - top, left:width - left]
  image = np.ascontiguousarray(image)
  image.flags.writeable = False
  return image


@functools.lru_cache(maxsize=None)
def photo(name: str, frame_side: int) -> np.ndarray:
  """Photograph `name` resized for frames of short side `frame_side` (read-only, cached).

  Its short side is OVERSAMPLING * frame_side pixels (area interpolation, so
  no aliasing); its aspect ratio is the original's.
  """
  if frame_side < 1:
    raise ValueError(f'frame_side={frame_side}: must be a positive number of pixels.')
  image = original(name)
  height, width = image.shape[:2]
  factor = OVERSAMPLING * frame_side / min(height, width)
  size = (max(int(round(width * factor)), 1), max(int(round(height * factor)), 1))
  resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
  resized.flags.writeable = False
  return resized


def view(image: np.ndarray, affine: np.ndarray, width: int, height: int) -> np.ndarray:
  """uint8 [height, width, 3]: pixel (x, y) shows `image` at `affine @ (x, y, 1)`.

  Bilinear; points outside the photograph mirror it (BORDER_REFLECT_101), so
  a view never shows a constant border.
  """
  return cv2.warpAffine(image, np.asarray(affine, np.float64), (int(width), int(height)),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REFLECT_101)
