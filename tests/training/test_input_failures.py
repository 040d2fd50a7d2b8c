"""A data failure on one process of several: the others are not left waiting (issue 14).

The two-process loopback run (tests/test_multihost.py) covers training; here the
agreement itself, on one process that plays process 0 of 2 (process 1 reads fine).
"""
import jax
from jax.experimental import multihost_utils
import numpy as np
import pytest

from gla_jax.data import bad_data
from gla_jax.training import input_failures


def _batch(rows=2):
  return {'video': np.full((rows, 4, 8, 8, 3), 7, np.uint8), 'label': np.ones(rows, np.int32),
          'video_index': np.zeros(rows, np.int32), 'mask': np.ones(rows, bool)}


@pytest.fixture
def process_0_of_2(monkeypatch):
  """jax says 2 processes; an allgather returns this process's row and a healthy process 1's."""
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(multihost_utils, 'process_allgather',
                      lambda x: np.stack([np.asarray(x), np.zeros_like(np.asarray(x))]))


def test_an_evaluation_failure_feeds_empty_rows_then_every_process_raises(process_0_of_2):
  def batches():
    yield _batch()
    raise bad_data.BadDataError('3 of 9 eval videos are unreadable: a.avi, ...')

  agreed = input_failures.AgreedBatches(batches(), 2, 4, 8, what='evaluation')
  first, second, third = (next(agreed) for _ in range(3))   # The pass goes on to its end.
  assert first['mask'].all() and not first['data_failed'].any()
  for placeholder in (second, third):
    assert placeholder['video'].shape == (2, 4, 8, 8, 3) and not placeholder['mask'].any()
    assert placeholder['data_failed'].all()
  with pytest.raises(bad_data.BadDataError,
                     match=r'Reading the evaluation data failed on process 0 of 2.*a\.avi'):
    agreed.raise_if_any_failed()


def test_the_end_of_a_pass_is_not_a_failure(process_0_of_2):
  agreed = input_failures.AgreedBatches(iter([_batch(), _batch()]), 2, 4, 8, what='evaluation')
  assert len(list(agreed)) == 2 and agreed.error is None
  agreed.raise_if_any_failed()   # Nobody failed: no error.


def test_on_one_process_the_error_is_raised_where_it_happens():
  def batches():
    raise bad_data.BadDataError('unreadable')
    yield  # pylint: disable=unreachable

  with pytest.raises(bad_data.BadDataError, match='unreadable'):
    next(input_failures.AgreedBatches(batches(), 2, 4, 8))
