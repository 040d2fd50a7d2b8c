"""A small synthetic data config, a moving-rectangle video, a class-sorted source, batch keys."""
import numpy as np

from gla_jax import defaults
from gla_jax.data import sources
from gla_jax.data import video_io

KEYS_WITH_BOXES = {'video', 'label', 'video_index', 'mask', 'boxes', 'present'}
KEYS_WITHOUT_BOXES = {'video', 'label', 'video_index', 'mask'}
# Evaluation batches also number each clip's frames in its video.
EVAL_KEYS_WITH_BOXES = KEYS_WITH_BOXES | {'frame_index'}


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


class ClassSortedSource(sources.Source):
  """Videos in class order, as a folder lists them: video i has label i // per_class.

  Frame t of video i is uniform grey (16 i + t) % 256, so a clip names its frames;
  video i has frame_counts[i] frames (default 8, 16, 24, ... cycling: 1-3 clips of 8);
  the `unreadable` videos have a frame count but fail to load (a truncated file).
  """

  def __init__(self, num_classes=8, per_class=4, frame_counts=None, unreadable=(), size=16):
    self.class_names = [f'class_{c}' for c in range(num_classes)]
    self.labels = np.repeat(np.arange(num_classes), per_class)
    self.frame_counts = list(frame_counts or [8 * (1 + i % 3) for i in range(len(self.labels))])
    self.unreadable, self.size = set(unreadable), size

  def __len__(self):
    return len(self.labels)

  def num_frames(self, index):
    return self.frame_counts[index]

  def label(self, index):
    return int(self.labels[index])

  def load(self, index, frame_indices):
    if index in self.unreadable:
      raise video_io.VideoReadError(f'video {index} is truncated')
    values = (16 * index + np.asarray(frame_indices)) % 256
    video = np.broadcast_to(values[:, None, None, None].astype(np.uint8),
                            (len(values), self.size, self.size, 3))
    return dict(video=np.array(video), label=int(self.labels[index]))

  def clips(self, clip_frames=8):
    """Hara's clips (range(1, n, clip_frames), 0-based) of every readable video: (video, start)."""
    return [(i, j - 1) for i in range(len(self)) if i not in self.unreadable
            for j in (list(range(1, self.frame_counts[i], clip_frames)) or [1])]
