"""A small synthetic data config, a moving-rectangle video and the batch keys (data tests)."""
import numpy as np

from gla_jax import defaults

KEYS_WITH_BOXES = {'video', 'label', 'video_index', 'mask', 'boxes', 'present'}
KEYS_WITHOUT_BOXES = {'video', 'label', 'video_index', 'mask'}


def config(**overrides):
  """A small synthetic config: 8-frame 32x32 clips from 12-frame 48x40 videos."""
  data_config = defaults.data_config()
  data_config.num_frames = 8
  data_config.crop_size = 32
  data_config.workers = 2
  data_config.prefetch = 1
  data_config.synthetic.update(dict(train_size=10, val_size=5, num_frames=12, height=40, width=48))
  data_config.update(overrides)
  data_config.lock()
  return data_config


def rectangle_video(num_frames=10, height=48, width=64):
  """A white rectangle moving on black, with its exact boxes (x1/y1 exclusive)."""
  video = np.zeros((num_frames, height, width, 3), np.uint8)
  boxes = []
  for t in range(num_frames):
    x0, y0 = 2 + 5 * t, 4 + 2 * t
    video[t, y0:y0 + 12, x0:x0 + 16] = 255
    boxes.append([x0, y0, x0 + 16, y0 + 12])
  return video, boxes
