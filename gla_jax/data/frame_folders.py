"""Videos stored as folders of frames: the rawframes layout of Hara's and mmaction2's tools.

A video extracted to images is a folder of JPEG or PNG files numbered in
order: Hara's `image_00001.jpg` (3D-ResNets-PyTorch's `video_jpg` tools),
mmaction2's `img_00001.jpg` (with `flow_x_00001.jpg` / `flow_y_00001.jpg`
next to them when optical flow was extracted too). The files are taken in
natural order (`frame_2` before `frame_10`). The folder may be local or a URI
(`gla_jax.data.storage`). Errors are `video_io.VideoReadError`s naming the
folder or file and the fix.
"""
import re
from typing import Dict, List

import cv2
import numpy as np

from gla_jax.data import storage
from gla_jax.data import video_io

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
# File-name patterns (digits as '#') of RGB frames, chosen over the flow images beside them.
_RGB_PREFIXES = ('image_', 'img_', 'frame_', 'frame', 'image', 'img', '')


def natural_key(name: str) -> List:
  """Sort key putting 'img_2.jpg' before 'img_10.jpg' (digit runs compared as numbers)."""
  return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', name)]


def _image_names(folder: str) -> List[str]:
  return [name for name in storage.list_names(folder)
          if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')]


def is_frame_folder(path: str) -> bool:
  """Whether `path` is a folder holding JPEG or PNG files (one video as frames)."""
  return storage.is_dir(path) and bool(_image_names(path))


def frame_files(folder: str) -> List[str]:
  """The frame files of `folder` in natural order (the RGB frames where flow images sit beside).

  Raises:
    VideoReadError: no image in the folder, or several numbered series none
      of which is recognisably the RGB frames.
  """
  names = _image_names(folder)
  if not names:
    raise video_io.VideoReadError(
        f'{folder!r} holds no JPEG or PNG frames ({", ".join(IMAGE_EXTENSIONS)}); pass a folder '
        'of frames such as image_00001.jpg, a video file, or a uint8 array [N, H, W, 3].')
  series: Dict[str, List[str]] = {}
  for name in names:
    series.setdefault(re.sub(r'\d+', '#', name), []).append(name)
  if len(series) > 1:
    patterns = sorted(series)
    rgb = [p for p in patterns if re.sub(r'#.*', '', p).lower() in _RGB_PREFIXES]
    if len(rgb) != 1:
      raise video_io.VideoReadError(
          f'{folder!r} mixes {len(patterns)} series of images ({", ".join(patterns[:6])}); '
          'keep only the RGB frames of one video in the folder (e.g. image_#####.jpg or '
          'img_#####.jpg) and move the others out.')
    names = series[rgb[0]]
  return [storage.join(folder, name) for name in sorted(names, key=natural_key)]


def _read_image(path: str) -> np.ndarray:
  data = np.frombuffer(storage.path(path).read_bytes(), np.uint8)
  image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
  if image is None:
    raise video_io.VideoReadError(
        f'Frame {path!r} is not a readable JPEG or PNG image (empty or corrupt); re-extract '
        'the frames of this video or remove the file.')
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_frame_folder(folder: str) -> np.ndarray:
  """Every frame of a folder of frames as uint8 RGB [N, H, W, 3].

  Raises:
    VideoReadError: no frames, a frame that does not decode, or frames of
      different sizes.
  """
  files = frame_files(folder)
  frames = []
  for path in files:
    frame = _read_image(path)
    if frames and frame.shape != frames[0].shape:
      raise video_io.VideoReadError(
          f'Frame {path!r} is {frame.shape[1]}x{frame.shape[0]} (WxH) but {files[0]!r} is '
          f'{frames[0].shape[1]}x{frames[0].shape[0]}: the frames of one video need one size; '
          're-extract them at one size.')
    frames.append(frame)
  return np.stack(frames)
