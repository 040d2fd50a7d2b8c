"""Drawing attention: heat-map overlays, boxes and panels (uint8 RGB images).

Numpy arrays in, images out; the files written are images (`write_image`,
`write_gif`). Predicted boxes are white (`PRED_COLOR`), ground-truth boxes
green (`GT_COLOR`); heat maps use an OpenCV colour map (`COLORMAPS`; the
default JET: blue = 0, red = 1; `config.localize.colormap`).
OpenCV and Pillow write local files only: a picture bound for a URI is written
to a local temporary file and copied there (`storage.local_file_for_writing`).
"""
from typing import Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from gla_jax.data import storage

_LABEL_WIDTH = 72
_MIN_TILE = 96     # Small clips (the CPU demo's 32 px) are enlarged to stay readable.
_FONT = cv2.FONT_HERSHEY_SIMPLEX
PRED_COLOR = (255, 255, 255)
GT_COLOR = (0, 255, 0)
# What the region outside the model's centre crop is multiplied by in
# `overlay_region`: dimmed, so the viewer sees the model never looked there.
_OUTSIDE_DIM = 0.5
# The names of OpenCV's colour maps (cv2.COLORMAP_<NAME>), lower case: 'jet', 'turbo', ...
COLORMAPS = tuple(sorted(name[len('COLORMAP_'):].lower() for name in dir(cv2)
                         if name.startswith('COLORMAP_')))
DEFAULT_COLORMAP = 'jet'


def colormap_code(name: str) -> int:
  """OpenCV's constant of the colour map `name` (one of `COLORMAPS`, any case)."""
  if str(name).lower() not in COLORMAPS:
    raise ValueError(f'Unknown colour map {name!r}; choose one of {COLORMAPS} '
                     '(config.localize.colormap).')
  return getattr(cv2, 'COLORMAP_' + str(name).upper())



# Pixels per inch of the matplotlib figures (curves.png, comparison.png): sizes are in pixels.
PLOT_DPI = 100


def plot_figure(size: Tuple[int, int]):
  """A matplotlib figure of `size` (width, height) pixels on an Agg canvas: (figure, canvas).

  No display and no pyplot state; matplotlib is imported here (a second) only
  when a plot is drawn.
  """
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  width, height = size
  fig = figure.Figure(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI,
                      layout='constrained')
  return fig, backend_agg.FigureCanvasAgg(fig)


def colorize(maps: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
  """[..., H, W] values in [0, 1] -> uint8 [..., H, W, 3] RGB with an OpenCV colour map."""
  code = colormap_code(colormap)
  maps = np.asarray(maps, np.float32)
  flat = np.clip(maps.reshape(-1, maps.shape[-1]) * 255, 0, 255).astype(np.uint8)
  colored = cv2.applyColorMap(flat, code)[..., ::-1]        # BGR -> RGB
  return colored.reshape(*maps.shape, 3)


def overlay(frames: np.ndarray, attention: np.ndarray, alpha: float = 0.5,
            colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
  """Blends the coloured `attention` [T, H, W] over uint8 `frames` [T, H, W, 3]."""
  if frames.shape[:3] != attention.shape:
    raise ValueError(f'frames {frames.shape} and attention {attention.shape} differ in size; '
                     'resize the attention to the frames first.')
  blended = (1 - alpha) * frames.astype(np.float32) + alpha * colorize(attention, colormap)
  return np.clip(blended, 0, 255).astype(np.uint8)


def draw_boxes(frames: np.ndarray, boxes: np.ndarray, color=PRED_COLOR,
               thickness: int = 1) -> np.ndarray:
  """Draws one box (x0, y0, x1, y1), x1/y1 exclusive, per frame; rows of -1 are skipped.

  The rectangle's outer edge lies on the box's pixels: columns x0 and x1 - 1,
  rows y0 and y1 - 1 (a thicker line grows inwards from there as cv2 draws it
  centred on that edge). Returns a copy.
  """
  out = np.ascontiguousarray(frames).copy()
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if len(boxes) != len(out):
    raise ValueError(f'{len(boxes)} boxes for {len(out)} frames: give one box (or a row of -1) '
                     'per frame.')
  for frame, box in zip(out, boxes):
    if np.all(box >= 0) and box[2] > box[0] and box[3] > box[1]:
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
          alpha: float = 0.5, boxes: Optional[Mapping[str, np.ndarray]] = None,
          gt_boxes: Optional[np.ndarray] = None,
          colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
  """One image: a row of frames, then one row per map overlaid on them.

  Args:
    frames: uint8 [T, H, W, 3].
    maps: {row label: [T, H, W] in [0, 1]}, drawn in the mapping's order
      (e.g. the aggregate, then layers from global to local, then gates).
    frame_indices: which frames to show (default: up to 8 evenly spaced).
    title: text drawn above the panel.
    alpha: heat-map opacity.
    boxes: optional {row label: [T, 4] boxes in the frames' pixels}, drawn in
      `PRED_COLOR` on that row ('frames' names the first row).
    gt_boxes: optional [T, 4] ground truth, drawn in `GT_COLOR` on every row.
    colormap: the heat maps' colour map (`COLORMAPS`).

  Returns:
    uint8 [(1 + len(maps)) * tile (+ 18 with a title), label + columns * tile, 3]
    RGB, where tile = H enlarged by the smallest integer factor that makes it
    >= 96 px (so 32 px clips stay readable).
  """
  if frame_indices is None:
    frame_indices = np.unique(np.linspace(0, len(frames) - 1, min(8, len(frames))).astype(int))
  frame_indices = np.asarray(frame_indices, int)
  boxes = dict(boxes or {})
  unknown = set(boxes) - set(maps) - {'frames'}
  if unknown:
    raise ValueError(f'Boxes for rows {sorted(unknown)} that the panel does not have; rows are '
                     f"'frames' and {list(maps)}.")
  factor = max(1, -(-_MIN_TILE // frames.shape[1]))

  def enlarge(images, interpolation):
    if factor == 1:
      return list(images)
    return [cv2.resize(image, None, fx=factor, fy=factor, interpolation=interpolation)
            for image in images]

  def with_boxes(images, name):
    # Boxes scale with the tiles; exclusive corners scale exactly.
    if gt_boxes is not None:
      images = draw_boxes(images, np.asarray(gt_boxes, np.float32)[frame_indices] * factor,
                          GT_COLOR)
    if name in boxes:
      images = draw_boxes(images, np.asarray(boxes[name], np.float32)[frame_indices] * factor,
                          PRED_COLOR)
    return images

  shown = np.stack(enlarge(frames[frame_indices], cv2.INTER_NEAREST))
  height = shown.shape[1]
  rows = [np.concatenate([_label('frames', height), *with_boxes(shown, 'frames')], axis=1)]
  for name, attention in maps.items():
    heat = np.stack(enlarge(np.asarray(attention, np.float32)[frame_indices], cv2.INTER_LINEAR))
    blended = with_boxes(overlay(shown, heat, alpha, colormap), name)
    rows.append(np.concatenate([_label(name, height), *blended], axis=1))
  image = np.concatenate(rows, axis=0)
  if title:
    banner = np.full((18, image.shape[1], 3), 255, np.uint8)
    cv2.putText(banner, title, (3, 13), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    image = np.concatenate([banner, image], axis=0)
  return image


def overlay_region(frames: np.ndarray, attention: np.ndarray, region: Tuple[int, int, int],
                   alpha: float = 0.5, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
  """Heat maps of the model's square crop drawn back onto the full-resolution frames.

  The model sees the centre square (x0, y0, side) of each frame resized to
  S x S (`sampling.center_clip`); its [T, S, S] attention is resized to
  side x side (bilinear) and blended into that square. The rest of the frame
  was never seen by the model: it is dimmed, without a heat map.

  Args:
    frames: uint8 [T, H, W, 3] the original frames.
    attention: [T, S, S] in [0, 1].
    region: (x0, y0, side) of the crop in the frames.
    alpha: heat-map opacity.
    colormap: the heat map's colour map (`COLORMAPS`).

  Returns:
    uint8 [T, H, W, 3].
  """
  frames = np.asarray(frames)
  attention = np.asarray(attention, np.float32)
  x0, y0, side = (int(v) for v in region)
  if len(frames) != len(attention) or attention.ndim != 3:
    raise ValueError(f'frames {frames.shape} and attention {attention.shape}: need [T, H, W, 3] '
                     'and [T, S, S] with the same T.')
  if x0 < 0 or y0 < 0 or side < 1 or x0 + side > frames.shape[2] or y0 + side > frames.shape[1]:
    raise ValueError(f'The crop region (x0={x0}, y0={y0}, side={side}) does not fit in frames of '
                     f'{frames.shape[2]}x{frames.shape[1]} (WxH).')
  out = (frames.astype(np.float32) * _OUTSIDE_DIM).astype(np.uint8)
  inside = frames[:, y0:y0 + side, x0:x0 + side]
  interpolation = cv2.INTER_LINEAR if side >= attention.shape[1] else cv2.INTER_AREA
  heat = np.stack([cv2.resize(m, (side, side), interpolation=interpolation) for m in attention])
  out[:, y0:y0 + side, x0:x0 + side] = overlay(inside, np.clip(heat, 0, 1), alpha, colormap)
  return out


def label_frames(frames: np.ndarray, texts: Sequence[str], color=PRED_COLOR) -> np.ndarray:
  """Writes one line of text (e.g. the explained class) in the top-left corner of each frame.

  The font scales with the frame height, with a dark outline so it reads over
  any heat map. Returns a copy.
  """
  out = np.ascontiguousarray(frames).copy()
  if len(texts) != len(out):
    raise ValueError(f'{len(texts)} texts for {len(out)} frames: give one per frame.')
  scale = max(0.3, out.shape[1] / 400)
  thickness = max(1, int(round(scale)))
  baseline = int(round(4 + 18 * scale))
  for frame, text in zip(out, texts):
    if text:
      cv2.putText(frame, text, (3, baseline), _FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
      cv2.putText(frame, text, (3, baseline), _FONT, scale, color, thickness, cv2.LINE_AA)
  return out


def pad_to_even(frames: np.ndarray) -> np.ndarray:
  """Repeats the last row and/or column of [T, H, W, 3] frames so H and W are even.

  Video encoders need even sizes (`video_io.write_video` refuses odd ones);
  padding keeps every original pixel where it was.
  """
  frames = np.asarray(frames)
  pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
  if not (pad_h or pad_w):
    return frames
  return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='edge')


def write_image(path: str, image: np.ndarray) -> None:
  """Writes an RGB uint8 image (PNG or JPEG by extension)."""
  with storage.local_file_for_writing(path) as local:
    if not cv2.imwrite(local, np.ascontiguousarray(image[..., ::-1])):
      raise OSError(f'Could not write the image {path}; check the folder exists and is '
                    'writable and the extension is .png or .jpg.')


def write_gif(path: str, frames: np.ndarray, fps: float = 10.0) -> None:
  """Writes uint8 RGB frames [T, H, W, 3] as a looping animated GIF (with Pillow).

  OpenCV has no GIF encoder, hence Pillow (requirements.txt). GIF stores the
  frame duration in whole hundredths of a second, so fps is rounded to that.
  """
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError('Writing a GIF needs Pillow: `pip install -r requirements.txt` (or '
                      '`pip install pillow`), or set config.localize.write_gif=False.') from error
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f'A GIF needs uint8 RGB frames [T, H, W, 3] with T >= 1; got {frames.dtype} '
                     f'{frames.shape}.')
  if fps <= 0:
    raise ValueError(f'fps={fps}: must be > 0.')
  images = [Image.fromarray(frame) for frame in frames]
  duration_ms = max(10, int(round(100 / fps)) * 10)
  with storage.local_file_for_writing(path) as local:
    images[0].save(local, save_all=True, append_images=images[1:], duration=duration_ms,
                   loop=0, optimize=False)
