"""Multi-host runs for real: two processes joined by jax.distributed over loopback.

Each process owns one CPU device and reads its own half of every global batch
(`jax.make_array_from_process_local_data`); gradients and BatchNorm statistics
are reduced across the processes by XLA's gloo collectives. Training must
equal one process that owns both devices and reads the whole global batch; the
main job must finish (not hang in a barrier or collective only some processes
reach) with its outputs written by process 0; an evaluation video that only
one process cannot read must not split the processes' batch counts.
"""
import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 400
# A hang (a barrier or collective that only some processes reach) fails within this.
HANG_TIMEOUT_S = 180


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch(num_processes: int, workdir: str, out: str, mode: str = 'train', **env_vars):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', **env_vars)
  env.pop('XLA_FLAGS', None)
  return [subprocess.Popen([sys.executable, '-m', 'tests.multihost_worker', str(i),
                            str(num_processes), str(port), workdir, out, mode], cwd=REPO,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for i in range(num_processes)]


def _wait(processes, timeout_s: float = TIMEOUT_S):
  """The processes' logs; fails when one fails or they are not all done within `timeout_s`."""
  logs = []
  try:
    for process in processes:
      try:
        output, _ = process.communicate(timeout=timeout_s)
      except subprocess.TimeoutExpired:
        raise AssertionError(f'process {len(logs)} of {len(processes)} did not finish within '
                             f'{timeout_s} s: a barrier or collective only some reached') from None
      logs.append(output)
  finally:
    for process in processes:
      process.kill()
  failed = [f'process {i} (exit {process.returncode}):\n{log[-3000:]}'
            for i, (process, log) in enumerate(zip(processes, logs)) if process.returncode]
  assert not failed, '\n\n'.join(failed)
  return logs


def test_two_processes_equal_one_process(tmp_path):
  multi = _launch(2, str(tmp_path / 'multi'), str(tmp_path / 'multi.npz'))
  _wait(multi)
  single = _launch(1, str(tmp_path / 'single'), str(tmp_path / 'single.npz'))
  _wait(single)
  a, b = np.load(tmp_path / 'multi.npz'), np.load(tmp_path / 'single.npz')
  assert int(a['step']) == int(b['step']) == 3
  assert sorted(a.files) == sorted(b.files)
  for key in a.files:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_main_job_on_two_processes(tmp_path):
  """The main job finishes on 2 processes: train, loc_eval, the long demo video on process 0.

  Before: only process 0 localized the demo video, whose weights came from an
  Orbax restore ending in a barrier over every process, so it waited forever.
  """
  workdir, out = str(tmp_path / 'work'), str(tmp_path / 'summary')
  logs = _wait(_launch(2, workdir, out, 'main_job'), HANG_TIMEOUT_S)
  summaries = [json.load(open(f'{out}.{i}.json')) for i in range(2)]
  assert summaries[0]['step'] == summaries[1]['step'] == 2
  # Both processes computed the same loc_eval (on their local devices) ...
  assert summaries[0]['eval/clip_accuracy'] == summaries[1]['eval/clip_accuracy']
  # ... and process 0 alone wrote and printed the outputs.
  assert summaries[0]['long_video']['predicted_class'] and summaries[1]['long_video'] is None
  assert sum(log.count('Main job done') for log in logs) == 1 and 'Main job done' in logs[0]
  for name in ('main_job.json', 'eval_eval.json', 'loc_eval/comparison.md',
               'loc_eval/comparison.json',
               'localize/synthetic_long_video/localization.json'):
    assert os.path.isfile(os.path.join(workdir, name)), name
  assert len(glob.glob(os.path.join(workdir, 'loc_eval', 'clip_*.png'))) == 1
  assert json.load(open(os.path.join(workdir, 'main_job.json')))['step'] == 2


def test_video_unreadable_on_one_process(tmp_path):
  """Evaluation video 0's frame count fails on process 1 only: both leave it out alike.

  9 videos of one clip make 2 evaluation batches of 8, 8 videos make 1. Before,
  process 1 evaluated 1 batch and process 0 waited for the second in a
  collective. Now the processes agree on the unreadable videos, so both report
  what one process that cannot read it reports.
  """
  out = str(tmp_path / 'multi')
  _wait(_launch(2, str(tmp_path / 'multi'), out, 'unreadable', GLA_TEST_UNREADABLE_ON='1'),
        HANG_TIMEOUT_S)
  reference = str(tmp_path / 'single')
  _wait(_launch(1, str(tmp_path / 'single'), reference, 'unreadable',
                GLA_TEST_UNREADABLE_ON='0'), HANG_TIMEOUT_S)
  first, second = (json.load(open(f'{out}.{i}.json')) for i in range(2))
  single = json.load(open(f'{reference}.0.json'))
  assert first == second
  assert sorted(first) == sorted(single)
  for key, value in single.items():
    np.testing.assert_allclose(first[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
