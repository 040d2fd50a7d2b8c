"""One process of the multi-host training test (run by tests/test_multihost.py).

  python -m tests.multihost_worker PROCESS_ID NUM_PROCESSES PORT WORKDIR OUT.npz

Joins the other processes with `jax.distributed.initialize` over loopback
(CPU collectives through gloo), trains configs/tiny.py for a few steps in
WORKDIR (each process reads its own rows of every global batch), and process
0 writes the final parameters to OUT.npz. NUM_PROCESSES=1 is the single-process
reference: it simulates as many CPU devices as the multi-process run has in
total, so both runs use the same mesh and the same global batches.
"""
import sys

import jax
import numpy as np

TOTAL_DEVICES = 2
NUM_STEPS = 3


def main(process_id: int, num_processes: int, port: int, workdir: str, out: str) -> None:
  jax.config.update('jax_num_cpu_devices', TOTAL_DEVICES // num_processes)
  jax.config.update('jax_disable_most_optimizations', True)    # As every test (conftest.py).
  if num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=120)
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from gla_jax.training import loop  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  with config.unlocked():
    config.train.num_steps = NUM_STEPS
    config.train.eval_every = 0
    config.train.checkpoint_every = 0
    config.eval.max_batches = 1
  assert jax.process_count() == num_processes and jax.device_count() == TOTAL_DEVICES
  final = loop.train_and_evaluate(config, workdir)
  variables, _ = train_variables(workdir)
  if jax.process_index() == 0:
    flat = {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}
    np.savez(out, step=final['step'], **flat)


def train_variables(workdir: str):
  from gla_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  return checkpoints.load_training_variables(workdir, 'latest')


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
