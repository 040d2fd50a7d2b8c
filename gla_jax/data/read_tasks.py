"""What one reading task builds: a training example, one video's evaluation clips.

The loader (`loader`) maps these over grain datasets; they are picklable, so
grain's process workers run them too. A task returns an `Outcome`: the
example (or clips), the video it came from, and the videos that failed.
"""
import functools
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from gla_jax.data import bad_data
from gla_jax.data import sampling
from gla_jax.data import sources

# SeedSequence words that keep the random streams of the pipeline apart.
_EPOCH_STREAM = 0
_EXAMPLE_STREAM = 1
_LABEL_STREAM = 2


class Outcome(NamedTuple):
  """What a reading task returns.

  Attributes:
    value: an Example (training), the list of a video's clips (evaluation), or
      None when no video could be read.
    video_index: the video the value comes from (a replacement's index).
    failures: (video index, description, problem) of each video that failed.
  """
  value: Any
  video_index: int
  failures: Tuple[Tuple[int, str, str], ...]


def train_example(source: sources.Source, transform: sampling.ClipTransform, video_index: int,
                   seed: int, step: int, row: int, policy: bad_data.ReadPolicy) -> Outcome:
  """The clip of (step, row) from `video_index`, or from the next readable video after it.

  A replacement video gets the random draws the original would have had
  (the generator restarts from (seed, step, row)), so which example replaces
  which depends only on the files.
  """
  failures = []
  for offset in range(policy.attempts):
    candidate = (video_index + offset) % len(source)

    def read(candidate=candidate):
      rng = np.random.default_rng([seed, _EXAMPLE_STREAM, step, row])
      frame_indices = sampling.train_frame_indices(source.num_frames(candidate),
                                                   transform.num_frames, transform.stride, rng)
      return source.load(candidate, frame_indices), rng

    try:
      example, rng = bad_data.read_with_retries(source, candidate, read, policy.retries)
    except Exception as error:  # pylint: disable=broad-except
      failures.append((candidate, source.describe(candidate), bad_data.describe_error(error)))
      continue
    height, width = example['video'].shape[1:3]
    scale = transform.scales[int(rng.integers(len(transform.scales)))]
    x0, y0, side = sampling.corner_crop(height, width, scale, int(rng.integers(5)))
    flip = transform.flip and bool(rng.integers(2))
    return Outcome(contiguous(transform.finish(example, x0, y0, side, flip)), candidate,
                    tuple(failures))
  return Outcome(None, video_index, tuple(failures))


def contiguous(example: sampling.Example) -> sampling.Example:
  """`example` with C-contiguous arrays (a flipped clip is a view with a negative stride).

  grain's process workers hand C-contiguous arrays over in shared memory but
  pickle the others through a pipe; a worker that has put a 600 KB clip into
  the pipe cannot exit until the parent reads it, so closing a stream of such
  clips waited for grain's 25 s kill timeout.
  """
  return {key: np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value
          for key, value in example.items()}


def eval_examples(source: sources.Source, transform: sampling.ClipTransform, video_index: int,
                   starts: Sequence[int], policy: bad_data.ReadPolicy) -> Outcome:
  """Evaluation clips of one video at `starts`, decoding the video once (None if unreadable).

  Each clip's example also holds 'frame_index' (int32 [T]): its frames' indices
  in the video, as read (`sampling.eval_frame_indices`).
  """

  def read():
    num_frames = source.num_frames(video_index)
    clips = [sampling.eval_frame_indices(num_frames, start, transform.num_frames, transform.stride)
             for start in starts]
    return clips, source.load(video_index, np.concatenate(clips))

  try:
    clips, example = bad_data.read_with_retries(source, video_index, read, policy.retries)
  except Exception as error:  # pylint: disable=broad-except
    return Outcome(None, video_index,
                    ((video_index, source.describe(video_index), bad_data.describe_error(error)),))
  height, width = example['video'].shape[1:3]
  x0, y0, side = sampling.center_region(height, width)
  examples = []
  for k, frames in enumerate(clips):
    rows = slice(k * transform.num_frames, (k + 1) * transform.num_frames)
    finished = contiguous(transform.finish(
        {key: (value[rows] if key != 'label' else value) for key, value in example.items()},
        x0, y0, side, False))
    examples.append(dict(finished, frame_index=np.asarray(frames, np.int32)))
  return Outcome(examples, video_index, ())


class TrainRead:
  """Element k of this process's training stream: (step, row, outcome); picklable for workers.

  With `labels` (`random_labels`), an example's label is that of the video it
  was read from instead of the source's.
  """

  def __init__(self, source, transform, policy, seed, batch_size, rows,
               labels: Optional[np.ndarray] = None):
    self.source, self.transform, self.policy = source, transform, policy
    self.seed, self.batch_size, self.rows = seed, batch_size, rows
    self.labels = labels

  def __call__(self, k: int) -> Tuple[int, int, Outcome]:
    step, local = divmod(int(k), len(self.rows))
    row = self.rows[local]
    epoch, offset = divmod(step * self.batch_size + row, len(self.source))
    video = int(epoch_permutation(self.seed, epoch, len(self.source))[offset])
    outcome = train_example(self.source, self.transform, video, self.seed, step, row,
                            self.policy)
    if self.labels is not None and outcome.value is not None:
      outcome = outcome._replace(value=dict(outcome.value,
                                            label=int(self.labels[outcome.video_index])))
    return step, row, outcome


class EvalRead:
  """One evaluation batch's groups (video, local rows, starts) -> [(video, rows, outcome)]."""

  def __init__(self, source, transform, policy):
    self.source, self.transform, self.policy = source, transform, policy

  def __call__(self, groups):
    return [(video, locals_, eval_examples(self.source, self.transform, video, starts,
                                            self.policy))
            for video, locals_, starts in groups]


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
  """The order of the `size` videos in training epoch `epoch` (read-only, cached)."""
  order = np.random.default_rng([seed, _EPOCH_STREAM, epoch]).permutation(size)
  order.flags.writeable = False
  return order


def random_labels(seed: int, size: int, num_classes: int) -> np.ndarray:
  """A fixed random label for each of `size` training videos: int32 [size], classes balanced.

  Every class is given to floor or ceil of size / num_classes videos, in an
  order drawn from `seed` alone (not the epoch), so a video keeps its label in
  every epoch and on resume: the data randomisation test of Adebayo et al.,
  "Sanity Checks for Saliency Maps", NeurIPS 2018 (a model fit to labels that
  carry no information about the videos).

  Raises:
    ValueError: a negative seed, or fewer than 1 video or class.
  """
  if seed < 0 or size < 1 or num_classes < 1:
    raise ValueError(f'random_labels(seed={seed}, size={size}, num_classes={num_classes}): the '
                     'seed must be >= 0 (config.data.random_labels_seed; -1 turns random labels '
                     'off) and the split needs at least 1 video and 1 class.')
  balanced = np.arange(size) % num_classes
  labels = np.random.default_rng([seed, _LABEL_STREAM]).permutation(balanced).astype(np.int32)
  labels.flags.writeable = False
  return labels
