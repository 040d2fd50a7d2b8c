"""Which attention localizes best: every method on the same clips, against ground truth.

The methods (`method_names`), all explaining the model's predicted class (the
paper's rule): last-layer Grad-CAM (the baseline), Grad-CAM of each other
stage, the global-local aggregations of all stages (mean, max, product),
LayerCAM and Grad-CAM++ of all stages, and a gated model's attention gates.
They all come from one forward and backward pass per batch, each map exactly
as `explain.explain` makes it. `compare` chooses each method's box threshold
on the clips of held-out videos and reports those of the other videos (Choe
et al. 2020), with deletion/insertion curves (RISE); the protocol is in docs/design.md section 8.
Writing the table, JSON and pictures is `gla_jax.outputs.comparison_report`.

References:
  Yudistira, Kavitha, Kurita. "Weakly-Supervised Action Localization and Action
    Recognition using Global-Local Attention of 3D CNN", IJCV 2022.
  Choe et al. "Evaluating Weakly Supervised Object Localization Methods Right",
    CVPR 2020 (thresholds chosen on held-out data).
  Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018 (deletion and insertion).
  Jiang et al. "LayerCAM", IEEE TIP 2021; Chattopadhay et al. "Grad-CAM++",
    WACV 2018.
"""
import functools
import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gla_jax import models
from gla_jax.explain import attention
from gla_jax.explain import loc_metrics
from gla_jax.explain import perturbation
from gla_jax.models import input_normalization

BASELINE = f'gradcam:{models.STAGE_NAMES[-1]}'
AGGREGATIONS = ('mean', 'max', 'product')
GLOBAL_LOCAL = tuple(f'global-local:{how}' for how in AGGREGATIONS)
# Differences smaller than this (half the last printed digit) count as ties.
_TIE = 5e-4

# A progress-bar factory with the signature of `gla_jax.outputs.reports.progress`
# (total, desc, clips_per_item=0, unit='batch') -> a bar with update(n) and
# close(); None shows none.
Progress = Optional[Callable[..., Any]]


class _NoBar:
  """The bar of `progress=None`."""

  def update(self, n: int = 1) -> None:
    del n

  def close(self) -> None:
    pass


def _bar(progress: Progress, **kwargs) -> Any:
  return _NoBar() if progress is None else progress(**kwargs)


def method_names(model: models.ResNeXt3D) -> Tuple[str, ...]:
  """The compared methods of `model`, in table order (the baseline first)."""
  layers = models.stage_layer_names(model)                       # global (deep) first
  names = [f'gradcam:{layer}' for layer in layers]
  names += [*GLOBAL_LOCAL, 'layercam:mean', 'gradcam_pp:mean']
  if model.gated:
    names += [f'gate:{stage}' for stage in _gate_stages(model)] + ['gate:mean']
  return tuple(names)


def describe(name: str) -> str:
  """One line saying what a method of `method_names` is."""
  kind, _, detail = name.partition(':')
  if name == BASELINE:
    return 'Grad-CAM of the last layer only (global)'
  return {
      'gradcam': f'Grad-CAM of {detail} alone',
      'global-local': f'Grad-CAM of every stage, {detail} (global-local)',
      'layercam': f'LayerCAM of every stage, {detail}',
      'gradcam_pp': f'Grad-CAM++ of every stage, {detail}',
      'gate': 'mean of the attention gates' if detail == 'mean' else f'attention gate of {detail}',
  }[kind]


def _gate_stages(model: models.ResNeXt3D) -> Tuple[str, ...]:
  """A gated model's gated stages, global first as the layers."""
  return tuple(s for s in models.stage_layer_names(model) if model.gated and s in model.gate_stages)


# ----------------------------------------------------------------------------
# The maps of every method, and the classifier's probability.
# ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _compiled_method_maps(model: models.ResNeXt3D, pooling: str, normalization: str,
                          mean: Tuple[float, ...], std: Tuple[float, ...]):
  """The jitted `(variables, uint8 video) -> (maps, logits, target)` of `method_maps`."""
  # layer_map would take any other pooling for 'time'; normalize checks its own option.
  if pooling not in attention.POOLINGS:
    raise ValueError(f'Unknown pooling {pooling!r} (config.explain.pooling); choose one of '
                     f'{attention.POOLINGS}.')
  layers = models.stage_layer_names(model)
  gate_stages = _gate_stages(model)

  def method_maps_fn(variables, video):
    video = models.normalize_video(video, mean, std)
    logits, target, activations, gradients = attention.tap_gradients(model, variables, video)
    size = video.shape[1:4]

    def stage_maps(method):
      # Each stage's map exactly as explain.explain makes it, for one method.
      return jnp.stack([
          attention.normalize(attention.upsample(attention.layer_map(
              activations[name], gradients[name], method, pooling), size), normalization)
          for name in layers])                                        # [L, B, T, H, W]

    gradcam = stage_maps('gradcam')
    maps = {f'gradcam:{name}': layer_map for name, layer_map in zip(layers, gradcam)}
    maps.update({f'global-local:{how}': attention.aggregate_maps(gradcam, how)
                 for how in AGGREGATIONS})
    maps['layercam:mean'] = attention.aggregate_maps(stage_maps('layercam'), 'mean')
    maps['gradcam_pp:mean'] = attention.aggregate_maps(stage_maps('gradcam_pp'), 'mean')
    if gate_stages:
      # The gates' own maps, as Explanation.gate_maps has them.
      gates = jnp.stack([
          attention.minmax(attention.upsample(activations[f'gate_{stage}'], size))
          for stage in gate_stages])
      maps.update({f'gate:{stage}': gate for stage, gate in zip(gate_stages, gates)})
      maps['gate:mean'] = attention.aggregate_maps(gates, 'mean')
    return maps, logits, target

  return jax.jit(method_maps_fn)


def method_maps(model: models.ResNeXt3D, variables: Dict[str, Any], video: Any,
                mean: Sequence[float], std: Sequence[float], pooling: str = 'global',
                normalization: str = 'minmax'
                ) -> Tuple[Dict[str, jax.Array], jax.Array, jax.Array]:
  """Every method's maps of a batch of clips, from one forward and backward pass.

  Args:
    model: a `models.ResNeXt3D`.
    variables: `{'params', 'batch_stats'}`.
    video: uint8 [B, T, H, W, 3] clips (the loader's), normalised on the device
      with `mean` and `std` (`config.data`).
    pooling, normalization: `explain.explain`'s per-layer options.

  Returns:
    ({method (see `method_names`): [B, T, H, W] in [0, 1]}, logits [B, K],
    explained (argmax) class [B]). Compiled once per model, options and shape.
  """
  video = jnp.asarray(video)
  attention.check_clips(jax.ShapeDtypeStruct(video.shape, jnp.float32))   # Shape messages.
  input_normalization.check_uint8_clips(video, 'method_maps')
  constants = tuple(map(float, mean)), tuple(map(float, std))
  return _compiled_method_maps(model, pooling, normalization, *constants)(variables, video)


@functools.lru_cache(maxsize=8)
def _compiled_probability(model: models.ResNeXt3D):
  """The jitted `(variables, clips, target) -> softmax(logits)[:, target]`."""

  def probability(variables, clips, target):
    logits = model.apply(variables, clips).astype(jnp.float32)
    return jax.nn.softmax(logits, axis=-1)[:, target]
  return jax.jit(probability)


def target_probability(model: models.ResNeXt3D, variables: Dict[str, Any],
                       target: int) -> Callable[[np.ndarray], jax.Array]:
  """The deletion/insertion score: clips [N, T, H, W, 3] -> softmax probability of `target` [N].

  Jitted once per model and clip shape; the class is an argument, not a constant.
  """
  probability = _compiled_probability(model)
  variables = {key: variables[key] for key in ('params', 'batch_stats')}
  return lambda clips: probability(variables, clips, target)


# ----------------------------------------------------------------------------
# Clips.
# ----------------------------------------------------------------------------

def collect_clips(model: models.ResNeXt3D, variables: Dict[str, Any],
                  batches: Iterable[Mapping[str, Any]], wanted: int, batch_size: int,
                  mean: Sequence[float], std: Sequence[float], pooling: str = 'global',
                  normalization: str = 'minmax', progress: Progress = None) -> Dict[str, Any]:
  """Every method's maps of the first `wanted` clips (rows with `mask` True) of `batches`.

  Args:
    model, variables: the network and its `{'params', 'batch_stats'}`.
    batches: evaluation batches of `batch_size` clips with 'video', 'mask',
      'boxes', 'present', 'label', 'video_index' (padding rows, mask False,
      anywhere: the last batch's and an unreadable video's), e.g.
      `eval_batches` of a split with ground-truth boxes; not closed here.
    wanted: how many clips to take (>= 1).
    batch_size: the clips of each batch.
    mean, std: `config.data`'s, normalising the uint8 clips on the device.
    pooling, normalization: `explain.explain`'s per-layer options.
    progress: a progress-bar factory (see `Progress`).

  Returns:
    {'video' uint8 [N, T, S, S, 3], 'boxes' [N, T, 4], 'present' [N, T],
    'label', 'video_index', 'target' (explained class), 'probability' (of
    it) [N], 'maps' {method: [N, T, S, S]}}, numpy.
  """
  parts: Dict[str, List[np.ndarray]] = {}
  bar = _bar(progress, total=math.ceil(wanted / batch_size), desc='loc_eval explain',
             clips_per_item=batch_size)
  collected = 0
  try:
    for batch in batches:
      maps, logits, target = method_maps(model, variables, batch['video'], mean, std, pooling,
                                         normalization)
      rows = np.flatnonzero(np.asarray(batch['mask'], bool))[:wanted - collected]
      probability = np.asarray(jax.nn.softmax(logits, axis=-1))
      target = np.asarray(target)
      pieces = dict(video=batch['video'], boxes=batch['boxes'], present=batch['present'],
                    label=batch['label'], video_index=batch['video_index'], target=target,
                    probability=probability[np.arange(len(target)), target],
                    **{f'map/{name}': value for name, value in maps.items()})
      for key, value in pieces.items():
        parts.setdefault(key, []).append(np.asarray(value)[rows])
      collected += len(rows)
      bar.update(1)
      if collected >= wanted:
        break
  finally:
    bar.close()
  clips = {key: np.concatenate(value) for key, value in parts.items()}
  clips['maps'] = {key[len('map/'):]: clips.pop(key) for key in list(clips)
                   if key.startswith('map/')}
  return clips


def split_clips(video_index: Sequence[int], held_out_fraction: float, seed: int
                ) -> Tuple[np.ndarray, np.ndarray]:
  """Random (held-out, reported) clip indices, split by video; each part sorted and non-empty.

  All clips of a video fall on one side (a threshold chosen on a video's clips
  is not reported on other clips of the same video): `held_out_fraction` of
  the videos, chosen with `seed`, are held out.

  Args:
    video_index: int [N], the video of each clip.

  Raises:
    ValueError: fewer than 2 videos, or a fraction outside (0, 1).
  """
  if not 0 < held_out_fraction < 1:
    raise ValueError(f'config.localize.held_out_fraction={held_out_fraction}: use a fraction in '
                     '(0, 1); both the held-out and the reported part need clips.')
  video_index = np.asarray(video_index)
  videos = np.unique(video_index)
  if len(videos) < 2:
    raise ValueError(f'{len(video_index)} clip(s) of {len(videos)} video(s): the threshold is '
                     'chosen on held-out videos and reported on others, so at least 2 videos '
                     'are needed: raise config.localize.max_clips (0 = the whole split).')
  held = min(max(int(round(len(videos) * held_out_fraction)), 1), len(videos) - 1)
  held_videos = np.random.default_rng(seed).permutation(videos)[:held]
  in_held = np.isin(video_index, held_videos)
  return np.flatnonzero(in_held), np.flatnonzero(~in_held)


def perturbation_curves(model: models.ResNeXt3D, variables: Dict[str, Any],
                        clips: Dict[str, Any], indices: Sequence[int], steps: int,
                        batch_size: int, mean: Sequence[float], std: Sequence[float],
                        progress: Progress = None
                        ) -> Dict[str, List[Dict[str, perturbation.Curve]]]:
  """`perturbation.deletion_insertion` of every method on the clips `indices`.

  The uint8 clips are normalised on the device first ('zeros' = the mean colour).

  Returns:
    {method: one {'deletion', 'insertion'} per index, in order}.
  """
  curves: Dict[str, List[Dict[str, perturbation.Curve]]] = {name: [] for name in clips['maps']}
  bar = _bar(progress, total=len(indices) * len(curves), desc='loc_eval curves', unit='map')
  try:
    for index in indices:
      score_fn = target_probability(model, variables, int(clips['target'][index]))
      video = np.asarray(models.normalize_video(clips['video'][index], mean, std))
      for name, maps in clips['maps'].items():
        curves[name].append(perturbation.deletion_insertion(
            score_fn, video, maps[index], steps=steps, batch_size=batch_size))
        bar.update(1)
  finally:
    bar.close()
  return curves


# ----------------------------------------------------------------------------
# The verdict.
# ----------------------------------------------------------------------------

def metric_columns(iou_threshold: float) -> Tuple[Tuple[str, str, bool], ...]:
  """(summary key, column title, higher is better) of the table's metrics."""
  return ((f'loc_acc@{iou_threshold:g}', f'loc acc@{iou_threshold:g}', True),
          ('mean_iou', 'mean IoU', True),
          ('temporal_iou', 'temporal IoU', True),
          ('pointing_game', 'pointing game', True),
          ('deletion_auc', 'deletion AUC (lower better)', False),
          ('insertion_auc', 'insertion AUC (higher better)', True))


def _best_held_out(entry: Dict[str, Any]) -> float:
  accuracies = [a for a in entry['held_out_loc_acc'].values() if not math.isnan(a)]
  return max(accuracies) if accuracies else -math.inf


def verdict(methods: Dict[str, Dict[str, Any]], iou_threshold: float) -> Tuple[str, str]:
  """The best global-local fusion and a paragraph comparing it with last-layer Grad-CAM.

  The fusion is the one with the best localization accuracy on the held-out
  clips (the first of `AGGREGATIONS` on ties); the comparison is on the
  reported clips, metric by metric, and every number in it comes from
  `methods` (`compare`'s entries: threshold_sweep's and 'constant_maps').

  Returns:
    (method name, paragraph).
  """
  candidates = [name for name in GLOBAL_LOCAL if name in methods]
  best = max(candidates, key=lambda name: _best_held_out(methods[name]))
  ours, theirs = methods[best]['summary'], methods[BASELINE]['summary']
  better, worse, tied, missing = [], [], [], []
  primary = None
  for key, title, higher in metric_columns(iou_threshold):
    a, b = ours[key], theirs[key]
    if math.isnan(a) or math.isnan(b):
      missing.append(title)
      continue
    gain = (a - b) if higher else (b - a)
    text = f'{title} {a:.3f} vs {b:.3f} ({a - b:+.3f})'
    if key.startswith('loc_acc'):
      primary = (gain, text)
    else:
      (tied if abs(a - b) < _TIE else better if gain > 0 else worse).append(text)
  how = best.partition(':')[2]
  sentences = [
      f'The best global-local aggregation on the held-out clips is the {how} of the stage maps '
      f'(`{best}`, box threshold {methods[best]["threshold"]:g}; last-layer Grad-CAM '
      f'`{BASELINE}`: {methods[BASELINE]["threshold"]:g}).']
  if primary is None:
    sentences.append('Localization accuracy is undefined (no reported frame has a ground-truth '
                     'box), so neither beats the other on it.')
  elif abs(primary[0]) < _TIE:
    sentences.append(f'It ties with last-layer Grad-CAM on localization accuracy: {primary[1]}.')
  else:
    sentences.append(f'It {"beats" if primary[0] > 0 else "does not beat"} last-layer Grad-CAM '
                     f'on localization accuracy: {primary[1]}.')
  details = [f'{label} {"; ".join(items)}'
             for label, items in (('better on', better), ('worse on', worse), ('equal on', tied))
             if items]
  if details:
    sentences.append('On the other metrics it is ' + ', '.join(details) + '.')
  if missing:
    sentences.append(f'Not measured: {", ".join(missing)}.')
  for name, who in ((BASELINE, 'Last-layer Grad-CAM'), (best, 'The global-local map')):
    constant = methods[name].get('constant_maps', 0.0)
    if constant > 0:
      sentences.append(f'{who} is constant, so it gives no box, on {constant:.0%} of the clips '
                       '(a layer with a single position at this clip size, or no gradient).')
  sentences.append(f'({ours["num_clips"]} reported clips, {ours["num_present_frames"]} frames '
                   'with a ground-truth box.)')
  return best, ' '.join(sentences)


# ----------------------------------------------------------------------------
# The whole comparison.
# ----------------------------------------------------------------------------

def compare(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
            variables: Dict[str, Any], clips: Dict[str, Any],
            progress: Progress = None) -> Dict[str, Any]:
  """Every method's thresholds and metrics on `clips` (`collect_clips` of `model`).

  Args:
    config: the whole config (`localize`, `explain`, `eval.split`, `data.mean`, `data.std`).
    model, variables: the network the clips were explained with.
    clips: `collect_clips`'s output.
    progress: a progress-bar factory (see `Progress`) for the curves and the sweeps.

  Returns:
    {'methods': {method: {'description', 'constant_maps' (the fraction of all
    evaluated clips whose map is constant: no box), 'threshold',
    'held_out_loc_acc' {threshold: accuracy}, 'summary'
    (`loc_metrics.summarize` of the reported clips: loc_acc@<iou>, mean_iou,
    temporal_iou, pointing_game, deletion_auc, insertion_auc, num_clips,
    num_present_frames; NaN where undefined)}},
    'order', 'baseline', 'best_global_local', 'verdict', 'split',
    'num_clips', 'held_out_clips', 'reported_clips' (indices into the
    evaluated clips), 'curve_clips', 'clip_accuracy', 'clips' (video index,
    label, explained class, part), 'settings'}.
  """
  settings = config.localize
  order = method_names(model)
  num_clips = len(clips['label'])
  held_out, reported = split_clips(clips['video_index'], float(settings.held_out_fraction),
                                   int(settings.seed))

  steps = int(settings.deletion_steps)
  curve_count = min(int(settings.curve_clips) or len(reported), len(reported)) if steps > 0 else 0
  curves = (perturbation_curves(model, variables, clips, reported[:curve_count], steps,
                                int(settings.batch_size), config.data.mean, config.data.std,
                                progress) if curve_count else {})

  def ground_truth(indices):
    return dict(boxes=clips['boxes'][indices], present=clips['present'][indices])

  iou_threshold = float(settings.iou_threshold)
  thresholds = tuple(float(t) for t in settings.thresholds)
  methods, bar = {}, _bar(progress, total=len(order), desc='loc_eval thresholds', unit='method')
  for name in order:
    maps = clips['maps'][name]
    # Reported clips past the first curve_count have no curves (None).
    method_curves = (list(curves[name]) + [None] * (len(reported) - curve_count)
                     if curves else None)
    entry = loc_metrics.threshold_sweep(
        {name: maps[held_out]}, ground_truth(held_out), {name: maps[reported]},
        ground_truth(reported), thresholds=thresholds, iou_threshold=iou_threshold,
        relative_to=settings.relative_to, policy=settings.policy,
        temporal_threshold=float(settings.temporal_threshold),
        min_segment_frames=int(settings.min_segment_frames),
        max_gap_frames=int(settings.max_gap_frames),
        tolerance=float(settings.pointing_tolerance), curves=method_curves)[name]
    # A constant map (all zeros after min-max) gives no box: say how often, e.g. layer4
    # has a single position on small clips.
    constant = maps.max(axis=(1, 2, 3)) <= maps.min(axis=(1, 2, 3))
    methods[name] = dict(description=describe(name), constant_maps=float(constant.mean()),
                         **entry)
    bar.update(1)
  bar.close()
  best, text = verdict(methods, iou_threshold)

  parts = np.full(num_clips, 'reported', object)
  parts[held_out] = 'held_out'
  result = dict(
      methods=methods, order=list(order), baseline=BASELINE, best_global_local=best,
      verdict=text, split=config.eval.split, num_clips=num_clips,
      held_out_clips=held_out.tolist(), reported_clips=reported.tolist(),
      curve_clips=curve_count,
      clip_accuracy=float(np.mean(clips['target'] == clips['label'])),
      clips=[dict(video_index=int(clips['video_index'][k]), label=int(clips['label'][k]),
                  target=int(clips['target'][k]), part=str(parts[k])) for k in range(num_clips)],
      settings=dict(settings.to_dict(), pooling=config.explain.pooling,
                    normalization=config.explain.normalization))
  return result
