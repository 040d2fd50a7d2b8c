"""Multi-host runs for real: two processes joined by jax.distributed over loopback.

Each process owns one CPU device and reads its own half of every global batch
(`jax.make_array_from_process_local_data`); gradients and BatchNorm statistics
are reduced across the processes by XLA's gloo collectives. Training must
equal one process that owns both devices and reads the whole global batch; the
main job must finish (not hang in a barrier or collective only some processes
reach) with its outputs written by process 0; an evaluation video that only
one process cannot read must not split the processes' batch counts; too many
unreadable training videos on one process must stop every process.

Two runs serve every test (tests/multihost_worker.py): the main job on two
processes, where evaluation video 0 cannot be read by process 1 in training's
evaluations, followed by training in which process 1 can read no training
video; and training on one process that cannot read evaluation video 0. Their
compiles are cached in pytest's cache directory (tests/compile_cache.py).
"""
import glob
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from gla_jax.training import checkpoints
from tests import compile_cache
from tests.outputs import events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A hang (a barrier or collective that only some processes reach) fails within this.
HANG_TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run(num_processes: int, mode: str, tmp_path, cache_dir: str, unreadable_on: int):
  """Runs the worker's `mode` on `num_processes` processes; (workdir, out prefix, logs).

  Logs go to files, not pipes: a process blocked on a full pipe nobody reads
  would stall the others in their next collective.
  """
  workdir, out = str(tmp_path / 'work'), str(tmp_path / 'out')
  env = dict(os.environ, JAX_PLATFORMS='cpu', GLA_TEST_UNREADABLE_ON=str(unreadable_on))
  # Multi- and single-process executables are kept apart.
  env[compile_cache.ENV_VAR] = os.path.join(cache_dir, f'{num_processes}_processes')
  env.pop('XLA_FLAGS', None)
  port = _free_port()
  log_paths = [tmp_path / f'log_{i}.txt' for i in range(num_processes)]
  processes = []
  try:
    for i, log_path in enumerate(log_paths):
      with open(log_path, 'w') as log:
        processes.append(subprocess.Popen(
            [sys.executable, '-m', 'tests.multihost_worker', str(i), str(num_processes),
             str(port), workdir, out, mode], cwd=REPO, env=env, stdout=log,
            stderr=subprocess.STDOUT))
    deadline = time.monotonic() + HANG_TIMEOUT_S
    for i, process in enumerate(processes):
      try:
        process.wait(timeout=max(deadline - time.monotonic(), 0))
      except subprocess.TimeoutExpired:
        raise AssertionError(f'process {i} of {num_processes} did not finish within '
                             f'{HANG_TIMEOUT_S} s: a barrier or collective only some '
                             f'reached:\n{log_paths[i].read_text()[-3000:]}') from None
  finally:
    for process in processes:
      process.kill()
      process.wait()
  logs = [log_path.read_text() for log_path in log_paths]
  failed = [f'process {i} (exit {process.returncode}):\n{log[-3000:]}'
            for i, (process, log) in enumerate(zip(processes, logs)) if process.returncode]
  assert not failed, '\n\n'.join(failed)
  return workdir, out, logs


@pytest.fixture(scope='module')
def cache_dir(persistent_compilation_cache):
  """The session's compilation cache (tests/conftest.py), shared by the workers."""
  return persistent_compilation_cache


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory, cache_dir):
  """The main job on 2 processes; process 1 cannot read evaluation video 0 in training."""
  return _run(2, 'main_job', tmp_path_factory.mktemp('two_processes'), cache_dir,
              unreadable_on=1)


@pytest.fixture(scope='module')
def one_process(tmp_path_factory, cache_dir):
  """Training on 1 process (2 devices), which cannot read evaluation video 0."""
  return _run(1, 'train', tmp_path_factory.mktemp('one_process'), cache_dir, unreadable_on=0)


def _summaries(run):
  _, out, logs = run
  return [json.load(open(f'{out}.{i}.json')) for i in range(len(logs))]


def _eval_metrics(summary):
  return {key: value for key, value in summary.items() if key.startswith('eval/')}


def test_two_processes_equal_one_process(two_processes, one_process):
  """Training on 2 processes reaches the parameters of 1 process reading whole batches."""
  a, b = np.load(f'{two_processes[1]}.npz'), np.load(f'{one_process[1]}.npz')
  assert _summaries(two_processes)[0]['step'] == _summaries(one_process)[0]['step'] == 3
  assert sorted(a.files) == sorted(b.files)
  for key in a.files:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_main_job_on_two_processes(two_processes):
  """The main job finishes on 2 processes: train, loc_eval, the long demo video on process 0.

  Before: only process 0 localized the demo video, whose weights came from an
  Orbax restore ending in a barrier over every process, so it waited forever.
  """
  workdir, _, logs = two_processes
  summaries = _summaries(two_processes)
  assert summaries[0]['step'] == summaries[1]['step'] == 3
  # Both processes computed the same evaluation ...
  assert summaries[0]['eval/clip_accuracy'] == summaries[1]['eval/clip_accuracy']
  # ... and process 0 alone wrote and printed the outputs.
  assert summaries[0]['long_video']['predicted_class'] and summaries[1]['long_video'] is None
  assert sum(log.count('Main job done') for log in logs) == 1 and 'Main job done' in logs[0]
  for name in ('main_job.json', 'eval_eval.json', 'loc_eval/comparison.md',
               'loc_eval/comparison.json',
               'localize/synthetic_long_video/localization.json'):
    assert os.path.isfile(os.path.join(workdir, name)), name
  assert len(glob.glob(os.path.join(workdir, 'loc_eval', 'clip_*.png'))) == 1
  assert json.load(open(os.path.join(workdir, 'main_job.json')))['step'] == 3
  # TensorBoard has the long video's overlay frame (the tiny config's 16 x 16 frames) and
  # loc_eval's pictures beside the curves.
  pictures = events.images(os.path.join(workdir, 'tensorboard'))
  assert pictures['long_video/overlay'] == (16, 16), sorted(pictures)


def test_checkpoints_hold_the_stream_state(two_processes):
  """The final checkpoint holds the loader's grain state: 3 steps of 4 rows per process."""
  workdir = two_processes[0]
  with checkpoints.TrainCheckpointManager(os.path.join(workdir, checkpoints.CHECKPOINTS_DIR),
                                          read_only=True) as manager:
    assert manager.data_state(3) == {
        'format': 1, 'origin_step': 0, 'grain': {'next_index': 12},
        'structure': {'rows': 4, 'workers': 0, 'worker_type': 'inline'}}


def test_video_unreadable_on_one_process(two_processes, one_process):
  """Evaluation video 0's frame count fails on process 1 only: both leave it out alike.

  9 videos of one clip make 2 evaluation batches of 8, 8 videos make 1. Before,
  process 1 evaluated 1 batch and process 0 waited for the second in a
  collective. Now the processes agree on the unreadable videos, so both report
  what one process that cannot read it reports.
  """
  # Every process of both runs left the video out (process 0 of the two because process 1
  # could not read it).
  for log in two_processes[2] + one_process[2]:
    assert 'left out 1 clips of 1 unreadable videos: SyntheticSource video 0' in log
  first, second = (_eval_metrics(summary) for summary in _summaries(two_processes))
  single = _eval_metrics(_summaries(one_process)[0])
  assert single and first == second
  assert sorted(first) == sorted(single)
  for key, value in single.items():
    np.testing.assert_allclose(first[key], value, rtol=1e-4, atol=1e-6, err_msg=key)


def test_too_many_unreadable_videos_on_one_process_stop_both(two_processes):
  """Process 1 can read no training video: both processes stop with its error.

  Before, process 1 raised BadDataError at its first batch while process 0
  waited in the first step's collectives forever (the run timed out).
  """
  _, out, logs = two_processes
  errors = [json.load(open(f'{out}.stop.{i}.json'))['error'] for i in range(len(logs))]
  assert errors[0] == errors[1]
  assert errors[0].startswith('Reading the training data of step 1 failed on process 1 of 2, '
                              'so every process stops. BadDataError: 7 of the 32 train videos '
                              'are unreadable, more than config.data.max_bad_fraction=0.2')
