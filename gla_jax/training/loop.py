"""The training loop: `train_and_evaluate(config, workdir)`, resumable and interruptible.

Trains with the compiled step (`train_step`), evaluates every `eval_every`
steps, checkpoints to `<workdir>/checkpoints` and writes metrics, curves and
TensorBoard events (`reports`). Batch s is a function of (seed, s) only, so a
restarted run resumes from the latest complete checkpoint with the same
batches and reaches the same parameters; a checkpoint that does not fit the
config is refused with the differences listed. SIGTERM saves a checkpoint at
the end of the current step and stops. Steps skipped as non-finite are logged
with their videos; `train.max_nonfinite_steps` consecutive ones stop the run
(`NonFiniteTrainingError`), and such a step is never checkpointed. A loader
failure on one process of a multi-host run stops every process at the same
step with the same error (`input_failures`). Each checkpoint also holds the
training stream's grain state (`loader.TrainBatches.state`), which a resumed
run restores when the worker settings match.
"""
import functools
import json
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import jax
import ml_collections
import numpy as np
import optax

from gla_jax import models
from gla_jax import parallel
from gla_jax import validation
from gla_jax.data import bad_data
from gla_jax.data import loader
from gla_jax.data import storage
from gla_jax.models import building
from gla_jax.outputs import reports
from gla_jax.training import checkpoints
from gla_jax.training import evaluate
from gla_jax.training import input_failures
from gla_jax.training import optimization
from gla_jax.training import train_state
from gla_jax.training import train_step

# Batch entries the training step reads (boxes and present stay on the host).
_TRAIN_KEYS = ('video', 'label', 'mask', 'data_failed')
# Step metrics that are flags, not averaged into the logged summaries.
_FLAG_METRICS = ('nonfinite', 'data_failed')
# Config keys listed when a resumed checkpoint does not fit.
_MAX_LISTED_CHANGES = 10


class NonFiniteTrainingError(FloatingPointError):
  """`train.max_nonfinite_steps` consecutive steps had a non-finite loss or gradient."""


def checkpoint_metadata(config: ml_collections.ConfigDict, step: int,
                        class_names: Optional[List[str]] = None) -> Dict[str, Any]:
  """What a training checkpoint records besides the state (JSON).

  `class_names` (the data source's) are recorded when there is one per class.
  """
  num_classes = int(config.model.num_classes)
  return {
      'step': int(step),
      'preset': config.model.preset,
      'num_classes': num_classes,
      'class_names': list(class_names) if class_names and len(class_names) == num_classes
                     else None,
      'config': config.to_dict(),
  }


def _host_batch(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  return {key: batch[key] for key in _TRAIN_KEYS}


def _mean_metrics(history) -> Dict[str, float]:
  """Averages per-step metric dicts (device scalars) over the applied steps; counts the others.

  Returns:
    The mean of every metric over the steps whose update was applied (NaN when
    none was), and `nonfinite_steps`, the number of skipped ones.
  """
  stacked = jax.device_get(history)
  applied = [m for m in stacked if not m['nonfinite']]
  means = {key: float(np.mean([m[key] for m in applied])) if applied else float('nan')
           for key in stacked[0] if key not in _FLAG_METRICS}
  means['nonfinite_steps'] = float(len(stacked) - len(applied))
  return means


class _StopRequest:
  """While entered, SIGTERM asks the loop to checkpoint and stop at the next step boundary.

  The handler only sets `received`; it also puts the previous handler back,
  so a second SIGTERM acts as before (the default: terminate at once). Signal
  handlers can only be installed in the main thread: elsewhere (a training
  run in a worker thread) this does nothing and SIGTERM keeps its handler.
  """

  def __init__(self):
    self.received: Optional[str] = None
    self._previous = None

  def _handle(self, signum, frame) -> None:
    del frame
    self.received = signal.Signals(signum).name
    signal.signal(signum, self._previous)

  def __enter__(self) -> '_StopRequest':
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _NonFiniteGuard:
  """Reports the steps whose update was skipped and stops a run that keeps producing them.

  Args:
    max_consecutive: `train.max_nonfinite_steps`.
    manager: the checkpoint manager, to name the last good checkpoint.
  """

  def __init__(self, max_consecutive: int, manager: checkpoints.TrainCheckpointManager):
    self.max_consecutive, self.manager = max_consecutive, manager
    self.total = 0
    self.consecutive = 0

  def check(self, step: int, metrics: Dict[str, jax.Array], video_index: np.ndarray) -> None:
    """Looks at step `step`'s metrics (waiting for them).

    Raises:
      NonFiniteTrainingError: the `max_consecutive`-th skipped step in a row.
    """
    if not float(metrics['nonfinite']):
      self.consecutive = 0
      return
    self.total += 1
    self.consecutive += 1
    loss, grad_norm = (float(v) for v in jax.device_get((metrics['loss'], metrics['grad_norm'])))
    logging.warning(
        'Step %d: non-finite loss (%g) or gradient (norm %g); the update was skipped, so the '
        'parameters, BatchNorm statistics and momentum stay those of step %d. Videos of this '
        "process's rows of the batch (video_index): %s. %d consecutive skipped step(s); the run "
        'stops at %d (config.train.max_nonfinite_steps).', step, loss, grad_norm, step - 1,
        np.asarray(video_index).tolist(), self.consecutive, self.max_consecutive)
    if self.consecutive < self.max_consecutive:
      return
    self.manager.wait_until_finished()
    latest = self.manager.latest_step()
    kept = (f'The latest checkpoint, step {latest} in {self.manager.directory}, holds the last '
            'finite parameters; a restart resumes from it.' if latest is not None
            else 'No checkpoint was written before.')
    raise NonFiniteTrainingError(
        f'{self.consecutive} consecutive training steps ({step - self.consecutive + 1} to '
        f'{step}) had a non-finite loss or gradient (config.train.max_nonfinite_steps='
        f'{self.max_consecutive}); stopping without saving. {kept} To fix: lower '
        'config.train.learning_rate or add config.train.warmup_steps; use '
        "config.model.dtype='float32' if it is bfloat16; check the videos of the failing "
        'batches (logged above with their video_index) for corrupt frames.')


def _config_changes(saved: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
  """'model.gated: False -> True'-style lines for the model and train keys that differ."""
  def flat(tree, prefix=''):
    out = {}
    for key, value in tree.items():
      if isinstance(value, dict):
        out.update(flat(value, f'{prefix}{key}.'))
      else:
        out[f'{prefix}{key}'] = value
    return out
  # Through JSON, as the saved config was: tuples become lists on both sides.
  saved_flat = flat({k: v for k, v in saved.items() if k in ('model', 'train')})
  current_flat = flat(json.loads(json.dumps(
      {k: v for k, v in current.items() if k in ('model', 'train')})))
  return [f'{key}: {saved_flat.get(key, "(absent)")!r} -> {current_flat.get(key, "(absent)")!r}'
          for key in sorted(set(saved_flat) | set(current_flat))
          if saved_flat.get(key) != current_flat.get(key)]


def _restore_state(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
                   tx: optax.GradientTransformation, manager: checkpoints.TrainCheckpointManager,
                   step: int, sharding: jax.sharding.Sharding) -> train_state.TrainState:
  """The state checkpointed at `step`, after checking it was written for this model.

  Raises:
    ValueError: the checkpoint is of another preset or class count, or its
      state does not fit this config's model and optimizer (the changed config
      keys are listed), or it cannot be read.
  """
  metadata = manager.metadata(step)
  saved = (metadata.get('preset'), metadata.get('num_classes'))
  wanted = (config.model.preset, int(config.model.num_classes))
  if saved != wanted:
    raise ValueError(
        f'{manager.directory} holds checkpoints of a {saved[0]!r} model with {saved[1]} classes '
        f'(step {step}), but config.model asks for {wanted[0]!r} with {wanted[1]} classes. '
        'Resume with the config the run started with, or train this config in a new '
        '--workdir (to start from those weights, set config.train.init_checkpoint to this '
        'workdir' + (', with drop_head=True' if saved[0] == wanted[0] else '') + ').')
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          train_state.abstract_train_state(config, model, tx))
  try:
    state, _ = manager.restore(abstract, step)
  except Exception as error:  # pylint: disable=broad-except
    # Orbax raises several types for a tree or shape that does not fit.
    changes = _config_changes(metadata.get('config', {}), config.to_dict())
    listed = '; '.join(changes[:_MAX_LISTED_CHANGES]) + (
        f'; ... and {len(changes) - _MAX_LISTED_CHANGES} more' if
        len(changes) > _MAX_LISTED_CHANGES else '')
    where = storage.join(manager.directory, str(step))
    first_line = str(error).strip().split('\n')[0][:300]
    raise ValueError(
        f'Cannot resume from {where} ({type(error).__name__}: {first_line}). '
        + (f'The config differs from the checkpoint\'s: {listed}. Resume with the config the '
           'run started with, or use a new --workdir.' if changes else
           f'The config is the checkpoint\'s, so the files may be damaged: delete {where} to '
           'resume from the previous checkpoint.')) from error
  return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir`, evaluating and checkpointing on the way; resumes.

  Writes `<workdir>/checkpoints` (the last `keep_checkpoints` and the best by
  `train.best_metric`), `metrics.jsonl`, `eval_<split>.json`, `curves.png` and
  TensorBoard events (see `reports`). Restarting the same command continues
  from the latest checkpoint (optimizer state, step, RNG and data position
  included); `init_checkpoint` is read only when the workdir has none.

  Returns:
    The final metrics: `step`, `train/*` (averaged over the last log
    interval), `eval/*` (the final evaluation), `best/*` (the best evaluation
    and its step) and `nonfinite_steps` (skipped steps of this process's run).
    After SIGTERM: `interrupted` ('SIGTERM') and no final evaluation; the
    checkpoint of the last step is saved.

  Raises:
    NonFiniteTrainingError: `train.max_nonfinite_steps` consecutive skipped steps.
    bad_data.BadDataError: more unreadable videos than
      `data.max_bad_fraction` tolerates.
  """
  parallel.initialize_distributed(config)
  workdir = storage.absolute(workdir)   # A URI (gs://...) stays one.
  mesh = parallel.make_mesh(config.num_devices or None)
  validation.validate(config, mesh.devices.size, jax.process_count())
  model = building.create_model(config)
  building.check_clip_shape(model, int(config.data.num_frames), int(config.data.crop_size))
  evaluate.check_num_classes(config)
  is_main = jax.process_index() == 0

  learning_rate_fn = optimization.create_learning_rate_fn(config)
  rng = jax.random.key(int(config.train.seed))
  manager = checkpoints.TrainCheckpointManager(
      storage.join(workdir, checkpoints.CHECKPOINTS_DIR), keep=int(config.train.keep_checkpoints),
      best_metric=config.train.best_metric)
  try:
    with _StopRequest() as stop:
      final = _train_loop(config, workdir, mesh, model, learning_rate_fn, rng, manager, is_main,
                          stop)
  finally:
    manager.close()
  if stop.received:
    logging.warning('Stopped by %s after step %d; its checkpoint is saved in %s. Run the same '
                    'command again to resume.', stop.received, final['step'], manager.directory)
  return final


def _train_loop(config, workdir, mesh, model, learning_rate_fn, rng, manager, is_main, stop):
  """The body of `train_and_evaluate` (the manager is closed by the caller)."""
  train, num_steps = config.train, int(config.train.num_steps)
  params_shapes = jax.eval_shape(
      functools.partial(models.init_variables, model, clip_shape=building.clip_shape(config)),
      jax.random.key(0))['params']
  labels = optimization.trainable_labels(params_shapes, train.freeze_until)
  tx = optimization.create_optimizer(config, params_shapes, learning_rate_fn)
  latest = manager.latest_step()
  data_state = None
  if latest is None:
    state = parallel.replicate(train_state.create_train_state(config, model, rng, tx, workdir),
                               mesh)
    start_step = 0
  else:
    state = _restore_state(config, model, tx, manager, latest,
                           parallel.replicated_sharding(mesh))
    start_step = int(jax.device_get(state.step))
    data_state = manager.data_state(latest)
    logging.info('Resuming from %s at step %d (training data: %s).', manager.directory,
                 start_step, 'its saved grain state where the workers match' if data_state
                 else 'no saved stream state, positioned by step')

  step_fn = train_step.make_train_step(model, tx, learning_rate_fn, labels, mesh,
                                       mean=config.data.mean, std=config.data.std)
  evaluator = evaluate.Evaluator(config, model, mesh, split=config.eval.split)
  reporter = reports.Reporter(
      workdir, total_steps=num_steps, start_step=start_step,
      clips_per_step=int(train.batch_size), tensorboard=bool(train.tensorboard),
      enabled=is_main)
  best = _best_so_far(manager, train.best_metric)
  final: Dict[str, Any] = {'step': start_step}
  eval_result = None
  health = bad_data.DataHealth('train', config.data.max_bad_fraction)
  batches = input_failures.AgreedBatches(
      loader.train_batches(
          config.data, int(train.batch_size), int(train.seed), start_step=start_step,
          process_index=jax.process_index(), process_count=jax.process_count(), health=health,
          state=data_state),
      rows=int(train.batch_size) // jax.process_count(),
      num_frames=int(config.data.num_frames), crop_size=int(config.data.crop_size))
  nonfinite_guard = _NonFiniteGuard(int(train.max_nonfinite_steps), manager)

  def check(done: int, metrics, video_index) -> None:
    """Waits for step `done`: a loader failure on any process, then non-finite values."""
    batches.raise_if_failed(done, metrics['data_failed'])
    nonfinite_guard.check(done, metrics, video_index)

  try:
    history, unchecked = [], None
    interval_start, interval_step = time.perf_counter(), start_step
    for step in range(start_step, num_steps):
      host_batch = next(batches)
      state, metrics = step_fn(state, parallel.shard_batch(_host_batch(host_batch), mesh))
      done = step + 1
      # One step in flight at most: checking the previous step waits for it,
      # so the progress bar measures compute, not dispatch, and host batches
      # do not pile up in memory.
      if unchecked is not None:
        check(*unchecked)
      unchecked = (done, metrics, host_batch['video_index'])
      history.append(metrics)
      reporter.tick(done)
      for report in health.pop_epoch_reports():
        reporter.write(done, report)
      last = done == num_steps
      logged = done % train.log_every == 0 or last
      evaluated = bool(train.eval_every and done % train.eval_every == 0) or last
      if logged or evaluated:
        # This step's results leave the device: check it first.
        check(*unchecked)
        unchecked = None
      if logged:
        elapsed = time.perf_counter() - interval_start
        summary = {f'train/{k}': v for k, v in _mean_metrics(history).items()}
        summary['train/steps_per_second'] = (done - interval_step) / max(elapsed, 1e-9)
        summary['train/clips_per_second'] = summary['train/steps_per_second'] * train.batch_size
        reporter.write(done, summary)
        final.update(summary)
        history, interval_start, interval_step = [], time.perf_counter(), done
      if evaluated:
        eval_result = evaluator(state.variables, step=done)
        scalars = evaluate.scalar_metrics(eval_result)
        reporter.write(done, {f'eval/{k}': v for k, v in scalars.items()})
        if is_main:
          evaluate.write_results(workdir, config.eval.split, eval_result, evaluator.class_names,
                                 step=done)
        if best is None or scalars[train.best_metric] > best[1]:
          best = (done, scalars[train.best_metric])
      stopping = stop.received is not None
      if evaluated or stopping or (train.checkpoint_every and done % train.checkpoint_every == 0):
        if unchecked is not None:
          # The step that trips max_nonfinite_steps is never saved.
          check(*unchecked)
          unchecked = None
        manager.save(done, state, checkpoint_metadata(config, done, evaluator.class_names),
                     metrics=evaluate.scalar_metrics(eval_result) if evaluated else None,
                     data_state=batches.state())
      final['step'] = done
      if stopping:
        break
    if eval_result is None and stop.received is None:
      # Nothing left to train (a finished run restarted): report its final evaluation.
      eval_result = evaluator(state.variables, step=start_step)
      if best is None:
        best = (start_step, evaluate.scalar_metrics(eval_result)[train.best_metric])
  finally:
    batches.close()
    manager.wait_until_finished()
    reporter.close()
  final['nonfinite_steps'] = nonfinite_guard.total
  if stop.received is not None:
    final['interrupted'] = stop.received
    return final
  final.update({f'eval/{k}': v for k, v in evaluate.scalar_metrics(eval_result).items()})
  if best is not None:
    final['best/step'], final[f'best/{train.best_metric}'] = best
  return final


def _best_so_far(manager: 'checkpoints.TrainCheckpointManager',
                 metric: str) -> Optional[Tuple[int, float]]:
  step = manager.best_step()
  if step is None:
    return None
  metrics = manager.metrics(step)
  return (step, float(metrics[metric])) if metrics and metric in metrics else None
