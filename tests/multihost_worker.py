"""One process of the multi-host tests (run by tests/test_multihost.py).

  python -m tests.multihost_worker PROCESS_ID NUM_PROCESSES PORT WORKDIR OUT [MODE]

Joins the other processes with `jax.distributed.initialize` over loopback
(CPU collectives through gloo) and runs MODE on configs/tiny.py in WORKDIR
(each process reads its own rows of every global batch). In training's
evaluations, evaluation video `UNREADABLE_VIDEO` cannot be read by process
$GLA_TEST_UNREADABLE_ON only (its frame count raises VideoReadError there);
the 9 evaluation videos of one clip each make 2 batches of 8 clips, and 1
batch without that video. MODE:
  main_job    (default) the main job (`jobs.main_job`: train, loc_eval, the
              demo's long video) with few steps; each process writes its
              summary to OUT.<process id>.json. Then training again in
              WORKDIR_stop, where process $GLA_TEST_UNREADABLE_ON can read no
              training video: each process writes the error it stopped with
              to OUT.stop.<process id>.json;
  train       trains and evaluates; each process writes its final metrics to
              OUT.<process id>.json.
Then process 0 writes the final parameters to OUT.npz. NUM_PROCESSES=1 is the
single-process reference: it simulates as many CPU devices as the
multi-process run has in total, so both runs use the same mesh and the same
global batches. With $GLA_TEST_COMPILATION_CACHE set, compiles are cached there.
"""
import contextlib
import json
import os
import sys

import jax
import numpy as np

from tests import compile_cache

TOTAL_DEVICES = 2
NUM_STEPS = 3
# Which process cannot read which evaluation video (env GLA_TEST_UNREADABLE_ON, a
# process id; -1: none).
UNREADABLE_VIDEO = 0


def _tiny_config():
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  with config.unlocked():
    config.train.num_steps = NUM_STEPS
    config.train.eval_every = 0
    config.train.checkpoint_every = 0
    config.eval.max_batches = 0
    config.data.synthetic.val_size = 9
    config.data.max_bad_fraction = 0.2
    # loc_eval: only the methods it always computes (gradcam:layer4, global-local), no
    # deletion/insertion curves: their programs are most of the run's compiles, and what the
    # tests check (every process finishes, process 0 writes) does not depend on them.
    config.localize.update(max_clips=4, batch_size=2, deletion_steps=0, curve_clips=1,
                           num_pictures=1, video_codec='MJPG', methods=('gradcam:layer4',))
  return config


@contextlib.contextmanager
def _unreadable_on(process_id: int):
  """While entered, video UNREADABLE_VIDEO's frame count fails on `process_id` only."""
  from gla_jax.data import sources  # pylint: disable=g-import-not-at-top
  from gla_jax.data import video_io  # pylint: disable=g-import-not-at-top
  real_num_frames = sources.SyntheticSource.num_frames

  def num_frames(self, index):
    if self.dataset.split == 'val' and index == UNREADABLE_VIDEO:
      raise video_io.VideoReadError(f'video {index} is truncated on process {process_id}')
    return real_num_frames(self, index)
  if jax.process_index() == process_id:
    sources.SyntheticSource.num_frames = num_frames
  try:
    yield
  finally:
    sources.SyntheticSource.num_frames = real_num_frames


@contextlib.contextmanager
def _no_training_video_on(process_id: int):
  """While entered, no training video can be read on `process_id` (too many unreadable)."""
  from gla_jax.data import sources  # pylint: disable=g-import-not-at-top
  from gla_jax.data import video_io  # pylint: disable=g-import-not-at-top
  real_load = sources.SyntheticSource.load

  def load(self, index, frame_indices):
    if self.dataset.split == 'train':
      raise video_io.VideoReadError(f'video {index} is truncated on process {process_id}')
    return real_load(self, index, frame_indices)
  if jax.process_index() == process_id:
    sources.SyntheticSource.load = load
  try:
    yield
  finally:
    sources.SyntheticSource.load = real_load


def main(process_id: int, num_processes: int, port: int, workdir: str, out: str,
         mode: str = 'main_job') -> None:
  jax.config.update('jax_num_cpu_devices', TOTAL_DEVICES // num_processes)
  jax.config.update('jax_disable_most_optimizations', True)    # As every test (conftest.py).
  compile_cache.enable_from_env()
  if num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=120)
  assert jax.process_count() == num_processes and jax.device_count() == TOTAL_DEVICES
  from gla_jax import jobs  # pylint: disable=g-import-not-at-top
  from gla_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  from gla_jax.training import loop  # pylint: disable=g-import-not-at-top
  config = _tiny_config()
  real_train_and_evaluate = loop.train_and_evaluate
  unreadable_on = int(os.environ.get('GLA_TEST_UNREADABLE_ON', '-1'))

  def train_and_evaluate(*args, **kwargs):
    with _unreadable_on(unreadable_on):
      return real_train_and_evaluate(*args, **kwargs)
  loop.train_and_evaluate = train_and_evaluate    # Training's evaluations only, not loc_eval.
  if mode == 'main_job':
    config.train.tensorboard = True   # The main job's pictures go to TensorBoard (process 0).
    result = jobs.main_job(config, workdir)
  elif mode == 'train':
    final = loop.train_and_evaluate(config, workdir)
    result = {key: final[key] for key in final if key == 'step' or key.startswith('eval/')}
  else:
    raise ValueError(f'Unknown mode {mode!r}: use main_job or train.')
  with open(f'{out}.{jax.process_index()}.json', 'w') as f:
    json.dump(result, f, default=str)
  variables, _ = checkpoints.load_training_variables(workdir, 'latest')
  if jax.process_index() == 0:
    flat = {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}
    np.savez(f'{out}.npz', **flat)
  if mode == 'main_job':
    _stop_together(real_train_and_evaluate, config, f'{workdir}_stop', out, unreadable_on)


def _stop_together(train_and_evaluate, config, workdir: str, out: str, process_id: int) -> None:
  """Trains where `process_id` can read no training video; writes the error this process got."""
  from gla_jax.data import bad_data  # pylint: disable=g-import-not-at-top
  error = None
  try:
    with _no_training_video_on(process_id):
      train_and_evaluate(config, workdir)
  except bad_data.BadDataError as e:
    error = str(e)
  with open(f'{out}.stop.{jax.process_index()}.json', 'w') as f:
    json.dump({'error': error}, f)


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5],
       *sys.argv[6:7])
