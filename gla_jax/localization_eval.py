"""`--mode=loc_eval`: every attention method's localization on evaluation clips with ground truth.

Finds the weights, explains the clips of a seeded subset of whole videos of
the evaluation split across the classes (at most `config.localize.max_clips`
clips, `loader.eval_clips`), which have ground-truth boxes, with every method
of `config.localize.methods` under every up-sampling of
`config.localize.upsamplings` (`explain.comparison`), scores them and writes `<workdir>/loc_eval/`
(`outputs.comparison_report`). Every clip and every method's map stay in
memory (float32 T x S x S each): 64 clips of 16 x 112 x 112 take about 50 MB
per method. The clip batches are split over this process's devices
(`parallel.make_local_mesh`); in a multi-host run every process computes the
whole comparison on its own devices (no collective, so none waits for another)
and process 0 alone writes the files (and, with `config.train.tensorboard`,
the pictures into `<workdir>/tensorboard`) and shows the progress bars: over
the explanation batches, the deletion/insertion curves' clips and methods, and
the methods' threshold sweeps.
"""
import functools
import logging
from typing import Any, Callable, Dict, Optional

import jax
import ml_collections

from gla_jax import models
from gla_jax import parallel
from gla_jax import weights
from gla_jax.data import loader
from gla_jax.data import sources
from gla_jax.data import storage
from gla_jax.explain import comparison
from gla_jax.models import building
from gla_jax.outputs import comparison_report
from gla_jax.outputs import reports


def _progress() -> Callable[..., Any]:
  """`reports.progress`, shown by process 0 only (every process computes the same)."""
  return functools.partial(reports.progress, enabled=jax.process_index() == 0)


def gather_clips(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
                 variables: Dict[str, Any], mesh: Optional[jax.sharding.Mesh] = None
                 ) -> Dict[str, Any]:
  """Explains the clips of `config.eval.split`'s subset for `localize.max_clips` (0: all).

  Whole videos round-robin over the classes, chosen with `localize.seed`;
  padding rows (mask False) are left out. Each clip's frames keep their index
  in the video (the batches' 'frame_index'), for frame-mAP and video-mAP. Each
  batch is split over `mesh` (default: this process's devices), its rows padded
  to a multiple of them.

  Returns:
    `comparison.collect_clips`'s output.

  Raises:
    ValueError: the source has no ground-truth boxes, or no clips.
  """
  settings, split = config.localize, config.eval.split
  source = sources.create_source(config.data, split)
  if not source.has_boxes:
    raise ValueError(f'The {split!r} split of config.data.source={config.data.source!r} has no '
                     'ground-truth boxes, so localization cannot be scored: use the synthetic '
                     'source, or a folder with an annotations file (config.data.annotations).')
  max_clips, seed = int(settings.max_clips), int(settings.seed)
  planned = loader.eval_clips(source, config.data, max_clips=max_clips, seed=seed)
  wanted = len(planned)
  if wanted < 1:
    raise ValueError(f'The {split!r} split has no clips to evaluate.')
  batch_size = int(settings.batch_size)
  mesh = mesh or parallel.make_local_mesh()
  variables = parallel.replicate({key: variables[key] for key in ('params', 'batch_stats')},
                                 mesh)
  batches = loader.eval_batches(config.data, split, batch_size, max_clips=max_clips, seed=seed)
  try:
    return comparison.collect_clips(
        model, variables, (parallel.shard_local_batch(batch, mesh) for batch in batches),
        wanted, batch_size, config.data.mean, config.data.std, config.explain.pooling,
        config.explain.normalization, progress=_progress(),
        names=comparison.compared_names(config, model), own=comparison.own_upsampling(config),
        chunk_size=int(config.explain.get('chunk_size', 32)))
  finally:
    batches.close()


def run(config: ml_collections.ConfigDict, workdir: str,
        variables: Optional[Dict[str, Any]] = None,
        checkpoint: Optional[str] = None) -> Dict[str, Any]:
  """Compares every method's localization and writes `<workdir>/loc_eval/`.

  Args:
    config: the whole config (`localize`, `explain`, `data`, `model`, `eval.split`).
    workdir: where the weights are and the results go.
    variables: `{'params', 'batch_stats'}`; by default `weights.for_config`'s.
    checkpoint: weights to use instead of the workdir's (`--checkpoint`); the
      class names are the weights' where they carry them.

  Returns:
    `comparison.compare`'s result and 'files' (the paths of comparison.json,
    comparison.md, comparison.png and the pictures, which process 0 writes). The JSON file
    holds the same with NaN written as null.
  """
  model = building.create_model(config)
  weight_names = None
  if variables is None:
    found = weights.for_config(config, workdir, model, checkpoint=checkpoint)
    variables, weight_names = found.variables, found.class_names
  mesh = parallel.make_local_mesh()
  # On the devices once, not once per call.
  variables = parallel.replicate({key: variables[key] for key in ('params', 'batch_stats')},
                                 mesh)
  clips = gather_clips(config, model, variables, mesh)
  result = comparison.compare(config, model, variables, clips, progress=_progress())
  out_dir = storage.join(workdir, comparison_report.OUTPUT_DIR)
  if jax.process_index() == 0:
    names = weight_names or sources.class_names_or_indices(config.data,
                                                           int(config.model.num_classes))
    comparison_report.write(out_dir, config, clips, result, names,
                            tensorboard_workdir=workdir if config.train.tensorboard else None)
  else:
    shown = result['reported_clips'][:max(int(config.localize.num_pictures), 0)]
    result['files'] = dict(
        json=storage.join(out_dir, comparison_report.JSON_FILE),
        markdown=storage.join(out_dir, comparison_report.MARKDOWN_FILE),
        plot=storage.join(out_dir, comparison_report.PLOT_FILE),
        pictures=[storage.join(out_dir, f'clip_{index}.png') for index in shown])
  logging.info('Localization comparison of %d methods on %d clips: %s', len(result['order']),
               result['num_clips'], result['files']['markdown'])
  return result
