"""Saving and loading model variables with Orbax.

A variables checkpoint is a directory:

  <directory>/variables/      the `{'params', 'batch_stats'}` pytree (Orbax)
  <directory>/metadata.json   what the variables are: model preset, classes, source

A save never leaves a half-written checkpoint under `directory`, nor destroys
a complete one there: it writes a hidden sibling directory and swaps it in
with renames once both parts are on disk.

Training checkpoints (`TrainCheckpointManager`) live in
`<workdir>/checkpoints/<step>/`, one Orbax `CheckpointManager` step each:

  state/      the whole train state (params, batch_stats, opt_state, step, rng)
  metadata/   JSON: step, preset, num_classes, the config
  metrics/    JSON: the evaluation metrics of that step, when it was evaluated

The last `keep` steps are kept, and also the best one by a validation metric
(Orbax preservation policies), so a long run keeps its best weights after
they fall out of the last `keep`. Saves are asynchronous (training continues
while the arrays are written).

Interrupted saves: Orbax writes a step into `<step>.orbax-checkpoint-tmp-<n>`
and renames it to `<step>` once every item is on disk, so a process killed at
any moment (SIGKILL during a save included) leaves either the complete step or
a temporary directory. `all_steps`, `latest_step` and
`has_training_checkpoints` only see complete steps, and a manager opened for
writing deletes the temporary directories (tests/test_reliability.py kills a
training run inside a save and resumes it).
"""
import json
import os
import shutil
from typing import Any, Dict, List, Optional, Tuple
import uuid

import jax
import numpy as np
import orbax.checkpoint as ocp

VARIABLES_DIR = 'variables'
METADATA_FILE = 'metadata.json'
CHECKPOINTS_DIR = 'checkpoints'
# Items of a training checkpoint step.
_STATE, _METADATA = 'state', 'metadata'
WHICH = ('latest', 'best')


def _checkpointer() -> ocp.Checkpointer:
  # Synchronous: `save` returns with everything on disk or raises, so a failed
  # save can be cleaned up without racing Orbax's background threads.
  return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def save_variables(directory, variables: Any, metadata: Optional[Dict[str, Any]] = None
                   ) -> str:
  """Writes `variables` (any pytree of arrays) and JSON `metadata` to `directory`.

  Args:
    directory: the checkpoint directory; an existing checkpoint there is
      replaced only after the new one is completely written.
    variables: pytree of numpy or jax arrays, e.g. `{'params', 'batch_stats'}`.
    metadata: JSON-serialisable dict (e.g. `preset`, `num_classes`, `source`).

  Returns:
    The absolute path of the checkpoint directory.
  """
  directory = os.path.abspath(os.fspath(directory))
  parent, name = os.path.split(directory)
  text = json.dumps(metadata or {}, indent=2, sort_keys=True)   # Fail before any I/O.
  os.makedirs(parent, exist_ok=True)
  # Staging and backup live next to `directory`, on the same file system, so
  # the swaps below are renames, not copies.
  staging = os.path.join(parent, f'.{name}.saving-{uuid.uuid4().hex[:8]}')
  try:
    os.makedirs(staging)
    checkpointer = _checkpointer()
    try:
      checkpointer.save(os.path.join(staging, VARIABLES_DIR), variables)
    finally:
      checkpointer.close()
    with open(os.path.join(staging, METADATA_FILE), 'w') as f:
      f.write(text)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  backup = None
  if os.path.exists(directory):
    backup = os.path.join(parent, f'.{name}.replaced-{uuid.uuid4().hex[:8]}')
    os.rename(directory, backup)
  try:
    os.rename(staging, directory)
  except BaseException:
    if backup:
      os.rename(backup, directory)
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if backup:
    shutil.rmtree(backup, ignore_errors=True)
  return directory


def load_variables(directory) -> Tuple[Any, Dict[str, Any]]:
  """Reads a checkpoint written by `save_variables`.

  Args:
    directory: the checkpoint directory.

  Returns:
    `(variables, metadata)`: the pytree as saved (numpy arrays stay numpy,
    jax arrays come back as jax arrays) and the metadata dict.
  """
  directory = os.path.abspath(os.fspath(directory))
  variables_dir = os.path.join(directory, VARIABLES_DIR)
  metadata_path = os.path.join(directory, METADATA_FILE)
  if not (os.path.isdir(variables_dir) and os.path.isfile(metadata_path)):
    raise FileNotFoundError(
        f'{directory!r} is not a variables checkpoint: expected {VARIABLES_DIR}/ and '
        f'{METADATA_FILE} inside it (written by gla_jax.checkpoint.save_variables, e.g. by '
        '`main.py --mode=convert`).')
  with open(metadata_path) as f:
    metadata = json.load(f)
  checkpointer = _checkpointer()
  try:
    variables = checkpointer.restore(variables_dir)
  finally:
    checkpointer.close()
  return variables, metadata


# ------------------------------------------------------------------------------
# Training checkpoints.
# ------------------------------------------------------------------------------


def _item_handlers() -> Dict[str, ocp.CheckpointHandler]:
  return {_STATE: ocp.PyTreeCheckpointHandler(), _METADATA: ocp.JsonCheckpointHandler()}


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
    read_only: open without creating or deleting anything.
  """

  def __init__(self, directory, keep: int = 3, best_metric: str = 'video_accuracy',
               read_only: bool = False):
    if keep < 1:
      raise ValueError(f'keep={keep}: keep at least the latest checkpoint (keep >= 1).')
    self.directory = os.path.abspath(os.fspath(directory))
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
        save_interval_steps=0 if read_only else 1)
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
           metrics: Optional[Dict[str, float]] = None) -> None:
    """Starts saving `state` (any pytree, e.g. a `TrainState`) as `step`; returns at once.

    Args:
      step: the step number (the directory name).
      state: the pytree to save; its arrays may be sharded over several hosts.
      metadata: JSON-serialisable description (step, preset, config, ...).
      metrics: the step's evaluation metrics (floats), or None if not evaluated.
    """
    if metrics is not None and self.best_metric not in metrics:
      raise ValueError(f'metrics {sorted(metrics)} lack the best_metric {self.best_metric!r}.')
    self._manager.save(step, args=ocp.args.Composite(
        **{_STATE: ocp.args.PyTreeSave(state), _METADATA: ocp.args.JsonSave(metadata)}),
        metrics=metrics, force=True)

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
  path = os.path.abspath(os.fspath(path))
  nested = os.path.join(path, CHECKPOINTS_DIR)
  return nested if os.path.isdir(nested) else path


def has_training_checkpoints(path) -> bool:
  """Whether `path` (a workdir or its checkpoints/ directory) holds a complete training checkpoint.

  Only `<step>/` directories count: the temporary directory of an unfinished
  save (`<step>.orbax-checkpoint-tmp-<n>`) does not.
  """
  directory = _checkpoints_dir(path)
  return os.path.isdir(directory) and any(
      name.isdigit() and os.path.isdir(os.path.join(directory, name, _STATE))
      for name in os.listdir(directory))


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
