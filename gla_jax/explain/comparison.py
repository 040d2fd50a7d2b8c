"""Which attention localizes best: every method on the same clips, against ground truth.

The methods and their maps are `gla_jax.explain.compared_methods` (re-exported
here): last-layer Grad-CAM (the baseline), Grad-CAM of each other stage, the
global-local aggregations, the other gradient methods of all stages, the masked
methods of the last layer and a gated model's gates, each once per up-sampling
of `config.localize.upsamplings`, all explaining the model's predicted class
(the paper's rule). `compare` chooses each method's box threshold on the clips
of held-out videos and reports those of the other videos (Choe et al. 2020),
with deletion/insertion curves (RISE) and the detection metrics frame-mAP and
video-mAP (`detection_metrics`: the boxes at the chosen threshold, labelled
with the explained class); the protocol is in docs/design.md section 8.
Writing the table, JSON and pictures is `gla_jax.outputs.comparison_report`.

References:
  Yudistira, Kavitha, Kurita. "Weakly-Supervised Action Localization and Action
    Recognition using Global-Local Attention of 3D CNN", IJCV 2022.
  Choe et al. "Evaluating Weakly Supervised Object Localization Methods Right",
    CVPR 2020 (thresholds chosen on held-out data).
  Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018 (deletion and insertion).
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
from gla_jax.explain import detection_map
from gla_jax.explain import faithfulness
from gla_jax.explain import loc_metrics
from gla_jax.explain import localize
from gla_jax.explain import perturbation
from gla_jax.explain.compared_methods import (BASELINE, GLOBAL_LOCAL, describe,
                                              method_maps, method_names, split_name,
                                              upsampling_order, upsampling_suffix)

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


def own_upsampling(config: ml_collections.ConfigDict) -> str:
  """`config.explain.upsampling`: the up-sampling whose method names carry no suffix."""
  return str(config.explain.get('upsampling', attention.UPSAMPLINGS[0]))


def compared_names(config: ml_collections.ConfigDict, model: models.ResNeXt3D
                   ) -> Tuple[str, ...]:
  """The table's methods: `config.localize.methods` x `config.localize.upsamplings`."""
  settings = config.localize
  return method_names(model, tuple(settings.methods), tuple(settings.upsamplings),
                      own_upsampling(config))


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
                  normalization: str = 'minmax', progress: Progress = None,
                  names: Optional[Sequence[str]] = None, own: str = 'half_pixel',
                  chunk_size: int = 32) -> Dict[str, Any]:
  """The maps of methods `names` of the first `wanted` clips (rows with `mask` True) of `batches`.

  Args:
    model, variables: the network and its `{'params', 'batch_stats'}`.
    batches: evaluation batches of `batch_size` clips with 'video', 'mask',
      'boxes', 'present', 'label', 'video_index' and 'frame_index' (int
      [B, T], each frame's index in its video; padding rows, mask False,
      anywhere: the last batch's and an unreadable video's), e.g.
      `eval_batches` of a split with ground-truth boxes with the frame indices
      added (`localization_eval.gather_clips`); not closed here.
    wanted: how many clips to take (>= 1).
    batch_size: the clips of each batch.
    mean, std: `config.data`'s, normalising the uint8 clips on the device.
    pooling, normalization: `explain.explain`'s per-layer options.
    progress: a progress-bar factory (see `Progress`).
    names, own, chunk_size: `method_maps`'s `names`, `own_upsampling` and
      `chunk_size` (`compared_names(config, model)`, `own_upsampling(config)`,
      `config.explain.chunk_size`).

  Returns:
    {'video' uint8 [N, T, S, S, 3], 'boxes' [N, T, 4], 'present' [N, T],
    'frame_index' [N, T], 'label', 'video_index', 'target' (explained class),
    'probability' (of it) [N], 'probabilities' (softmax) float32 [N, C],
    'maps' {method: [N, T, S, S]}}, numpy.
  """
  parts: Dict[str, List[np.ndarray]] = {}
  bar = _bar(progress, total=math.ceil(wanted / batch_size), desc='loc_eval explain',
             clips_per_item=batch_size)
  collected = 0
  try:
    for batch in batches:
      maps, logits, target = method_maps(model, variables, batch['video'], mean, std, pooling,
                                         normalization, names=names, own_upsampling=own,
                                         chunk_size=chunk_size)
      rows = np.flatnonzero(np.asarray(batch['mask'], bool))[:wanted - collected]
      probability = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
      target = np.asarray(target)
      pieces = dict(video=batch['video'], boxes=batch['boxes'], present=batch['present'],
                    frame_index=batch['frame_index'], label=batch['label'],
                    video_index=batch['video_index'], target=target,
                    probability=probability[np.arange(len(target)), target],
                    probabilities=probability,
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

def metric_columns(settings: Mapping[str, Any]) -> Tuple[Tuple[str, str, bool], ...]:
  """(summary key, column title, higher is better) of the table's metrics.

  `settings` is `config.localize` (or a result's 'settings'): 'iou_threshold'
  and, where given, 'frame_map_threshold' and 'video_map_thresholds'.
  """
  iou_threshold = float(settings['iou_threshold'])
  columns = [(f'loc_acc@{iou_threshold:g}', f'loc acc@{iou_threshold:g}', True),
             ('mean_iou', 'mean IoU', True),
             ('temporal_iou', 'temporal IoU', True),
             ('pointing_game', 'pointing game', True),
             ('deletion_auc', 'deletion AUC (lower better)', False),
             ('insertion_auc', 'insertion AUC (higher better)', True)]
  if int(settings.get('road_clips', 0) or 0) > 0:
    columns += [('road_morf', 'ROAD MoRF (lower better)', False),
                ('road_lerf', 'ROAD LeRF (higher better)', True),
                ('average_drop', 'average drop % (lower better)', False),
                ('increase_in_confidence', 'increase in confidence %', True)]
  if settings.get('frame_map_threshold') is not None:
    threshold = float(settings['frame_map_threshold'])
    columns.append((f'frame_map@{threshold:g}', f'frame-mAP@{threshold:g}', True))
  for threshold in settings.get('video_map_thresholds') or ():
    columns.append((f'video_map@{float(threshold):g}', f'video-mAP@{float(threshold):g}', True))
  return tuple(columns)


def _best_held_out(entry: Dict[str, Any]) -> float:
  accuracies = [a for a in entry['held_out_loc_acc'].values() if not math.isnan(a)]
  return max(accuracies) if accuracies else -math.inf


def verdict(methods: Dict[str, Dict[str, Any]], settings: Mapping[str, Any],
            suffix: str = '') -> Tuple[str, str]:
  """The best global-local fusion and a paragraph comparing it with last-layer Grad-CAM.

  The fusion is the one with the best localization accuracy on the held-out
  clips (the first of `AGGREGATIONS` on ties); the comparison is on the
  reported clips, metric by metric, and every number in it comes from
  `methods` (`compare`'s entries: threshold_sweep's and 'constant_maps'), on
  the metrics of `metric_columns(settings)`. `suffix` ('' or '@<upsampling>',
  see `upsampling_suffix`) picks the fusions and the baseline of one up-sampling.

  Returns:
    (method name, paragraph).
  """
  candidates = [name + suffix for name in GLOBAL_LOCAL if name + suffix in methods]
  baseline = BASELINE + suffix
  best = max(candidates, key=lambda name: _best_held_out(methods[name]))
  ours, theirs = methods[best]['summary'], methods[baseline]['summary']
  better, worse, tied, missing = [], [], [], []
  primary = None
  for key, title, higher in metric_columns(settings):
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
  how = best.partition('@')[0].partition(':')[2]
  opening = f'With `{suffix[1:]}` up-sampling, the best' if suffix else 'The best'
  sentences = [
      f'{opening} global-local aggregation on the held-out clips is the {how} of the stage maps '
      f'(`{best}`, box threshold {methods[best]["threshold"]:g}; last-layer Grad-CAM '
      f'`{baseline}`: {methods[baseline]["threshold"]:g}).']
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
  for name, who in ((baseline, 'Last-layer Grad-CAM'), (best, 'The global-local map')):
    constant = methods[name].get('constant_maps', 0.0)
    if constant > 0:
      sentences.append(f'{who} is constant, so it gives no box, on {constant:.0%} of the clips '
                       '(a layer with a single position at this clip size, or no gradient).')
  sentences.append(f'({ours["num_clips"]} reported clips, {ours["num_present_frames"]} frames '
                   'with a ground-truth box.)')
  return best, ' '.join(sentences)


def upsampling_sentence(methods: Dict[str, Dict[str, Any]], iou_threshold: float, own: str,
                        other: str) -> str:
  """Which of two up-samplings localizes better, over the methods computed with both.

  Every method `m` of the `own` up-sampling is paired with `m@<other>`; the
  sentence gives their mean reported localization accuracy and how many
  methods each up-sampling wins (pairs with an undefined accuracy are left out).
  """
  key = f'loc_acc@{iou_threshold:g}'
  pairs = [(methods[name]['summary'][key], methods[name + '@' + other]['summary'][key])
           for name in methods if '@' not in name and name + '@' + other in methods]
  pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
  if not pairs:
    return (f'Up-sampling: `{own}` and `{other}` are not compared (no method has a '
            'localization accuracy with both).')
  ours, theirs = (float(np.mean(side)) for side in zip(*pairs))
  wins = sum(b - a >= _TIE for a, b in pairs)
  losses = sum(a - b >= _TIE for a, b in pairs)
  if abs(theirs - ours) < _TIE:
    lead = f'`{other}` and `{own}` up-sampling localize equally well'
  else:
    lead = (f'`{other}` up-sampling localizes {"better" if theirs > ours else "worse"} than '
            f'`{own}`')
  return (f'Up-sampling: {lead}: mean loc acc@{iou_threshold:g} over the {len(pairs)} methods '
          f'{theirs:.3f} vs {ours:.3f} ({theirs - ours:+.3f}); `{other}` is better for {wins} '
          f'of them, worse for {losses}.')


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
    num_present_frames, and `detection_metrics`' frame_map@<t> and
    video_map@<t>; NaN where undefined), 'class_ap' (those mAPs' AP per
    class: {key: {label: AP}})},
    plus 'method' (the registry name) and 'upsampling' of each},
    'order', 'baseline', 'best_global_local' (of the own up-sampling),
    'best_global_local_by_upsampling' {upsampling: method}, 'upsamplings'
    (the compared ones, the own first), 'own_upsampling' (`explain.upsampling`:
    its names have no '@' suffix), 'verdict' (a paragraph per up-sampling and,
    with several, a sentence on which localizes better), 'split',
    'num_clips', 'held_out_clips', 'reported_clips' (indices into the
    evaluated clips), 'curve_clips', 'clip_accuracy', 'clips' (video index,
    label, explained class, part), 'settings'}.
  """
  settings = config.localize
  order = compared_names(config, model)
  own = own_upsampling(config)
  upsamplings = upsampling_order(tuple(settings.upsamplings), own)
  num_clips = len(clips['label'])
  held_out, reported = loc_metrics.split_clips(clips['video_index'], float(settings.held_out_fraction),
                                   int(settings.seed))

  steps = int(settings.deletion_steps)
  curve_count = min(int(settings.curve_clips) or len(reported), len(reported)) if steps > 0 else 0
  curves = (perturbation_curves(model, variables, clips, reported[:curve_count], steps,
                                int(settings.batch_size), config.data.mean, config.data.std,
                                progress) if curve_count else {})

  road_count = min(int(settings.road_clips), len(reported))
  road = (faithfulness.method_scores(
      lambda index: target_probability(model, variables, int(clips['target'][index])), clips,
      reported[:road_count], config.data.mean, config.data.std, int(settings.batch_size),
      _bar(progress, total=road_count * len(clips['maps']), desc='loc_eval ROAD', unit='map'))
          if road_count > 0 else {})

  def ground_truth(indices):
    return dict(boxes=clips['boxes'][indices], present=clips['present'][indices])

  iou_threshold = float(settings.iou_threshold)
  thresholds = tuple(float(t) for t in settings.thresholds)
  frame_map_threshold = float(settings.frame_map_threshold)
  video_map_thresholds = tuple(float(t) for t in settings.video_map_thresholds)
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
    # Frame-mAP and video-mAP of the reported clips, from the boxes at the chosen threshold.
    boxes = localize.frame_boxes(maps[reported], entry['threshold'], settings.relative_to,
                                 settings.policy)
    maps_summary, class_ap = detection_map.detection_metrics(clips, reported, boxes, frame_map_threshold,
                                               video_map_thresholds)
    entry['summary'].update(maps_summary, **road.get(name, {}))
    method, upsampling = split_name(name, own)
    methods[name] = dict(description=describe(name), method=method, upsampling=upsampling,
                         constant_maps=float(constant.mean()), class_ap=class_ap, **entry)
    bar.update(1)
  bar.close()
  paragraphs, best_by_upsampling = [], {}
  for upsampling in upsamplings:
    best_by_upsampling[upsampling], text = verdict(methods, settings,
                                                   upsampling_suffix(upsampling, own))
    paragraphs.append(text)
  paragraphs += [upsampling_sentence(methods, iou_threshold, own, other)
                 for other in upsamplings[1:]]

  parts = np.full(num_clips, 'reported', object)
  parts[held_out] = 'held_out'
  result = dict(
      methods=methods, order=list(order), baseline=BASELINE,
      best_global_local=best_by_upsampling[own],
      best_global_local_by_upsampling=best_by_upsampling, upsamplings=list(upsamplings),
      own_upsampling=own, verdict=' '.join(paragraphs), split=config.eval.split,
      num_clips=num_clips,
      held_out_clips=held_out.tolist(), reported_clips=reported.tolist(),
      curve_clips=curve_count, road_clips=road_count,
      clip_accuracy=float(np.mean(clips['target'] == clips['label'])),
      clips=[dict(video_index=int(clips['video_index'][k]), label=int(clips['label'][k]),
                  target=int(clips['target'][k]), part=str(parts[k])) for k in range(num_clips)],
      settings=dict(settings.to_dict(), pooling=config.explain.pooling,
                    normalization=config.explain.normalization, upsampling=own))
  return result
