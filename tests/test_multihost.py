"""Multi-host training for real: two processes joined by jax.distributed over loopback.

Each process owns one CPU device and reads its own half of every global batch
(`jax.make_array_from_process_local_data`); gradients and BatchNorm statistics
are reduced across the processes by XLA's gloo collectives. The result must
equal one process that owns both devices and reads the whole global batch.
"""
import os
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 400


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch(num_processes: int, workdir: str, out: str):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  return [subprocess.Popen([sys.executable, '-m', 'tests.multihost_worker', str(i),
                            str(num_processes), str(port), workdir, out], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for i in range(num_processes)]


def _wait(processes):
  logs = []
  try:
    for process in processes:
      output, _ = process.communicate(timeout=TIMEOUT_S)
      logs.append(output)
  finally:
    for process in processes:
      process.kill()
  for process, log in zip(processes, logs):
    assert process.returncode == 0, log[-4000:]


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
