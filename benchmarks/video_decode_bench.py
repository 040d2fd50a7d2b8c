"""Reading random 16-frame windows of real-scale videos: decoding from frame 0 against seeking.

Generates 10-second 320 x 240 videos at 25 fps (250 frames: a Kinetics clip's
length, UCF101's frame size) in several codecs in a temporary folder, then
reads the same random windows (the folder source's training clips) with
  sequential  OpenCV decoding from frame 0, dropping the frames before the
              window (`video_io.read_video` before the seek, and its fallback
              without PyAV), and
  seek        `video_io.read_video`: PyAV seeks to the keyframe at or before
              the window and decodes forward,
checks that both give the same frames, and prints clips/s and frames decoded
per clip side by side. The seek's first read of a file also demuxes it once
for the frame timestamps (cached): "first read ms" is that read (demux and one
clip) per video.

Keyframes: MJPG is intra-only (every frame a keyframe); OpenCV's mp4v, XVID
and FFV1 encoders put one every 12 frames; H.264 (PyAV's libx264, where
available) one every `--h264_gop` frames (50: 2 s, the order of web video;
x264's default of 250 would leave one keyframe per 10 s video).

Run: python -m benchmarks.video_decode_bench [--videos 3] [--clips 40]
"""
import argparse
import contextlib
import os
import tempfile
import time

import numpy as np

from gla_jax.data import video_io
from tests.data import decoding

FPS, SECONDS, HEIGHT, WIDTH, CLIP_FRAMES = 25, 10, 240, 320, 16
OPENCV_CODECS = (('MJPG', '.avi'), ('mp4v', '.mp4'), ('XVID', '.avi'), ('FFV1', '.mkv'))


def _frames(num_frames: int, seed: int) -> np.ndarray:
  """Moving textured frames (a blurred noise field drifting over a gradient)."""
  rng = np.random.default_rng(seed)
  texture = rng.integers(0, 256, (HEIGHT // 8 + 40, WIDTH // 8 + 40, 3), np.uint8)
  texture = np.repeat(np.repeat(texture, 8, 0), 8, 1).astype(np.float32)
  y, x = np.mgrid[:HEIGHT, :WIDTH]
  frames = np.empty((num_frames, HEIGHT, WIDTH, 3), np.uint8)
  for t in range(num_frames):
    dy, dx = (t * 2) % 320, (t * 3) % 320
    patch = texture[dy % 160:dy % 160 + HEIGHT, dx % 160:dx % 160 + WIDTH]
    gradient = ((x + y + 4 * t) % 256)[..., None]
    frames[t] = (0.6 * patch + 0.4 * gradient).astype(np.uint8)
  return frames


def _write_h264(path: str, frames: np.ndarray, gop: int) -> bool:
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  if 'libx264' not in av.codecs_available:
    return False
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=FPS)
    stream.width, stream.height, stream.pix_fmt, stream.gop_size = WIDTH, HEIGHT, 'yuv420p', gop
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())
  return True


@contextlib.contextmanager
def _sequential_only():
  """`read_video` without PyAV: its OpenCV decode from frame 0 (the code before the seek)."""
  saved = video_io.av
  video_io.av = None
  try:
    yield
  finally:
    video_io.av = saved


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--videos', type=int, default=3, help='videos per codec')
  parser.add_argument('--clips', type=int, default=40, help='random windows per codec')
  parser.add_argument('--h264_gop', type=int, default=50)
  args = parser.parse_args()
  num_frames = FPS * SECONDS
  print(f'{os.cpu_count()} CPU cores; {args.videos} videos per codec of {num_frames} frames '
        f'{WIDTH}x{HEIGHT} at {FPS} fps; {args.clips} random {CLIP_FRAMES}-frame windows per '
        f'codec; PyAV {"present" if video_io.av is not None else "MISSING (no seek)"}',
        flush=True)
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as root:
    codecs = {}
    for k in range(args.videos):
      frames = _frames(num_frames, seed=k)
      for codec, extension in OPENCV_CODECS:
        path = os.path.join(root, f'{codec}_{k}{extension}')
        video_io.write_video(path, frames, fps=FPS, codec=codec)
        codecs.setdefault(f'{codec}{extension}', []).append(path)
      path = os.path.join(root, f'h264_{k}.mp4')
      if _write_h264(path, frames, args.h264_gop):
        codecs.setdefault(f'H.264.mp4 (gop {args.h264_gop})', []).append(path)
    print(f'{"codec":<22} {"sequential clips/s":>18} {"frames/clip":>11} '
          f'{"seek clips/s":>12} {"frames/clip":>11} {"speed-up":>8} {"first read ms":>13}')
    for name, paths in codecs.items():
      windows = [(paths[rng.integers(len(paths))],
                  int(rng.integers(0, num_frames - CLIP_FRAMES + 1))) for _ in range(args.clips)]
      index_start = time.perf_counter()
      for path in paths:   # The first read of each file also demuxes it for its timestamps.
        video_io.read_video(path, max_frames=CLIP_FRAMES, start=1)
      index_ms = (time.perf_counter() - index_start) * 1e3 / len(paths)
      with _sequential_only():
        start_time = time.perf_counter()
        old = [video_io.read_video(path, CLIP_FRAMES, start) for path, start in windows]
        old_rate = len(windows) / (time.perf_counter() - start_time)
      old_frames = np.mean([start + CLIP_FRAMES for _, start in windows])
      counter = [0]
      if video_io.av is not None:
        with decoding.counting_decoded_frames() as counter:
          start_time = time.perf_counter()
          new = [video_io.read_video(path, CLIP_FRAMES, start) for path, start in windows]
          new_rate = len(windows) / (time.perf_counter() - start_time)
      else:
        new, new_rate = old, old_rate
      for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)   # The seek returns the sequential frames.
      new_frames = counter[0] / len(windows) if video_io.av is not None else old_frames
      print(f'{name:<22} {old_rate:18.1f} {old_frames:11.1f} {new_rate:12.1f} '
            f'{new_frames:11.1f} {new_rate / old_rate:7.1f}x {index_ms:13.1f}', flush=True)


if __name__ == '__main__':
  main()
