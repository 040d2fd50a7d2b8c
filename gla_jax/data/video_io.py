"""Reading and writing video files with OpenCV and PyAV, with errors that say what to fix.

`cv2.VideoCapture` fails quietly: a missing file, random bytes or an image all
give a capture that "opens" or reads nothing, without saying why. The reader
here checks each case first and raises `VideoReadError` naming the file, the
problem and the fix. Frames are RGB (OpenCV decodes to BGR) uint8 [N, H, W, 3].

Codecs verified on this project's OpenCV build (opencv-python-headless 5.0,
see tests/test_video_io.py): MJPG/.avi, mp4v/.mp4, XVID/.avi, FFV1/.avi and
FFV1/.mkv (lossless). H.264 (avc1) has no encoder in that build: `write_video`
encodes it with PyAV's libx264 (PyAV's wheels carry it).

A clip that starts inside a video is read with PyAV (FFmpeg): seek to the
keyframe at or before its first frame and decode forward (`_read_by_seeking`),
the same frames as decoding from frame 0 (each is checked by its timestamp),
without decoding the frames before the keyframe. Where PyAV is missing or
cannot seek a file exactly, OpenCV decodes from frame 0.
"""
import collections
import fractions
import os
import threading
from typing import NamedTuple, Optional

from absl import logging
import cv2
import numpy as np

try:
  import av  # PyAV: FFmpeg's seeking by timestamp (optional, see read_video).
except ImportError:  # pragma: no cover - PyAV is a dependency; OpenCV reads without it.
  av = None

# Magic numbers of still-image formats that FFmpeg would happily "decode" as a
# one-frame video; a dataset with an image in place of a video is a bug to report.
_IMAGE_SIGNATURES = (
    (b'\xff\xd8\xff', 'JPEG'),
    (b'\x89PNG\r\n\x1a\n', 'PNG'),
    (b'BM', 'BMP'),
    (b'II*\x00', 'TIFF'),
    (b'MM\x00*', 'TIFF'),
)
# FourCCs written as H.264 by PyAV (`write_video`); 'avc1' is H.264's FourCC in MP4.
H264_CODECS = ('avc1', 'h264', 'H264')
_H264_ENCODERS = ('libx264', 'libopenh264')
# libx264: visually near-lossless quality (CRF 18) at a quick preset (overlays are long videos).
_H264_OPTIONS = {'crf': '18', 'preset': 'veryfast'}
# A raw Motion-JPEG stream starts with a JPEG marker too, yet it is a video.
_MJPEG_STREAM_EXTENSIONS = ('.mjpg', '.mjpeg')


class VideoReadError(ValueError):
  """A video file is missing, unreadable, truncated, or not a video."""


class VideoWriteError(ValueError):
  """A video cannot be written (bad frames, codec or container unavailable)."""


class VideoInfo(NamedTuple):
  """What the container header says about a video.

  Attributes:
    num_frames: frame count from the header (exact for AVI/MP4/MKV written by
      OpenCV/FFmpeg; an estimate for some streams, -1 when unknown).
    height: frame height in pixels.
    width: frame width in pixels.
    fps: frames per second (0.0 when unknown).
    fourcc: the codec's four-character code, e.g. 'MJPG'.
  """
  num_frames: int
  height: int
  width: int
  fps: float
  fourcc: str


def _image_format(path: str) -> Optional[str]:
  """The still-image format of `path` from its first bytes, or None."""
  if path.lower().endswith(_MJPEG_STREAM_EXTENSIONS):
    return None
  with open(path, 'rb') as f:
    head = f.read(16)
  for signature, name in _IMAGE_SIGNATURES:
    if head.startswith(signature):
      return name
  if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
    return 'WebP'
  return None


def _open(path: str) -> cv2.VideoCapture:
  """Opens `path` for decoding after ruling out the silent failure modes."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise VideoReadError(f'Video file {path!r} does not exist; check the path '
                         '(the dataset root and the split file entries).')
  if os.path.isdir(path):
    raise VideoReadError(f'{path!r} is a directory, not a video file; pass the path '
                         'of a video inside it.')
  if os.path.getsize(path) == 0:
    raise VideoReadError(f'Video file {path!r} is empty (0 bytes); the file was not '
                         'written completely: re-create or re-download it.')
  image_format = _image_format(path)
  if image_format is not None:
    raise VideoReadError(f'{path!r} is a {image_format} image, not a video; read '
                         'images with cv2.imread, or point the reader at the video files.')
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    capture.release()
    raise VideoReadError(
        f'OpenCV cannot open {path!r} as a video: the file is corrupt, truncated '
        'before its header/index, or uses a container/codec this OpenCV build lacks. '
        'Check that `ffprobe` reads it, or re-encode it (e.g. to MJPG in .avi).')
  return capture


def _header_frame_count(capture: cv2.VideoCapture) -> int:
  count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
  # FFmpeg reports INT64_MIN or a negative number when it does not know.
  return int(count) if 0 < count < 2**31 else -1


def video_info(path: str) -> VideoInfo:
  """Reads the container header of a video without decoding its frames.

  Args:
    path: video file.

  Returns:
    A VideoInfo.

  Raises:
    VideoReadError: for a missing, empty, unopenable or image file.
  """
  capture = _open(path)
  try:
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    fourcc = ''.join(chr((code >> (8 * i)) & 0xFF) for i in range(4)) if code > 0 else ''
    fps = capture.get(cv2.CAP_PROP_FPS)
    return VideoInfo(
        num_frames=_header_frame_count(capture),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        fps=float(fps) if fps > 0 else 0.0,
        fourcc=fourcc)
  finally:
    capture.release()


_TIMESTAMP_CACHE_SIZE = 16384   # Videos whose frame timestamps are kept (a few KB each).
_timestamps_cache: 'collections.OrderedDict' = collections.OrderedDict()
_timestamps_lock = threading.Lock()   # The loader's worker threads share the cache.


def _frame_timestamps(path: str, container, stream) -> Optional[np.ndarray]:
  """Presentation timestamps of every frame of `stream` in display order, or None.

  From demuxing the packets (no decoding), cached per file (path, size, mtime);
  None where a packet has no timestamp or two share one (frame k is then not
  known by its timestamp).
  """
  status = os.stat(path)
  key = (path, status.st_size, status.st_mtime_ns)
  with _timestamps_lock:
    if key in _timestamps_cache:
      _timestamps_cache.move_to_end(key)
      return _timestamps_cache[key]
  stamps = []
  for packet in container.demux(stream):
    if packet.size == 0:   # The demuxer's end-of-stream flush packet.
      continue
    if packet.pts is None:
      stamps = None
      break
    stamps.append(packet.pts)
  if stamps is not None:
    stamps = np.sort(np.asarray(stamps, np.int64))
    if len(stamps) == 0 or np.any(np.diff(stamps) == 0):
      stamps = None
  with _timestamps_lock:
    _timestamps_cache[key] = stamps
    if len(_timestamps_cache) > _TIMESTAMP_CACHE_SIZE:
      _timestamps_cache.popitem(last=False)
  return stamps


def _read_by_seeking(path: str, start: int, max_frames: Optional[int]) -> Optional[np.ndarray]:
  """Frames [start, start + max_frames) by seeking to a keyframe (PyAV), or None.

  Seeks to the keyframe at or before frame `start`'s timestamp, decodes
  forward, drops the frames before `start` and checks that each kept frame has
  the timestamp of its index, so the frames are those of a decode from frame 0
  (OpenCV's FFmpeg backend converts to RGB with the same swscale: the pixels
  match too, tests/data/test_video_io.py). None, for `read_video` to decode
  sequentially, where PyAV is missing, cannot open or seek the file, a
  timestamp does not match, or `start` is past the last frame.
  """
  if av is None:
    return None
  try:
    container = av.open(path)
  except Exception:  # pylint: disable=broad-except  (any FFmpeg error: OpenCV decides)
    return None
  try:
    if not container.streams.video:
      return None
    stream = container.streams.video[0]
    stamps = _frame_timestamps(path, container, stream)
    if stamps is None or start >= len(stamps):
      return None
    stop = len(stamps) if max_frames is None else min(len(stamps), start + max_frames)
    container.seek(int(stamps[start]), stream=stream, backward=True, any_frame=False)
    frames = []
    for frame in container.decode(stream):
      if frame.pts is None:
        return None
      if frame.pts < stamps[start]:
        continue   # Between the keyframe and the clip.
      if frame.pts != stamps[start + len(frames)]:
        return None   # Not the frame a sequential decode gives here.
      frames.append(frame.to_ndarray(format='rgb24'))
      if start + len(frames) == stop:
        break
    # Short of the timestamps (a truncated file): OpenCV's sequential decode decides.
    return np.stack(frames) if start + len(frames) == stop else None
  except Exception:  # pylint: disable=broad-except
    return None
  finally:
    container.close()


def read_video(path: str, max_frames: Optional[int] = None, start: int = 0,
               strict: bool = True) -> np.ndarray:
  """Decodes frames [start, start + max_frames) of a video as RGB.

  With `start` > 0, PyAV seeks to the keyframe at or before `start` and
  decodes forward (`_read_by_seeking`: the same frames, checked by timestamp);
  where it cannot, OpenCV decodes sequentially from frame 0 and drops the
  frames before `start`. Decoding stops after the last requested frame.

  Args:
    path: video file.
    max_frames: most frames to return; None reads to the end.
    start: index of the first frame to return.
    strict: raise when fewer frames decode than the container header promises
      for the requested range (a truncated or corrupt file). Set False to
      accept what decodes, for streams whose header count is only an estimate.

  Returns:
    uint8 [N, H, W, 3] RGB, N >= 1.

  Raises:
    VideoReadError: missing, empty, unopenable, image, truncated file, or no
      frame decoded in the requested range.
  """
  if start < 0:
    raise ValueError(f'start={start}: must be >= 0.')
  if max_frames is not None and max_frames < 1:
    raise ValueError(f'max_frames={max_frames}: must be >= 1 (or None for all frames).')
  capture = _open(path)
  try:
    header_count = _header_frame_count(capture)
    stop = None if max_frames is None else start + max_frames
    # OpenCV turns frames by the file's rotation metadata, PyAV does not: no seek there.
    if start > 0 and not capture.get(cv2.CAP_PROP_ORIENTATION_META):
      frames = _read_by_seeking(os.fspath(path), start, max_frames)
      # A seek is exact, yet the header may promise more (strict reading checks it).
      if frames is not None and (not strict or header_count <= 0 or start + len(frames) >=
                                 (header_count if stop is None else min(stop, header_count))):
        return frames
    frames = []
    index = 0
    while stop is None or index < stop:
      if index < start:
        # grab() decodes without the colour conversion and copy of read().
        ok = capture.grab()
      else:
        ok, frame = capture.read()
        if ok:
          frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
      if not ok:
        break
      index += 1
  finally:
    capture.release()
  expected = header_count if stop is None else min(stop, header_count)
  if strict and header_count > 0 and index < expected:
    raise VideoReadError(
        f'Video {path!r} is truncated or corrupt: its header promises {header_count} '
        f'frames but decoding stopped after {index}. Re-create or re-download the file, '
        'or pass strict=False to use the frames that decode.')
  if index == 0:
    raise VideoReadError(
        f'Video {path!r} has no frame that decodes (header: {header_count} frames): an empty '
        'container (a recording or export stopped before its first frame) or a corrupt '
        'stream. Re-create or re-download the file, or remove it from the dataset.')
  if not frames:
    raise VideoReadError(
        f'No frame decoded from {path!r} in the range starting at frame {start} '
        f'(decoded {index} frames in all, header says {header_count}). The file is '
        'corrupt or the range lies past its end; check start/max_frames and the file.')
  return np.stack(frames)


def h264_encoder() -> Optional[str]:
  """The name of PyAV's H.264 encoder ('libx264' in PyAV's wheels), or None without one."""
  if av is None:
    return None
  for name in _H264_ENCODERS:
    try:
      av.codec.Codec(name, 'w')
      return name
    except Exception:  # pylint: disable=broad-except  (PyAV raises UnknownCodecError and others)
      continue
  return None


def _write_h264(path: str, frames: np.ndarray, fps: float, encoder: str) -> None:
  """Encodes RGB frames as H.264, yuv420p (what browsers and players decode), with PyAV."""
  rate = fractions.Fraction(fps).limit_denominator(1001)
  options = {'movflags': '+faststart'} if path.lower().endswith(('.mp4', '.mov')) else {}
  try:
    with av.open(path, 'w', options=options) as container:
      stream = container.add_stream(encoder, rate=rate, options=dict(_H264_OPTIONS))
      stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
      for frame in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
      container.mux(stream.encode())      # Flushes the frames the encoder holds back.
  except Exception as error:  # pylint: disable=broad-except  (any FFmpeg error)
    raise VideoWriteError(
        f'PyAV could not write H.264 into {path!r}: {error}. Use a .mp4, .mkv or .mov file, '
        "or another codec (config.localize.video_codec='mp4v' with .mp4, 'MJPG' with .avi)."
    ) from error


def write_video(path: str, frames: np.ndarray, fps: float = 25.0,
                codec: str = 'MJPG') -> None:
  """Writes RGB frames to a video file (the parent directory is created).

  H.264 ('avc1', or its alias 'h264') is encoded by PyAV's libx264 in yuv420p,
  which browsers, notebooks and players show; where PyAV has no H.264 encoder
  the file is written with OpenCV's 'mp4v' (MPEG-4 Part 2) and a warning says
  so. The other FourCCs go to OpenCV's writer.

  Args:
    path: output file; its extension picks the container (.avi, .mp4, .mkv).
    frames: uint8 [N, H, W, 3] RGB, N >= 1, H and W even (FFmpeg's encoders
      silently drop an odd last row/column, and yuv420p needs even sizes, so
      odd sizes are refused).
    fps: frame rate stored in the file.
    codec: FourCC, e.g. 'avc1' (H.264, .mp4/.mkv/.mov), 'MJPG' (with .avi:
      always available), 'mp4v' (.mp4), 'XVID' (.avi), 'FFV1' (.avi/.mkv,
      lossless).

  Raises:
    VideoWriteError: bad frames, or the codec/container pair cannot be opened,
      or nothing was written.
  """
  path = os.fspath(path)
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise VideoWriteError(
        f'frames must be uint8 [N, H, W, 3] RGB; got {frames.dtype} {frames.shape}. '
        'Convert with np.clip(x, 0, 255).astype(np.uint8) and stack the frames.')
  num_frames, height, width, _ = frames.shape
  if num_frames < 1:
    raise VideoWriteError(f'No frames to write to {path!r}; pass at least one frame.')
  if height % 2 or width % 2:
    raise VideoWriteError(
        f'Frame size {width}x{height} (WxH) is odd; the encoders would silently crop '
        'it to even. Crop or pad the frames to an even width and height.')
  if len(codec) != 4:
    raise VideoWriteError(f'codec={codec!r}: a FourCC has exactly 4 characters, e.g. "MJPG".')
  if fps <= 0:
    raise VideoWriteError(f'fps={fps}: must be > 0.')
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  if codec in H264_CODECS:
    encoder = h264_encoder()
    if encoder is not None:
      _write_h264(path, frames, fps, encoder)
      _check_written(path)
      return
    logging.warning('No H.264 encoder in PyAV (FFmpeg built without libx264?): %s is written '
                    "as MPEG-4 Part 2 ('mp4v'), which browsers do not play. Reinstall PyAV's "
                    'wheel (pip install av) for H.264.', path)
    codec = 'mp4v'
  writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*codec), float(fps), (width, height))
  if not writer.isOpened():
    writer.release()
    raise VideoWriteError(
        f'OpenCV cannot write codec {codec!r} into {os.path.splitext(path)[1]!r} '
        f'({path!r}): this build lacks that encoder or container pair. Use '
        "codec='MJPG' with a .avi file (always available), 'mp4v' with .mp4 or "
        "'FFV1' with .avi/.mkv for lossless.")
  try:
    for frame in frames:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()
  _check_written(path)


def _check_written(path: str) -> None:
  if not os.path.exists(path) or os.path.getsize(path) == 0:
    raise VideoWriteError(f'{path!r} was opened for writing but nothing was written; check '
                          'free disk space and write permission.')
