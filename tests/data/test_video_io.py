"""Tests of gla_jax.data.video_io: round trips through this OpenCV build's codecs, and errors."""
import os

import cv2
import numpy as np
import pytest

from gla_jax.data import video_io
from tests.data import decoding


def _frames(num_frames=12, height=48, width=64, seed=0):
  """Blocky random frames (8x8 blocks): lossy codecs keep them close."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, 256, (num_frames, height // 8, width // 8, 3), dtype=np.uint8)
  return np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)


# (codec, container, bound on the mean absolute error in uint8 levels).
CODECS = [
    ('MJPG', '.avi', 8.0),
    ('mp4v', '.mp4', 8.0),
    ('XVID', '.avi', 8.0),
    ('FFV1', '.mkv', 0.0),  # lossless
]


@pytest.mark.parametrize('codec,container,tolerance', CODECS)
def test_round_trip(tmp_path, codec, container, tolerance):
  frames = _frames()
  path = str(tmp_path / f'clip{container}')
  video_io.write_video(path, frames, fps=30.0, codec=codec)
  decoded = video_io.read_video(path)
  assert decoded.dtype == np.uint8
  assert decoded.shape == frames.shape
  assert np.abs(decoded.astype(np.float64) - frames).mean() <= tolerance
  info = video_io.video_info(path)
  assert (info.num_frames, info.height, info.width) == (12, 48, 64)
  assert info.fps == pytest.approx(30.0)


def test_colour_order_is_rgb(tmp_path):
  frames = np.zeros((2, 16, 16, 3), np.uint8)
  frames[..., 0] = 255  # pure red
  path = str(tmp_path / 'red.mkv')
  video_io.write_video(path, frames, codec='FFV1')
  decoded = video_io.read_video(path)
  np.testing.assert_array_equal(decoded, frames)


def test_start_and_max_frames(tmp_path):
  frames = _frames(num_frames=10)
  path = str(tmp_path / 'clip.mkv')
  video_io.write_video(path, frames, codec='FFV1')
  np.testing.assert_array_equal(video_io.read_video(path, max_frames=3, start=4), frames[4:7])
  np.testing.assert_array_equal(video_io.read_video(path, max_frames=4), frames[:4])
  # A range reaching past the end returns what exists.
  np.testing.assert_array_equal(video_io.read_video(path, max_frames=50, start=8), frames[8:])
  with pytest.raises(video_io.VideoReadError, match='range'):
    video_io.read_video(path, start=10)


def test_missing_file(tmp_path):
  with pytest.raises(video_io.VideoReadError, match='does not exist'):
    video_io.read_video(str(tmp_path / 'nope.avi'))
  with pytest.raises(video_io.VideoReadError, match='does not exist'):
    video_io.video_info(str(tmp_path / 'nope.avi'))


def test_empty_file(tmp_path):
  path = tmp_path / 'empty.avi'
  path.write_bytes(b'')
  with pytest.raises(video_io.VideoReadError, match='empty'):
    video_io.read_video(str(path))


def test_random_bytes(tmp_path):
  path = tmp_path / 'noise.avi'
  path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()[2:])
  with pytest.raises(video_io.VideoReadError, match='cannot open'):
    video_io.read_video(str(path))


def test_directory(tmp_path):
  with pytest.raises(video_io.VideoReadError, match='directory'):
    video_io.read_video(str(tmp_path))


@pytest.mark.parametrize('extension,name', [('.png', 'PNG'), ('.jpg', 'JPEG'), ('.bmp', 'BMP')])
def test_image_file(tmp_path, extension, name):
  path = str(tmp_path / f'frame{extension}')
  assert cv2.imwrite(path, _frames(1)[0])
  with pytest.raises(video_io.VideoReadError, match=f'{name} image'):
    video_io.read_video(path)
  # Renamed to a video extension it is still recognised by its content.
  renamed = str(tmp_path / 'frame.avi')
  os.rename(path, renamed)
  with pytest.raises(video_io.VideoReadError, match='image, not a video'):
    video_io.read_video(renamed)


@pytest.mark.parametrize('codec,container', [('MJPG', '.avi'), ('mp4v', '.mp4')])
def test_truncated_file(tmp_path, codec, container):
  path = str(tmp_path / f'clip{container}')
  video_io.write_video(path, np.random.default_rng(0).integers(
      0, 256, (20, 48, 64, 3), dtype=np.uint8), codec=codec)
  data = open(path, 'rb').read()
  for fraction in (0.02, 0.5):
    truncated = str(tmp_path / f'cut{fraction}{container}')
    with open(truncated, 'wb') as f:
      f.write(data[:int(len(data) * fraction)])
    # Either unopenable (header or MP4 index lost) or short of the header's count.
    with pytest.raises(video_io.VideoReadError, match='cannot open|truncated'):
      video_io.read_video(truncated)
  # Non-strict reading returns the frames before the cut where they decode.
  if codec == 'MJPG':
    partial = video_io.read_video(str(tmp_path / f'cut0.5{container}'), strict=False)
    assert 1 <= len(partial) < 20


def test_write_errors(tmp_path):
  frames = _frames(2)
  # No encoder has this FourCC, and no container this extension (avc1 would do
  # here too, but other OpenCV builds have an H.264 encoder).
  with pytest.raises(video_io.VideoWriteError, match='cannot write'):
    video_io.write_video(str(tmp_path / 'a.avi'), frames, codec='ZZZZ')
  with pytest.raises(video_io.VideoWriteError, match='cannot write'):
    video_io.write_video(str(tmp_path / 'a.xyz'), frames, codec='MJPG')
  with pytest.raises(video_io.VideoWriteError, match='uint8'):
    video_io.write_video(str(tmp_path / 'a.avi'), frames.astype(np.float32))
  with pytest.raises(video_io.VideoWriteError, match='odd'):
    video_io.write_video(str(tmp_path / 'a.avi'), frames[:, :47])
  with pytest.raises(video_io.VideoWriteError, match='No frames'):
    video_io.write_video(str(tmp_path / 'a.avi'), frames[:0])
  with pytest.raises(video_io.VideoWriteError, match='FourCC'):
    video_io.write_video(str(tmp_path / 'a.avi'), frames, codec='MJPEG')
  # The parent folder is created.
  video_io.write_video(str(tmp_path / 'new' / 'dir' / 'a.avi'), frames)
  assert video_io.video_info(str(tmp_path / 'new' / 'dir' / 'a.avi')).num_frames == 2


def _decode_with_pyav(path):
  """(codec name, pixel format, rate, RGB frames) of the video stream, decoded by PyAV."""
  av = pytest.importorskip('av')
  with av.open(path) as container:
    stream = container.streams.video[0]
    frames = np.stack([frame.to_ndarray(format='rgb24') for frame in container.decode(stream)])
    return (stream.codec_context.name, stream.codec_context.pix_fmt, stream.average_rate,
            frames)


@pytest.mark.parametrize('codec', video_io.H264_CODECS)
def test_h264_round_trip_decoded_by_pyav(tmp_path, codec):
  if video_io.h264_encoder() is None:
    pytest.skip('this PyAV build has no H.264 encoder')
  frames = _moving_frames(num_frames=14)
  path = str(tmp_path / 'overlay.mp4')
  video_io.write_video(path, frames, fps=12.5, codec=codec)
  name, pix_fmt, rate, decoded = _decode_with_pyav(path)
  assert (name, pix_fmt, float(rate)) == ('h264', 'yuv420p', 12.5)
  assert decoded.shape == frames.shape
  assert np.abs(decoded.astype(np.float64) - frames).mean() < 4.0
  # The project's reader gives the same frames.
  np.testing.assert_array_equal(video_io.read_video(path), decoded)


def test_h264_without_an_encoder_falls_back_to_mp4v_with_a_warning(tmp_path, monkeypatch,
                                                                   caplog):
  av = pytest.importorskip('av')

  def no_codec(name, mode='r'):
    raise av.codec.codec.UnknownCodecError(name)

  monkeypatch.setattr(av.codec, 'Codec', no_codec)
  assert video_io.h264_encoder() is None
  frames = _frames(4)
  path = str(tmp_path / 'overlay.mp4')
  with caplog.at_level('WARNING'):
    video_io.write_video(path, frames, codec='avc1')
  assert "No H.264 encoder in PyAV" in caplog.text and 'mp4v' in caplog.text
  monkeypatch.undo()
  name, _, _, decoded = _decode_with_pyav(path)
  assert name == 'mpeg4' and decoded.shape == frames.shape


# ------------------------------------------------------------------------------
# Seeking (read_video with start > 0): the frames of a full sequential decode,
# decoding from the keyframe at or before `start` instead of from frame 0.
# ------------------------------------------------------------------------------

SEEK_FRAMES, SEEK_GOP = 60, 12


def _moving_frames(num_frames=SEEK_FRAMES, height=48, width=64):
  """Smoothly moving gradients: inter-coded codecs predict them, so P/B frames exist."""
  y, x = np.mgrid[:height, :width]
  return np.stack([((np.stack([x + 3 * t, y + 2 * t, x + y - t], -1) * 1.7) % 256).astype(
      np.uint8) for t in range(num_frames)])


def _write_h264(path, frames):
  """H.264 with B-frames and a keyframe every SEEK_GOP frames, written by PyAV (libx264)."""
  av = pytest.importorskip('av')
  if 'libx264' not in av.codecs_available:
    pytest.skip('this PyAV build has no libx264 encoder')
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=25)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt, stream.gop_size = 'yuv420p', SEEK_GOP
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())


SEEK_CODECS = [('MJPG', '.avi'), ('mp4v', '.mp4'), ('XVID', '.avi'), ('FFV1', '.mkv'),
               ('FFV1', '.avi'), ('h264', '.mp4')]


def _seek_video(tmp_path, codec, container):
  path = str(tmp_path / f'seek_{codec}{container}')
  if codec == 'h264':
    _write_h264(path, _moving_frames())
  else:
    video_io.write_video(path, _moving_frames(), fps=25.0, codec=codec)
  return path


@pytest.mark.parametrize('codec,container', SEEK_CODECS)
def test_read_from_start_is_frame_exact(tmp_path, codec, container):
  path = _seek_video(tmp_path, codec, container)
  reference = decoding.sequential_decode(path)
  assert len(reference) == SEEK_FRAMES
  # 0, just after 0, a keyframe, past a keyframe, mid, the last frames.
  for start in (0, 1, SEEK_GOP - 1, SEEK_GOP, SEEK_GOP + 1, 29, 37, SEEK_FRAMES - 16,
                SEEK_FRAMES - 2, SEEK_FRAMES - 1):
    for max_frames in (1, 16, None):
      got = video_io.read_video(path, max_frames=max_frames, start=start)
      stop = None if max_frames is None else start + max_frames
      np.testing.assert_array_equal(got, reference[start:stop], err_msg=f'start={start}')
  with pytest.raises(video_io.VideoReadError, match='range'):
    video_io.read_video(path, start=SEEK_FRAMES)


@pytest.mark.parametrize('codec,container', SEEK_CODECS)
def test_read_from_start_decodes_from_the_keyframe_not_frame_0(tmp_path, codec, container):
  pytest.importorskip('av')
  path = _seek_video(tmp_path, codec, container)
  with decoding.counting_decoded_frames() as count:
    clip = video_io.read_video(path, max_frames=16, start=40)
  assert len(clip) == 16
  # From the keyframe at or before frame 40 (a GOP of SEEK_GOP at most for the inter
  # codecs, 1 for the intra-only ones); sequential decoding took 56.
  assert count[0] <= 16 + SEEK_GOP, count[0]
