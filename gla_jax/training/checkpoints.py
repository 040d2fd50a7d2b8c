"""Training checkpoints with Orbax: the whole train state, resumable, the best one kept.

`<workdir>/checkpoints/<step>/` holds `state/` (params, batch_stats, opt_state,
step, rng), `metadata/` (step, preset, classes, the config), `data_state/` (the
training stream's grain state, `loader.TrainBatches.state`; absent in older
checkpoints) and `metrics/` (the step's evaluation). The last `keep` steps and the best by a validation metric
are kept; saves are asynchronous, and a step appears only once complete, so a
process killed at any moment resumes from its latest complete step. (Converted
weights, `variables/` + `metadata.json`, are `gla_jax.weights`'s format.) The
directory may be local or a URI that `gla_jax.data.storage` reaches (gs://...).
"""
import os
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from gla_jax.data import storage

CHECKPOINTS_DIR = 'checkpoints'
# Items of a training checkpoint step.
_STATE, _METADATA, _DATA_STATE = 'state', 'metadata', 'data_state'
WHICH = ('latest', 'best')


# ------------------------------------------------------------------------------
# Training checkpoints.
# ------------------------------------------------------------------------------


def process_local_options() -> ocp.options.MultiprocessingOptions:
  """Orbax options under which this process alone takes part: its barriers are skipped."""
  return ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                            active_processes={jax.process_index()})


def _item_handlers() -> Dict[str, ocp.CheckpointHandler]:
  return {_STATE: ocp.PyTreeCheckpointHandler(), _METADATA: ocp.JsonCheckpointHandler(),
          _DATA_STATE: ocp.JsonCheckpointHandler()}


class TrainCheckpointManager:
  """Training checkpoints in one directory: the last `keep` steps plus the best one.

  A thin layer over `orbax.checkpoint.CheckpointManager` that fixes the items
  (state, metadata, metrics) and the preservation policy. Every process of a
  multi-host run makes the same calls; Orbax coordinates the writes.

  Args:
    directory: e.g. `<workdir>/checkpoints` (created on the first save).
    keep: how many of the latest steps to keep.
    best_metric: key of the saved metrics that ranks steps (higher is better);
      the best step is kept besides the latest `keep`.
    read_only: open without creating or deleting anything, and without Orbax's
      barriers over all processes (any process may read on its own).
  """

  def __init__(self, directory, keep: int = 3, best_metric: str = 'video_accuracy',
               read_only: bool = False):
    if keep < 1:
      raise ValueError(f'keep={keep}: keep at least the latest checkpoint (keep >= 1).')
    self.directory = storage.absolute(directory)
    self.best_metric = best_metric
    rank = lambda metrics: float(metrics[best_metric])  # pylint: disable=unnecessary-lambda-assignment
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        # best_fn makes Orbax write each step's metrics to disk, so the best
        # step is still known after a restart; the policy decides what stays.
        best_fn=rank, best_mode='max',
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(keep),
            policies.BestN(get_metric_fn=rank, reverse=False, n=1,
                           keep_checkpoints_without_metrics=False)]),
        create=not read_only, read_only=read_only, cleanup_tmp_directories=not read_only,
        # Orbax warns when read_only overrides a save interval: give none.
        save_interval_steps=0 if read_only else 1,
        # A read touches no other process: no barrier, so one process alone may
        # read (the main job's demo video on process 0 of a multi-host run).
        multiprocessing_options=(process_local_options() if read_only
                                 else ocp.options.MultiprocessingOptions()))
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=_item_handlers())

  def all_steps(self) -> List[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def best_step(self) -> Optional[int]:
    """The kept step with the highest `best_metric`; None when no step has metrics."""
    scored = [(float(m[self.best_metric]), step) for step in self.all_steps()
              if (m := self.metrics(step)) and self.best_metric in m]
    # Ties go to the earlier step (the first time the score was reached).
    return max(scored, key=lambda item: (item[0], -item[1]))[1] if scored else None

  def metrics(self, step: int) -> Optional[Dict[str, float]]:
    return self._manager.metrics(step)

  def save(self, step: int, state: Any, metadata: Dict[str, Any],
           metrics: Optional[Dict[str, float]] = None,
           data_state: Optional[Dict[str, Any]] = None) -> None:
    """Starts saving `state` (any pytree, e.g. a `TrainState`) as `step`; returns at once.

    Args:
      step: the step number (the directory name).
      state: the pytree to save; its arrays may be sharded over several hosts.
      metadata: JSON-serialisable description (step, preset, config, ...).
      metrics: the step's evaluation metrics (floats), or None if not evaluated.
      data_state: JSON state of the training data stream after this step, or
        None. Process 0's is written: every process's stream is at the same
        position (each reads batch_size / process_count examples a step).
    """
    if metrics is not None and self.best_metric not in metrics:
      raise ValueError(f'metrics {sorted(metrics)} lack the best_metric {self.best_metric!r}.')
    items = {_STATE: ocp.args.PyTreeSave(state), _METADATA: ocp.args.JsonSave(metadata)}
    if data_state is not None:
      items[_DATA_STATE] = ocp.args.JsonSave(data_state)
    self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """The state of `step` (default: the latest) in the structure of `abstract_state`.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct`s with shardings (or
        arrays) giving the structure, dtypes and placement to restore into.
      step: the step; None for the latest.

    Returns:
      `(state, metadata)`.
    """
    step = self._step(step)
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        _STATE: ocp.args.PyTreeRestore(
            item=abstract_state,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)),
        _METADATA: ocp.args.JsonRestore()}))
    return restored[_STATE], restored[_METADATA]

  def metadata(self, step: Optional[int] = None) -> Dict[str, Any]:
    """The JSON metadata of `step` (default: the latest), without reading the state."""
    step = self._step(step)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        **{_METADATA: ocp.args.JsonRestore()}))
    return restored[_METADATA]

  def data_state(self, step: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """The training data stream's state saved with `step`; None where there is none."""
    step = self._step(step)
    if not storage.is_dir(storage.join(self.directory, str(step), _DATA_STATE)):
      return None
    restored = self._manager.restore(step, args=ocp.args.Composite(
        **{_DATA_STATE: ocp.args.JsonRestore()}))
    return restored[_DATA_STATE]

  def restore_variables(self, step: Optional[int] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """`{'params', 'batch_stats'}` of `step` as numpy arrays, without the optimizer state.

    Needs no model: the structure comes from the checkpoint's own metadata, so
    it works on any device count (the arrays come back to the host).
    """
    step = self._step(step)
    tree = self._manager.item_metadata(step)[_STATE].tree
    wanted = {key: tree[key] for key in ('params', 'batch_stats')}
    item = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), wanted)
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        _STATE: ocp.args.PyTreeRestore(
            item=item,
            restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item),
            partial_restore=True),
        _METADATA: ocp.args.JsonRestore()}))
    variables = restored[_STATE]
    return {'params': variables['params'], 'batch_stats': variables['batch_stats']}, \
        restored[_METADATA]

  def _step(self, step: Optional[int]) -> int:
    steps = self.all_steps()
    if step is None:
      step = self.latest_step()
    if step is None or step not in steps:
      raise FileNotFoundError(f'No checkpoint of step {step} in {self.directory!r} (steps: '
                              f'{steps}).')
    return step

  def wait_until_finished(self) -> None:
    """Blocks until the asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> 'TrainCheckpointManager':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _checkpoints_dir(path) -> str:
  """`path` itself if it holds checkpoint steps, else `path/checkpoints`."""
  path = storage.absolute(path)
  nested = storage.join(path, CHECKPOINTS_DIR)
  return nested if storage.is_dir(nested) else path


def has_training_checkpoints(path) -> bool:
  """Whether `path` (a workdir or its checkpoints/ directory) holds a complete training checkpoint.

  Only `<step>/` directories count: the temporary directory of an unfinished
  save (`<step>.orbax-checkpoint-tmp-<n>`) does not.
  """
  directory = storage.path(_checkpoints_dir(path))
  return directory.is_dir() and any(
      entry.name.isdigit() and (entry / _STATE).is_dir() for entry in directory.iterdir())


def _open_for_reading(path, which: str, best_metric: str
                      ) -> Tuple[TrainCheckpointManager, int]:
  if which not in WHICH:
    raise ValueError(f'Unknown checkpoint choice {which!r}; use one of {WHICH}.')
  if not has_training_checkpoints(path):
    raise FileNotFoundError(f'{os.fspath(path)!r} holds no training checkpoint (expected '
                            f'{CHECKPOINTS_DIR}/<step>/ written by train_and_evaluate).')
  manager = TrainCheckpointManager(_checkpoints_dir(path), best_metric=best_metric,
                                   read_only=True)
  step = manager.best_step() if which == 'best' else None
  if step is None:
    step = manager.latest_step()
  return manager, step


def training_step(path, which: str = 'latest', best_metric: str = 'video_accuracy') -> int:
  """The step `load_training_variables(path, which, best_metric)` reads."""
  manager, step = _open_for_reading(path, which, best_metric)
  manager.close()
  return step


def load_training_variables(path, which: str = 'latest', best_metric: str = 'video_accuracy'
                            ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """`({'params', 'batch_stats'}, metadata)` of a training workdir's checkpoint.

  Args:
    path: a training workdir, or its `checkpoints/` directory.
    which: 'latest', or 'best' (the latest when no kept step was evaluated).
    best_metric: the evaluation metric that ranks steps for 'best'.
  """
  manager, step = _open_for_reading(path, which, best_metric)
  try:
    return manager.restore_variables(step)
  finally:
    manager.close()
