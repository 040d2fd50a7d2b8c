"""Tests of gla_jax/demo.py: the main job's long synthetic video."""
import numpy as np

from configs import demo as demo_config
from gla_jax import demo
from gla_jax.data import sources
from gla_jax.data import synthetic
from gla_jax.data import video_io


def test_demo_video_acts_for_one_clip_at_training_speed(tmp_path):
  """The main job's long video: one clip-length action segment, motion not slowed."""
  config = demo_config.get_config()
  clip_frames = int(config.data.num_frames)
  truth = demo.write_demo_video(config, str(tmp_path / 'long.avi'))
  start, end = truth['segment']
  assert end - start == clip_frames
  assert truth['num_frames'] == demo.DEMO_VIDEO_CLIPS * clip_frames
  assert video_io.read_video(truth['video']).shape[0] == truth['num_frames']
  # The same video's actor, regenerated: its speed over the segment lies in the
  # generator's training range (the demo's first video is a move_left).
  generator = sources.SyntheticSource(config.data, 'eval').config
  video = synthetic.generate_video(generator, 0, truth['num_frames'], 'val',
                                   segment_frames=(clip_frames, clip_frames))
  assert truth['class_name'] == 'move_left' and video.label == truth['label']
  speed = np.abs(np.diff(video.params.actor.center[start:end, 0])).mean()
  low, high = (s * min(generator.height, generator.width) for s in generator.translation_speed)
  assert low <= speed <= high, (speed, low, high)


def test_tensorboard_shows_the_middle_frame_of_the_first_segment():
  assert demo.overlay_frame_index([(24, 30), (2, 4)], 32) == 26
  assert demo.overlay_frame_index([(5, 6)], 32) == 5
  assert demo.overlay_frame_index([], 32) == 15
