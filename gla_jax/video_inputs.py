"""What `explain_video` takes: a video file, a folder of frames or an array, and `--video` lists.

`read_video_input` turns any of the three into uint8 RGB frames with the frame
rate where the file knows it; `preprocess` makes the model's input from frames
without a config; `video_paths` expands the command line's `--video`
(comma-separated paths, globs, folders of videos). Paths may be local or URIs
(`gla_jax.data.storage`).
"""
import dataclasses
import glob
import os
from typing import List, Optional, Sequence

import numpy as np

from gla_jax.data import frame_folders
from gla_jax.data import sampling
from gla_jax.data import storage
from gla_jax.data import video_io
from gla_jax.models import input_normalization

VIDEO_EXTENSIONS = ('.avi', '.mp4', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv',
                    '.flv', '.3gp', '.ogv', '.mjpg', '.mjpeg')
_GLOB_CHARACTERS = ('*', '?', '[')


@dataclasses.dataclass(frozen=True)
class VideoFrames:
  """A video's frames and what is known about it.

  Attributes:
    frames: uint8 [N, H, W, 3] RGB.
    fps: frames per second, None when unknown (a folder of frames, an array).
    source: the file or folder read (absolute), None for an array.
  """
  frames: np.ndarray
  fps: Optional[float]
  source: Optional[str]


def check_frames(frames) -> np.ndarray:
  """`frames` as uint8 [N, H, W, 3] RGB; a ValueError says how to convert anything else."""
  array = np.asarray(frames)
  if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
    raise ValueError(f'An array of shape {array.shape} is one frame; a video is [N, H, W, 3] '
                     '(add the frame axis: frames[None]).')
  if array.ndim != 4:
    raise ValueError(f'A video array must be [N, H, W, 3] (frames, height, width, RGB); got '
                     f'shape {array.shape}.')
  if array.shape[-1] == 1:
    raise ValueError(f'Frames of shape {array.shape} have 1 channel; repeat it for RGB: '
                     'np.repeat(frames, 3, axis=-1).')
  if array.shape[-1] == 4:
    raise ValueError(f'Frames of shape {array.shape} are RGBA; drop alpha: frames[..., :3].')
  if array.shape[-1] != 3:
    raise ValueError(f'Frames of shape {array.shape} need 3 RGB channels last ([N, H, W, 3]; '
                     'channels-first frames: np.moveaxis(frames, 1, -1)).')
  if not all(array.shape[:3]):
    raise ValueError(f'A video array of shape {array.shape} is empty; it needs at least one '
                     'frame of at least 1 x 1 pixels.')
  if array.dtype != np.uint8:
    raise ValueError(f'Video frames must be uint8 RGB (0..255); got {array.dtype}. Convert them: '
                     'np.clip(frames, 0, 255).astype(np.uint8) (or (frames * 255).round() first '
                     'for values in [0, 1]).')
  return array


def read_video_input(video, fps: Optional[float] = None) -> VideoFrames:
  """The frames of a video file, a folder of frames (JPEG/PNG) or a uint8 array [N, H, W, 3].

  Args:
    video: a path or URI of a video file or a folder of frames, an array, or
      `VideoFrames` read already (returned as they are).
    fps: the frame rate to use instead of the file's (the only one for a
      folder or an array).

  Raises:
    FileNotFoundError: a path that does not exist.
    ValueError (`video_io.VideoReadError` for files): a file that is not a
      readable video, a folder without frames, or a bad array; each says the fix.
  """
  if isinstance(video, VideoFrames):
    return video if fps is None else dataclasses.replace(video, fps=float(fps))
  if fps is not None and not float(fps) > 0:
    raise ValueError(f'fps={fps}: must be > 0 (or None for the file\'s own frame rate).')
  if not isinstance(video, (str, os.PathLike)):
    return VideoFrames(check_frames(video), None if fps is None else float(fps), None)
  path = os.fspath(video)
  if not storage.exists(path):
    raise FileNotFoundError(f'Video {path!r} does not exist; pass a video file, a folder of '
                            'frames (JPEG/PNG) or a uint8 array [N, H, W, 3].')
  if storage.is_dir(path):
    frames = frame_folders.read_frame_folder(path)
    return VideoFrames(frames, None if fps is None else float(fps), storage.absolute(path))
  with storage.local_copy(path) as local:   # PyAV/OpenCV read local files only.
    frames = video_io.read_video(local)
    file_fps = video_io.video_info(local).fps
  return VideoFrames(frames, float(fps or file_fps) or None, storage.absolute(path))


def estimated_frames(path: str) -> int:
  """The frame count of a video file (its header) or a folder of frames; 0 where unknown."""
  try:
    if storage.is_dir(path):
      return len(frame_folders.frame_files(path))
    if not storage.is_uri(path):
      return max(0, video_io.video_info(path).num_frames)
  except (OSError, ValueError):
    pass   # Reading it says what is wrong.
  return 0


def preprocess(frames, *, crop_size: int, mean: Sequence[float] = sampling.ACTIVITYNET_MEAN,
               std: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
  """The model's input from uint8 RGB frames [N, H, W, 3], without a config.

  The centre square of every frame resized to `crop_size` (as evaluation and
  `explain_video` crop), then (x - mean) / std per channel in float32 (pixel
  values 0..255; the defaults are what Hara's published weights expect).

  Returns:
    float32 [N, crop_size, crop_size, 3]: clips of it go to `explain.explain`.
  """
  frames = check_frames(frames)
  if int(crop_size) < 1:
    raise ValueError(f'crop_size={crop_size}: must be >= 1 (the model\'s input side, e.g. 112).')
  channel_mean, inverse_std = input_normalization.channel_constants(mean, std)
  x0, y0, side = sampling.center_region(*frames.shape[1:3])
  crops = sampling.crop_resize(frames, x0, y0, side, int(crop_size))
  return (crops.astype(np.float32) - channel_mean) * inverse_std


def _is_video(path: str) -> bool:
  return storage.is_file(path) and path.lower().endswith(VIDEO_EXTENSIONS)


def _glob(pattern: str) -> List[str]:
  if storage.is_uri(pattern):
    parent, _, name = pattern.rpartition('/')
    return [str(p) for p in storage.path(parent).glob(name)]
  return glob.glob(pattern)


def _videos_in(folder: str) -> List[str]:
  """The video files and frame folders directly inside `folder`."""
  entries = [storage.join(folder, name) for name in storage.list_names(folder)
             if not name.startswith('.')]
  return [entry for entry in entries if _is_video(entry) or frame_folders.is_frame_folder(entry)]


def video_paths(spec: str) -> List[str]:
  """The videos of `--video`: comma-separated paths, globs and folders, in natural order.

  A folder holding JPEG/PNG files is one video (its frames); any other folder
  stands for the video files and frame folders inside it. A value that
  exists as a path is one video even if it has a comma.

  Raises:
    FileNotFoundError: a glob or folder with no video, or an empty value.
  """
  items = [spec] if spec and storage.exists(spec) else [
      item.strip() for item in str(spec or '').split(',') if item.strip()]
  if not items:
    raise FileNotFoundError('--video is empty: pass a video file, a folder of frames, several '
                            'paths separated by commas, a glob (quoted) or a folder of videos.')
  paths: List[str] = []
  for item in items:
    if any(c in item for c in _GLOB_CHARACTERS) and not storage.exists(item):
      found = [p for p in _glob(item) if _is_video(p) or frame_folders.is_frame_folder(p)]
      if not found:
        raise FileNotFoundError(f'--video: {item!r} matches no video file or folder of frames.')
    elif storage.is_dir(item) and not frame_folders.is_frame_folder(item):
      found = _videos_in(item)
      if not found:
        raise FileNotFoundError(
            f'--video: the folder {item!r} holds no video files ({", ".join(VIDEO_EXTENSIONS)}) '
            'and no JPEG/PNG frames; pass a video file, a folder of frames or of videos.')
    else:
      found = [item]
    paths.extend(sorted(found, key=frame_folders.natural_key))
  return list(dict.fromkeys(paths))
