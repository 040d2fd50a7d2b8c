"""Drawing attention: heat-map overlays, boxes and panels (uint8 RGB images).

Everything here takes numpy arrays and returns images; writing files is left
to the caller (`write_image`, `video_io.write_video`), and nothing here
computes attention.
"""
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

_LABEL_WIDTH = 72
_MIN_TILE = 96     # Small clips (the CPU demo's 32 px) are enlarged to stay readable.
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def colorize(maps: np.ndarray) -> np.ndarray:
  """[..., H, W] values in [0, 1] -> uint8 [..., H, W, 3] RGB with the JET colour map."""
  maps = np.asarray(maps, np.float32)
  flat = np.clip(maps.reshape(-1, maps.shape[-1]) * 255, 0, 255).astype(np.uint8)
  colored = cv2.applyColorMap(flat, cv2.COLORMAP_JET)[..., ::-1]        # BGR -> RGB
  return colored.reshape(*maps.shape, 3)


def overlay(frames: np.ndarray, attention: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """Blends the coloured `attention` [T, H, W] over uint8 `frames` [T, H, W, 3]."""
  if frames.shape[:3] != attention.shape:
    raise ValueError(f'frames {frames.shape} and attention {attention.shape} differ in size; '
                     'resize the attention to the frames first.')
  blended = (1 - alpha) * frames.astype(np.float32) + alpha * colorize(attention)
  return np.clip(blended, 0, 255).astype(np.uint8)


def draw_boxes(frames: np.ndarray, boxes: np.ndarray, color=(255, 255, 255),
               thickness: int = 1) -> np.ndarray:
  """Draws one box (x0, y0, x1, y1), x1/y1 exclusive, per frame; rows of -1 are skipped."""
  out = np.ascontiguousarray(frames).copy()
  for frame, box in zip(out, np.asarray(boxes)):
    if np.all(box >= 0):
      x0, y0, x1, y1 = (int(round(v)) for v in box)
      cv2.rectangle(frame, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), color, thickness)
  return out


def _label(text: str, height: int) -> np.ndarray:
  tile = np.full((height, _LABEL_WIDTH, 3), 255, np.uint8)
  scale = 0.35
  for i, line in enumerate(text.split('\n')):
    cv2.putText(tile, line, (3, 12 + 12 * i), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
  return tile


def panel(frames: np.ndarray, maps: Mapping[str, np.ndarray],
          frame_indices: Optional[Sequence[int]] = None, title: str = '',
          alpha: float = 0.5) -> np.ndarray:
  """One image: a row of frames, then one row per map overlaid on them.

  Args:
    frames: uint8 [T, H, W, 3].
    maps: {row label: [T, H, W] in [0, 1]}, drawn in the mapping's order
      (e.g. the aggregate, then layers from global to local).
    frame_indices: which frames to show (default: up to 8 evenly spaced).
    title: text drawn above the panel.
    alpha: heat-map opacity.

  Returns:
    uint8 [rows * H (+ title), label + columns * W, 3] RGB.
  """
  if frame_indices is None:
    frame_indices = np.unique(np.linspace(0, len(frames) - 1, min(8, len(frames))).astype(int))
  factor = max(1, -(-_MIN_TILE // frames.shape[1]))

  def enlarge(images, interpolation):
    if factor == 1:
      return list(images)
    return [cv2.resize(image, None, fx=factor, fy=factor, interpolation=interpolation)
            for image in images]

  shown = np.stack(enlarge(frames[frame_indices], cv2.INTER_NEAREST))
  height = shown.shape[1]
  rows = [np.concatenate([_label('frames', height), *shown], axis=1)]
  for name, attention in maps.items():
    heat = np.stack(enlarge(np.asarray(attention, np.float32)[frame_indices], cv2.INTER_LINEAR))
    rows.append(np.concatenate([_label(name, height), *overlay(shown, heat, alpha)], axis=1))
  image = np.concatenate(rows, axis=0)
  if title:
    banner = np.full((18, image.shape[1], 3), 255, np.uint8)
    cv2.putText(banner, title, (3, 13), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    image = np.concatenate([banner, image], axis=0)
  return image


def write_image(path: str, image: np.ndarray) -> None:
  """Writes an RGB uint8 image (PNG or JPEG by extension)."""
  if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
    raise OSError(f'Could not write the image {path}; check the folder exists and is writable '
                  'and the extension is .png or .jpg.')
