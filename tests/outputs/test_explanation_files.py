"""The small pieces of a video's files: folders, panel clips, boxes as JSON."""
import os

import numpy as np

from gla_jax.outputs import explanation_files


def test_output_dir_by_mode():
  assert explanation_files.output_dir('w', '/videos/walk.avi', True) == os.path.join(
      'w', 'localize', 'walk')
  assert explanation_files.output_dir('w', 'walk.mp4', False) == os.path.join(
      'w', 'explain', 'walk')


def test_panel_clips_spread_over_the_video():
  assert explanation_files._panel_clips(10, 4) == [0, 3, 6, 9]
  assert explanation_files._panel_clips(2, 4) == [0, 1]
  assert explanation_files._panel_clips(5, 0) == []


def test_box_list():
  assert explanation_files._box_list(np.array([-1, -1, -1, -1], np.float32)) is None
  assert explanation_files._box_list(np.array([1.234, 2, 3, 4.5678], np.float32)) == [
      1.23, 2.0, 3.0, 4.57]
