"""What explain_video and --video take: frame folders, video lists, globs, folders of videos."""
import os

import cv2
import numpy as np
import pytest

from gla_jax import video_inputs
from gla_jax.data import frame_folders
from gla_jax.data import video_io


def _frames(folder, names, size=(6, 8)):
  os.makedirs(folder, exist_ok=True)
  for k, name in enumerate(names):
    cv2.imwrite(os.path.join(folder, name), np.full((*size, 3), 10 * k, np.uint8))


def test_frame_folders_are_read_in_natural_order_rgb_frames_only(tmp_path):
  _frames(tmp_path / 'v', ['img_10.jpg', 'img_2.jpg', 'img_1.jpg', 'flow_x_1.jpg', 'flow_y_1.jpg'])
  assert [os.path.basename(p) for p in frame_folders.frame_files(str(tmp_path / 'v'))] == [
      'img_1.jpg', 'img_2.jpg', 'img_10.jpg']
  frames = frame_folders.read_frame_folder(str(tmp_path / 'v'))
  assert frames.shape == (3, 6, 8, 3) and frames.dtype == np.uint8
  np.testing.assert_allclose(frames[:, 0, 0, 0], [20, 10, 0], atol=2)   # img_1 was written 3rd
  _frames(tmp_path / 'mixed', ['a_1.png', 'b_1.png'])
  with pytest.raises(video_io.VideoReadError, match='mixes 2 series of images'):
    frame_folders.frame_files(str(tmp_path / 'mixed'))
  _frames(tmp_path / 'sizes', ['image_1.png'])
  _frames(tmp_path / 'sizes', ['image_2.png'], size=(8, 8))
  with pytest.raises(video_io.VideoReadError, match='need one size'):
    frame_folders.read_frame_folder(str(tmp_path / 'sizes'))
  (tmp_path / 'broken').mkdir()
  (tmp_path / 'broken' / 'image_1.jpg').write_bytes(b'not a jpeg')
  with pytest.raises(video_io.VideoReadError, match='not a readable JPEG or PNG'):
    video_inputs.read_video_input(str(tmp_path / 'broken'))


def test_video_lists_globs_and_folders(tmp_path):
  videos = tmp_path / 'videos'
  videos.mkdir()
  for name in ('v10.avi', 'v2.mp4', 'notes.txt'):
    (videos / name).write_bytes(b'x')
  _frames(videos / 'v3', ['image_1.jpg'])                   # a folder of frames: one video
  (videos / 'empty_folder').mkdir()
  names = lambda paths: [os.path.relpath(p, tmp_path) for p in paths]
  assert names(video_inputs.video_paths(str(videos))) == [
      'videos/v2.mp4', 'videos/v3', 'videos/v10.avi']
  assert names(video_inputs.video_paths(f'{videos}/v*.avi,{videos / "v3"}, {videos}/v2.mp4')) == [
      'videos/v10.avi', 'videos/v3', 'videos/v2.mp4']
  assert names(video_inputs.video_paths(str(videos / 'v3'))) == ['videos/v3']
  with pytest.raises(FileNotFoundError, match=r"matches no video file"):
    video_inputs.video_paths(f'{videos}/*.mkv')
  with pytest.raises(FileNotFoundError, match='holds no video files'):
    video_inputs.video_paths(str(videos / 'empty_folder'))
  with pytest.raises(FileNotFoundError, match='--video is empty'):
    video_inputs.video_paths(' , ')
  with pytest.raises(ValueError, match=r'fps=0: must be > 0'):
    video_inputs.read_video_input(str(videos / 'v3'), fps=0)
