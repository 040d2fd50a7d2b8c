"""Unreadable videos: retries, the tolerated count, warnings and per-epoch reports.

A read is retried `data.retries` times unless the file itself is bad
(`video_io.VideoReadError`: corrupt, truncated, missing or not a video). The
loader replaces an unreadable training example by the next video in index
order and leaves an unreadable video's evaluation clips out; `DataHealth`
counts them and raises `BadDataError` past `data.max_bad_fraction`.
"""
import collections
import math
import time
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

from absl import logging

from gla_jax.data import sources
from gla_jax.data import video_io

# Seconds before the first retry of a failed read; doubled for each further one.
_RETRY_DELAY_S = 0.05
# Unreadable videos listed in a BadDataError before the rest are counted.
_MAX_LISTED = 20


class BadDataError(RuntimeError):
  """More videos of a split are unreadable than `data.max_bad_fraction` allows."""


class ReadPolicy(NamedTuple):
  """How hard a task tries to read (a picklable argument of process tasks).

  Attributes:
    retries: extra attempts at a video whose source raised (not VideoReadError).
    attempts: videos tried in turn for one training example (the first and its
      replacements); more unreadable ones in a row exceed the tolerated count.
  """
  retries: int
  attempts: int


def describe_error(error: BaseException) -> str:
  """How messages name a failure: '<exception type>: <message>'."""
  return f'{type(error).__name__}: {error}'


def read_with_retries(source: sources.Source, video_index: int, read: Callable[[], Any],
                      retries: int) -> Any:
  """`read()`, tried `retries` more times after an error other than VideoReadError."""
  for attempt in range(retries):
    try:
      return read()
    except video_io.VideoReadError:
      raise   # A corrupt, truncated, missing or non-video file reads the same next time.
    except Exception as error:  # pylint: disable=broad-except
      # Any other failure of a source (network file system, TFDS reader) may be transient.
      logging.warning('Reading %s failed (%s); retry %d of %d.', source.describe(video_index),
                      describe_error(error), attempt + 1, retries)
      time.sleep(_RETRY_DELAY_S * 2 ** attempt)
  return read()


class DataHealth:
  """The unreadable videos one pipeline met: warned about once each, counted, limited.

  `loader.train_batches` and `loader.eval_batches` fill it. Training reports once per
  epoch: `pop_epoch_reports` gives the records the training loop logs and
  writes to metrics.jsonl. Counts live in memory: a resumed run counts anew.

  Args:
    split: 'train' or 'eval', for messages.
    max_bad_fraction: `data.max_bad_fraction`.

  Attributes:
    unreadable: {description: problem} of every unreadable video, in the order met.
    skipped: training examples replaced, or evaluation clips left out, in all.
  """

  def __init__(self, split: str, max_bad_fraction: float):
    self.split = split
    self.max_bad_fraction = float(max_bad_fraction)
    self.unreadable: Dict[str, str] = {}
    self.skipped = 0
    self.size = 0
    self._epoch_skipped: Dict[int, int] = collections.Counter()
    self._epochs_done = 0
    self._reports: List[Dict[str, float]] = []

  def attach(self, size: int, epochs_done: int = 0) -> None:
    """Sets the split's video count and the epochs already done (a resumed run's)."""
    self.size, self._epochs_done = size, epochs_done

  @property
  def allowed(self) -> int:
    """How many unreadable videos are tolerated: floor(max_bad_fraction * videos)."""
    return int(math.floor(self.max_bad_fraction * self.size + 1e-9))

  def policy(self, retries: int) -> ReadPolicy:
    return ReadPolicy(retries=retries, attempts=max(1, min(self.size, self.allowed + 1)))

  def record(self, failures: Sequence[Tuple[int, str, str]], skipped: int, epoch: int = 0
             ) -> None:
    """Notes one example's failed videos and how many examples or clips they cost.

    Raises:
      BadDataError: more unreadable videos than tolerated.
    """
    if not failures:
      return
    for _, description, problem in failures:
      if description not in self.unreadable:
        self.unreadable[description] = problem
        logging.warning(
            'Skipping unreadable %s video %s (%s); %s. %d unreadable so far, %d of %d '
            'tolerated (config.data.max_bad_fraction=%g).', self.split, description, problem,
            'its examples are replaced by the next video' if self.split == 'train'
            else 'its clips are left out of the evaluation', len(self.unreadable),
            self.allowed, self.size, self.max_bad_fraction)
    self.skipped += skipped
    self._epoch_skipped[epoch] += skipped
    if len(self.unreadable) > self.allowed:
      raise BadDataError(self._too_many())

  def no_readable_video(self) -> BadDataError:
    return BadDataError(f'No readable {self.split} video left: every video tried failed.\n'
                        + self._listing())

  def _listing(self) -> str:
    lines = [f'  {description}: {problem}'
             for description, problem in list(self.unreadable.items())[:_MAX_LISTED]]
    more = len(self.unreadable) - _MAX_LISTED
    return '\n'.join(lines + ([f'  ... and {more} more.'] if more > 0 else []))

  def _too_many(self) -> str:
    return (f'{len(self.unreadable)} of the {self.size} {self.split} videos are unreadable, more '
            f'than config.data.max_bad_fraction={self.max_bad_fraction:g} tolerates '
            f'({self.allowed}):\n{self._listing()}\nRe-create or re-download these files, or '
            'remove them (from the folder, split file or annotations); or raise '
            'config.data.max_bad_fraction to train without them.')

  def end_epochs(self, epochs_done: int) -> None:
    """Reports every epoch up to `epochs_done` (completed epochs) not reported yet."""
    while self._epochs_done < epochs_done:
      epoch = self._epochs_done
      skipped = self._epoch_skipped.pop(epoch, 0)
      self._epochs_done += 1
      report = {'data/epoch': float(epoch + 1), 'data/skipped_examples': float(skipped),
                'data/unreadable_videos': float(len(self.unreadable))}
      if skipped:
        logging.warning('Epoch %d: %d examples replaced; unreadable videos so far: %s.',
                        epoch + 1, skipped, ', '.join(self.unreadable))
      else:
        logging.info('Epoch %d: every example was read.', epoch + 1)
      self._reports.append(report)

  def pop_epoch_reports(self) -> List[Dict[str, float]]:
    """The epoch reports since the last call: data/epoch, data/skipped_examples, ..."""
    reports, self._reports = self._reports, []
    return reports

