"""Evaluation: clip and video accuracy (top-1, top-5) and confusion matrices.

Every evaluation clip of the split is classified once (Hara et al.'s test
set-up: non-overlapping 16-frame clips, centre crop; see `gla_jax.data.loader`),
or those of a seeded subset of whole videos across the classes (`eval.max_batches`).

  clip accuracy    each clip on its own, ranked by its logits;
  video accuracy   the softmax scores of a video's clips averaged, then ranked
                   (Hara's `test.py` averages the clip scores per video).

Top-k counts a clip (video) as correct when its label is among the k classes
that come first in the order "higher score first, lower class index first on
ties" (the order of a stable descending sort), so top-1 is the argmax and the
confusion matrices (rows: true class, columns: predicted class) agree with it.
With fewer than 5 classes top-5 is top-(number of classes), i.e. 1.0.
Rows are selected by `mask`: padding rows (the last batch's, an unreadable
video's) are ignored.

The eval step is one `jax.jit` sharded like the training step (batch over
`'data'`, variables replicated, the uint8 clips normalised inside it); its
outputs are replicated, so every process sees the whole global batch and
computes the same metrics.
"""
import json
from typing import Any, Dict, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gla_jax import models
from gla_jax import parallel
from gla_jax import weights
from gla_jax.data import loader
from gla_jax.data import sources
from gla_jax.data import storage
from gla_jax.models import building
from gla_jax.outputs import reports
from gla_jax.training import input_failures

TOP_K = 5
# The scalar results, in the order they are reported.
SCALAR_METRICS = ('clip_accuracy', 'clip_top5', 'video_accuracy', 'video_top5', 'loss')
# Those where higher is better: what `train.best_metric` may rank checkpoints by.
RANKING_METRICS = SCALAR_METRICS[:4]
_EVAL_KEYS = ('video', 'label', 'video_index', 'mask')


# ------------------------------------------------------------------------------
# Metric arithmetic (numpy, host side).
# ------------------------------------------------------------------------------


def label_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Position of each row's label in the stable descending order of its scores.

  Args:
    scores: [N, C] logits or probabilities.
    labels: [N] true classes.

  Returns:
    int [N]: 0 when the label comes first (the argmax), k when k classes come
    before it (a higher score, or an equal score and a lower index).
  """
  scores = np.asarray(scores)
  labels = np.asarray(labels, np.int64)
  true = np.take_along_axis(scores, labels[:, None], axis=1)              # [N, 1]
  classes = np.arange(scores.shape[1])[None, :]
  before = (scores > true) | ((scores == true) & (classes < labels[:, None]))
  return before.sum(axis=1)


def top_k_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """bool [N]: the label is among the first k classes of each row (see `label_rank`)."""
  return label_rank(scores, labels) < k


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """int64 [C, C]: entry (i, j) counts true class i predicted as j."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
  return matrix


class MetricAccumulator:
  """Collects eval batches and computes clip- and video-level metrics.

  Video scores are running sums of clip softmax scores per `video_index`, so
  memory is one [C] vector per video, not per clip.
  """

  def __init__(self, num_classes: int):
    self.num_classes = num_classes
    self.clip_correct1 = 0
    self.clip_correct5 = 0
    self.num_clips = 0
    self.loss_sum = 0.0
    self.clip_confusion = np.zeros((num_classes, num_classes), np.int64)
    self.video_score_sum: Dict[int, np.ndarray] = {}
    self.video_clip_count: Dict[int, int] = {}
    self.video_label: Dict[int, int] = {}

  def add(self, logits: np.ndarray, labels: np.ndarray, video_index: np.ndarray,
          mask: np.ndarray, losses: Optional[np.ndarray] = None) -> None:
    """Adds a batch: logits [B, C], labels [B], video_index [B], mask [B], losses [B]."""
    mask = np.asarray(mask, bool)
    logits = np.asarray(logits, np.float64)[mask]
    labels = np.asarray(labels, np.int64)[mask]
    video_index = np.asarray(video_index, np.int64)[mask]
    if logits.shape[1] != self.num_classes:
      raise ValueError(f'Logits have {logits.shape[1]} classes, expected {self.num_classes}.')
    rank = label_rank(logits, labels)
    self.clip_correct1 += int(np.sum(rank < 1))
    self.clip_correct5 += int(np.sum(rank < TOP_K))
    self.num_clips += len(labels)
    if losses is not None:
      self.loss_sum += float(np.sum(np.asarray(losses, np.float64)[mask]))
    self.clip_confusion += confusion_matrix(labels, np.argmax(logits, axis=1), self.num_classes)
    # Softmax in float64 on the host: the averaged scores do not depend on
    # the device's float32 rounding.
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    for row, video in enumerate(video_index):
      video = int(video)
      if video in self.video_label:
        if self.video_label[video] != labels[row]:
          raise ValueError(f'Video {video} has clips labelled {self.video_label[video]} and '
                           f'{labels[row]}: the video_index of the batches is inconsistent.')
        self.video_score_sum[video] += probs[row]
        self.video_clip_count[video] += 1
      else:
        self.video_label[video] = int(labels[row])
        self.video_score_sum[video] = probs[row].copy()
        self.video_clip_count[video] = 1

  def result(self) -> Dict[str, Any]:
    """Scalar metrics (`SCALAR_METRICS`), counts and both confusion matrices."""
    if not self.num_clips:
      raise ValueError('No evaluation clip was seen (every row masked out); check the '
                       'evaluation split and eval.max_batches.')
    videos = sorted(self.video_label)
    scores = np.stack([self.video_score_sum[v] / self.video_clip_count[v] for v in videos])
    labels = np.array([self.video_label[v] for v in videos], np.int64)
    video_rank = label_rank(scores, labels)
    return {
        'clip_accuracy': self.clip_correct1 / self.num_clips,
        'clip_top5': self.clip_correct5 / self.num_clips,
        'video_accuracy': float(np.mean(video_rank < 1)),
        'video_top5': float(np.mean(video_rank < TOP_K)),
        'loss': self.loss_sum / self.num_clips,
        'num_clips': self.num_clips,
        'num_videos': len(videos),
        'clip_confusion': self.clip_confusion,
        'video_confusion': confusion_matrix(labels, np.argmax(scores, axis=1), self.num_classes),
    }


def compute_metrics(logits: np.ndarray, labels: np.ndarray, video_index: np.ndarray,
                    mask: np.ndarray, num_classes: Optional[int] = None) -> Dict[str, Any]:
  """`MetricAccumulator` on one set of arrays (see its `result`)."""
  accumulator = MetricAccumulator(num_classes or np.shape(logits)[1])
  accumulator.add(logits, labels, video_index, mask)
  return accumulator.result()


def scalar_metrics(result: Dict[str, Any]) -> Dict[str, float]:
  """The `SCALAR_METRICS` of a result, as floats (for logs and checkpoint metrics)."""
  return {key: float(result[key]) for key in SCALAR_METRICS}


# ------------------------------------------------------------------------------
# The compiled eval step and the evaluation loop.
# ------------------------------------------------------------------------------


def eval_step(variables: Dict[str, Any], batch: Dict[str, jax.Array], *,
              model: models.ResNeXt3D, mean: Sequence[float],
              std: Sequence[float]) -> Dict[str, jax.Array]:
  """Logits and per-clip losses of a batch (BatchNorm with running averages).

  The batch's uint8 `video` is normalised with `mean` and `std` (`config.data`).
  """
  video = models.normalize_video(batch['video'], mean, std)
  logits = model.apply(variables, video, train=False).astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  return {'logits': logits, 'loss': losses, 'label': batch['label'],
          'video_index': batch['video_index'], 'mask': batch['mask']}


def check_num_classes(config: ml_collections.ConfigDict) -> None:
  """Raises if the data has more classes than the model's classifier."""
  classes = len(sources.create_source(config.data, 'train').class_names)
  if classes > config.model.num_classes:
    raise ValueError(f'The training data has {classes} classes but config.model.num_classes='
                     f'{config.model.num_classes}; set --config.model.num_classes={classes}.')
  if classes < config.model.num_classes:
    logging.warning('The training data has %d classes, the classifier %d outputs.',
                    classes, config.model.num_classes)


class Evaluator:
  """Evaluates variables on a split; compiled once, called at every evaluation.

  Attributes:
    num_batches: batches one evaluation reads. `eval.max_batches` N > 0 reads a
      subset of whole videos round-robin over the classes (`eval.seed`), at
      most N * batch_size clips (`loader.eval_clips`), the same at every call.
    class_names: the split's class names.
  """

  def __init__(self, config: ml_collections.ConfigDict, model: models.ResNeXt3D,
               mesh: jax.sharding.Mesh, split: str = 'eval'):
    self.config, self.model, self.mesh, self.split = config, model, mesh, split
    self.batch_size = int(config.eval.batch_size)
    parallel.check_batch_size(self.batch_size, mesh)
    self.class_names = list(sources.create_source(config.data, split).class_names)
    # eval.max_batches caps the clips, taken as whole videos across the classes.
    self.max_clips = int(config.eval.max_batches) * self.batch_size
    # The processes agree on unreadable videos, so all evaluate the same batches.
    self.num_batches = loader.num_eval_batches(config.data, split, self.batch_size,
                                               self.max_clips, int(config.eval.seed),
                                               agree=parallel.any_process)
    replicated = parallel.replicated_sharding(mesh)
    mean = tuple(float(m) for m in config.data.mean)
    std = tuple(float(s) for s in config.data.std)
    self._step = jax.jit(lambda variables, batch: eval_step(variables, batch, model=model,
                                                            mean=mean, std=std),
                         in_shardings=(replicated, parallel.data_sharding(mesh)),
                         out_shardings=replicated)

  def __call__(self, variables: Dict[str, Any], step: Optional[int] = None) -> Dict[str, Any]:
    """Metrics of `variables` (replicated on the mesh, or host arrays) on the split."""
    variables = parallel.replicate({'params': variables['params'],
                                    'batch_stats': variables['batch_stats']}, self.mesh)
    accumulator = MetricAccumulator(int(self.config.model.num_classes))
    # A process that cannot read its clips feeds empty rows to the end, then every process
    # raises its error: none is left waiting in the next batch's collectives.
    batches = input_failures.AgreedBatches(
        loader.eval_batches(
            self.config.data, self.split, self.batch_size, process_index=jax.process_index(),
            process_count=jax.process_count(), max_clips=self.max_clips,
            seed=int(self.config.eval.seed), agree=parallel.any_process),
        self.batch_size // jax.process_count(), int(self.config.data.num_frames),
        int(self.config.data.crop_size), what='evaluation')
    bar = reports.progress(total=self.num_batches, desc=f'eval {self.split}',
                             clips_per_item=self.batch_size,
                             enabled=jax.process_index() == 0)
    pending = None
    try:
      for index, batch in enumerate(batches):
        if index == self.num_batches:
          break
        outputs = self._step(variables, parallel.shard_batch(
            {key: batch[key] for key in _EVAL_KEYS}, self.mesh))
        # Fetch the previous batch's outputs while this one computes.
        if pending is not None:
          accumulator.add(**_host_outputs(pending))
        pending = outputs
        bar.update(1)
      if pending is not None:
        accumulator.add(**_host_outputs(pending))
    finally:
      batches.close()
      bar.close()
    batches.raise_if_any_failed()
    result = accumulator.result()
    result['step'] = step
    logging.info('Evaluation (%s, step %s): clip accuracy %.4f, video accuracy %.4f over %d '
                 'clips of %d videos.', self.split, step, result['clip_accuracy'],
                 result['video_accuracy'], result['num_clips'], result['num_videos'])
    return result


def _host_outputs(outputs: Dict[str, jax.Array]) -> Dict[str, np.ndarray]:
  host = jax.device_get(outputs)
  return {'logits': host['logits'], 'labels': host['label'], 'video_index': host['video_index'],
          'mask': host['mask'], 'losses': host['loss']}


def _first(names: Sequence[str], count: int = 3) -> str:
  return ', '.join(names[:count]) + (', ...' if len(names) > count else '')


def results_path(workdir: str, split: str) -> str:
  return storage.join(workdir, f'eval_{split}.json')


def write_results(workdir: str, split: str, result: Dict[str, Any],
                  class_names: Sequence[str], step: Optional[int] = None) -> str:
  """Writes `<workdir>/eval_<split>.json`: metrics, counts, confusion matrices, class names."""
  record = {key: (value.tolist() if isinstance(value, np.ndarray) else value)
            for key, value in result.items()}
  record.update(split=split, class_names=list(class_names))
  if step is not None:
    record['step'] = int(step)
  path = results_path(workdir, split)
  storage.write_text(path, json.dumps(record))   # A reader never sees a half-written file.
  return path


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             variables: Optional[Dict[str, Any]] = None,
             checkpoint: Optional[str] = None) -> Dict[str, Any]:
  """Evaluates on `config.eval.split` and writes `<workdir>/eval_<split>.json`.

  Args:
    config: the whole config.
    workdir: the training workdir (also where the results go).
    variables: `{'params', 'batch_stats'}` to evaluate; by default those
      of `weights.for_config` (the workdir's training checkpoint, else
      `train.init_checkpoint`, else `<workdir>/converted`).
    checkpoint: weights to use instead of the workdir's (`--checkpoint`: a
      training workdir, a converted directory or a `.pth` file); the results
      still go to `workdir`. The results name the classes with the weights'
      class names where they carry them, else with the split's.

  Returns:
    The result: `SCALAR_METRICS`, `num_clips`, `num_videos`, `clip_confusion`,
    `video_confusion` (numpy [C, C]) and `step`.
  """
  parallel.initialize_distributed(config)
  mesh = parallel.make_mesh(config.num_devices or None)
  model = building.create_model(config)
  step, names = None, None
  if variables is None:
    found = weights.for_config(config, workdir, model, checkpoint=checkpoint)
    variables, step, names = found.variables, found.step, found.class_names
  evaluator = Evaluator(config, model, mesh, split=config.eval.split)
  if names and names != evaluator.class_names:
    logging.warning('The weights name their classes %s, the %s split %s: accuracy counts output '
                    'k as label k.', _first(names), config.eval.split,
                    _first(evaluator.class_names))
  result = evaluator(variables, step=step)
  if jax.process_index() == 0:
    path = write_results(workdir, config.eval.split, result, names or evaluator.class_names, step)
    logging.info('Wrote %s', path)
  return result
