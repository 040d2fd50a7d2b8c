"""A data failure on one process of a multi-host run stops every process together.

On one process an error of the loader (more unreadable videos than
`data.max_bad_fraction` tolerates: `bad_data.BadDataError`, or any other) is
raised where it happens. With several processes that process would stop while
the others wait in the next step's collectives, so `AgreedBatches` turns the
error into a flag: the failing process feeds placeholder rows with
`data_failed` True, the compiled step ors the flag over the global batch (and
does not apply the update), and where the loop checks that step's metrics
every process exchanges the failures' messages
(`multihost_utils.process_allgather`, only then) and raises the same error.
Evaluation does the same with one agreement after its last batch.
"""
from typing import Any, Dict, Iterator, Optional

from absl import logging
import jax
import numpy as np

from gla_jax import parallel
from gla_jax.data import bad_data

# Bytes of a failure's message that travel to the other processes.
_MAX_MESSAGE_BYTES = 8192


class AgreedBatches:
  """Training batches with a `data_failed` row flag; a loader error is raised by every process.

  Evaluation uses it too (`what='evaluation'`): there the placeholder rows
  count for nothing (mask False) and `raise_if_any_failed` after the last batch
  raises on every process.

  Args:
    batches: the loader's iterator (`loader.train_batches` or `eval_batches`).
    rows: rows of this process's batches (batch_size / process_count).
    num_frames, crop_size: the clips' shape (`config.data`), for placeholders.
    what: the data's name in messages ('training' or 'evaluation').
  """

  def __init__(self, batches: Iterator[Dict[str, np.ndarray]], rows: int, num_frames: int,
               crop_size: int, what: str = 'training'):
    self._batches = batches
    self._rows, self._num_frames, self._crop_size = rows, num_frames, crop_size
    self.what = what
    self.error: Optional[Exception] = None

  def __iter__(self) -> 'AgreedBatches':
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    if self.error is None:
      try:
        return dict(next(self._batches), data_failed=np.zeros(self._rows, bool))
      except StopIteration:   # The end of an evaluation pass, the same on every process.
        raise
      except Exception as error:  # pylint: disable=broad-except
        if jax.process_count() == 1:
          raise
        self.error = error
        logging.error('Reading the %s data failed on process %d (%s: %s); the other '
                      'processes stop with it.', self.what, jax.process_index(),
                      type(error).__name__, error)
    return self._placeholder()

  def _placeholder(self) -> Dict[str, np.ndarray]:
    """Rows of no clip (mask False) that flag the failure."""
    frames, size, rows = self._num_frames, self._crop_size, self._rows
    return {'video': np.zeros((rows, frames, size, size, 3), np.uint8),
            'label': np.zeros(rows, np.int32), 'video_index': np.full(rows, -1, np.int32),
            'mask': np.zeros(rows, bool), 'data_failed': np.ones(rows, bool)}

  def state(self) -> Optional[Dict[str, Any]]:
    """The loader's stream state (`loader.TrainBatches.state`); None for another iterator."""
    state = getattr(self._batches, 'state', None)
    return state() if callable(state) and self.error is None else None

  def close(self) -> None:
    close = getattr(self._batches, 'close', None)
    if close is not None:
      close()

  def raise_if_failed(self, step: int, data_failed: Any) -> None:
    """Raises the same error on every process when step `step`'s `data_failed` metric is set.

    Every process must call it for the same steps (a collective when set).

    Raises:
      bad_data.BadDataError: a process found too many unreadable videos.
      RuntimeError: another loader error on some process.
    """
    if float(data_failed):
      self._raise(f'of step {step}')

  def raise_if_any_failed(self) -> None:
    """After the last batch, on every process: the same error where any process failed.

    One collective with several processes (all must call it); on one process
    an error was raised where it happened.
    """
    if jax.process_count() > 1 and parallel.any_process([self.error is not None])[0]:
      self._raise('')

  def _raise(self, when: str) -> None:
    message, is_bad_data = _agreed_message(self.error, f'{self.what} data {when}'.strip())
    error_type = bad_data.BadDataError if is_bad_data else RuntimeError
    if self.error is not None:
      raise error_type(message) from self.error
    raise error_type(message)


def _agreed_message(error: Optional[Exception], what: str):
  """(message, whether any failure is a BadDataError), the same on every process."""
  text = b'' if error is None else f'{type(error).__name__}: {error}'.encode()[
      :_MAX_MESSAGE_BYTES]
  mine = np.zeros(_MAX_MESSAGE_BYTES + 3, np.int32)
  mine[0] = error is not None
  mine[1] = isinstance(error, bad_data.BadDataError)
  mine[2] = len(text)
  mine[3:3 + len(text)] = np.frombuffer(text, np.uint8)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  gathered = np.asarray(multihost_utils.process_allgather(mine)).reshape(
      jax.process_count(), -1)
  failures = [(process, bytes(row[3:3 + row[2]].astype(np.uint8)).decode(errors='replace'))
              for process, row in enumerate(gathered) if row[0]]
  lines = [f'Reading the {what} failed on process {process} of '
           f'{jax.process_count()}, so every process stops. {text}' for process, text in failures]
  return '\n'.join(lines), bool(gathered[:, 1].any())
