"""The files of the localization comparison: `<workdir>/loc_eval/comparison.{json,md}` and panels.

`comparison.json` holds every number of `explain.comparison.compare` (NaN
written as null; besides each method's numbers its 'method' and 'upsampling',
and the result's 'upsamplings', 'own_upsampling' and
'best_global_local_by_upsampling'), `comparison.md` the table (one row per
method and up-sampling, best value per column in bold; frame-mAP and video-mAP
beside the localization metrics) and the verdict, and
`clip_<k>.png` every method's map of a reported clip with its predicted boxes
in white and the ground truth in green. `comparison.png` plots each method's
held-out accuracy against the box threshold (dashed: the up-samplings other than
`explain.upsampling`) and the reported metrics (matplotlib), taller with more
methods. With `tensorboard_workdir`, the pictures also go
to `<workdir>/tensorboard` as images (`reports.write_images`).
"""
import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np

from gla_jax.data import storage
from gla_jax.explain import comparison
from gla_jax.explain import localize
from gla_jax.outputs import pictures
from gla_jax.outputs import reports

OUTPUT_DIR = 'loc_eval'
JSON_FILE = 'comparison.json'
MARKDOWN_FILE = 'comparison.md'
PLOT_FILE = 'comparison.png'
PLOT_SIZE = (1300, 560)    # comparison.png: width, least height in pixels
_PLOT_ROW = 22             # comparison.png: height per method beyond 10 (bars, legend)


def _cell(value: float, best: bool) -> str:
  if isinstance(value, float) and math.isnan(value):
    return 'n/a'
  return f'**{value:.3f}**' if best else f'{value:.3f}'


def markdown(result: Dict[str, Any]) -> str:
  """`comparison.md`: the setting, the table (best value per column in bold), the verdict.

  Each row names its up-sampling (`compare`'s entries' 'upsampling'; empty
  for a result without one).
  """
  methods = result['methods']
  columns = comparison.metric_columns(result['settings'])
  best_values = {}
  for key, _, higher in columns:
    values = [m['summary'][key] for m in methods.values() if not math.isnan(m['summary'][key])]
    if values:
      best_values[key] = max(values) if higher else min(values)
  lines = [
      '# Localization: attention methods compared',
      '',
      (f'{result["num_clips"]} clips of the `{result["split"]}` split: box thresholds chosen on '
       f'{len(result["held_out_clips"])} held-out clips, metrics on the other '
       f'{len(result["reported_clips"])}; deletion/insertion on {result["curve_clips"]} of them '
       f'({result["settings"]["deletion_steps"]} steps)'
       + (f', ROAD and average drop on {result["road_clips"]}' if result.get('road_clips') else '')
       + f'. Every method explains the predicted '
       f'class (clip accuracy {result["clip_accuracy"]:.3f}).'
       + _detection_note(result['settings']) + _upsampling_note(result)),
      '',
      '| method | up-sampling | what | threshold | '
      + ' | '.join(title for _, title, _ in columns) + ' |',
      '|---|---|---|---|' + '---|' * len(columns),
  ]
  for name in result['order']:
    entry = methods[name]
    cells = [_cell(entry['summary'][key], entry['summary'][key] == best_values.get(key))
             for key, _, _ in columns]
    lines.append(f'| `{name}` | {entry.get("upsampling", "")} | {entry["description"]} | '
                 f'{entry["threshold"]:g} | ' + ' | '.join(cells) + ' |')
  lines += ['', f'**Verdict.** {result["verdict"]}', '']
  return '\n'.join(lines)


def _detection_note(settings: Dict[str, Any]) -> str:
  """The sentence on frame-mAP and video-mAP, '' for a result without them."""
  if settings.get('frame_map_threshold') is None:
    return ''
  return (' Frame-mAP: a detection per frame with a box, labelled with the explained class and '
          "scored with the clip's probability of it; video-mAP: one tube per video from its "
          'clips\' boxes, labelled and scored with the highest mean class probability over its '
          'clips (VOC AP per class, over the reported videos).')


def _upsampling_note(result: Dict[str, Any]) -> str:
  """The sentence on the up-samplings, '' for a result of one (or none named)."""
  upsamplings = result.get('upsamplings', [])
  if len(upsamplings) < 2:
    return ''
  others = ', '.join(f'`{u}`' for u in upsamplings[1:])
  return (f' Every method is up-sampled to the clip with `{upsamplings[0]}` '
          f'(config.explain.upsampling; names without suffix) and with {others} '
          '(names `<method>@<upsampling>`).')


def plot_size(count: int) -> Tuple[int, int]:
  """comparison.png's (width, height) for `count` methods."""
  width, height = PLOT_SIZE
  return width, height + _PLOT_ROW * max(count - 10, 0)


def _json_ready(value: Any) -> Any:
  """Plain JSON: NaN becomes null, numpy scalars and arrays become Python values."""
  if isinstance(value, dict):
    return {str(k): _json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_ready(v) for v in value]
  if isinstance(value, np.ndarray):
    return _json_ready(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_pictures(out_dir: str, config: ml_collections.ConfigDict, clips: Dict[str, Any],
                   methods: Dict[str, Dict[str, Any]], order: Sequence[str],
                   indices: Sequence[int], names: Sequence[str],
                   images: Optional[Dict[str, np.ndarray]] = None) -> List[str]:
  """One panel per clip of `indices`: each method's map with its boxes, and the ground truth.

  `names` are the class names, indexed by class; `images`, if given, receives
  each panel by its file name without '.png'.
  """
  settings = config.localize
  paths = []
  for index in indices:
    frames = clips['video'][index]                  # uint8 RGB, as the loader gives them
    rows, boxes = {}, {}
    for name in order:
      # Short lines fit the panel's label column.
      row = name.replace(':', '\n').replace('@', '\n@')
      rows[row] = clips['maps'][name][index]
      boxes[row] = localize.frame_boxes(rows[row], methods[name]['threshold'],
                                        settings.relative_to, settings.policy)
    target, label = int(clips['target'][index]), int(clips['label'][index])
    title = (f'clip {index}: {names[label]}, explained {names[target]} '
             f'p={clips["probability"][index]:.2f}; white predicted, green truth')
    image = pictures.panel(frames, rows, title=title, boxes=boxes,
                           gt_boxes=clips['boxes'][index], colormap=settings.colormap)
    path = storage.join(out_dir, f'clip_{index}.png')
    pictures.write_image(path, image)
    paths.append(path)
    if images is not None:
      images[f'clip_{index}'] = image
  return paths


def plot(result: Dict[str, Any]) -> np.ndarray:
  """`comparison.png` as uint8 RGB [H, W, 3]: thresholds (held-out) and metrics (reported).

  Left: each method's localization accuracy on the held-out clips against the
  box threshold, its chosen threshold marked; right: the reported clips'
  localization accuracy and mean IoU per method. One legend below the panels.
  """
  methods, order = result['methods'], result['order']
  iou_threshold = result['settings']['iou_threshold']
  fig, canvas = pictures.plot_figure(plot_size(len(order)))
  sweep, bars = fig.subplots(1, 2)
  colors = {}                     # One colour per method, one line style per up-sampling.
  for name in order:
    accuracy = methods[name].get('held_out_loc_acc', {})
    thresholds = sorted(float(t) for t in accuracy)
    values = [accuracy.get(t, accuracy.get(str(t))) for t in thresholds]
    method = name.partition('@')[0]
    style = dict(color=colors[method]) if method in colors else {}
    [line] = sweep.plot(thresholds, values, marker='.', label=name,
                        linestyle='--' if '@' in name else '-', **style)
    colors.setdefault(method, line.get_color())
    chosen = float(methods[name]['threshold'])
    if chosen in thresholds:
      sweep.plot([chosen], [values[thresholds.index(chosen)]], 'o', color=line.get_color(),
                 markersize=8, markerfacecolor='none')
  sweep.set(title='held-out clips: choosing the box threshold (circled)',
            xlabel='box threshold (fraction of the maximum)',
            ylabel=f'localization accuracy (IoU >= {iou_threshold:g})')
  sweep.grid(True, color='0.9')
  positions = np.arange(len(order))
  for offset, (key, label) in ((-0.2, (f'loc_acc@{iou_threshold:g}', 'localization accuracy')),
                               (0.2, ('mean_iou', 'mean IoU'))):
    values = [methods[name]['summary'].get(key, math.nan) for name in order]
    bars.barh(positions + offset, np.nan_to_num(values), height=0.4, label=label)
  bars.set_yticks(positions, order)
  bars.invert_yaxis()                  # The table's order, top to bottom.
  bars.set(title=f'reported clips ({len(result["reported_clips"])})', xlim=(0, 1))
  bars.grid(True, axis='x', color='0.9')
  bars.legend(loc='upper center', bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
  sweep.legend(loc='upper center', bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False,
               fontsize='small')
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write(out_dir: str, config: ml_collections.ConfigDict, clips: Dict[str, Any],
          result: Dict[str, Any], names: Sequence[str],
          tensorboard_workdir: Optional[str] = None) -> Dict[str, Any]:
  """Writes the panels, `comparison.png`, `comparison.md` and `comparison.json` into `out_dir`.

  Args:
    out_dir: the folder (created if missing), `<workdir>/OUTPUT_DIR`.
    config: the whole config (`localize`).
    clips: `comparison.collect_clips`'s output.
    result: `comparison.compare`'s output; receives 'files' (the paths of
      the JSON, the Markdown, the plot and the pictures), which the JSON includes.
    names: the class names, indexed by class.
    tensorboard_workdir: a workdir whose `tensorboard` folder receives the
      plot and the panels as images (None: none).

  Returns:
    result['files'].
  """
  storage.make_dirs(out_dir)
  shown = result['reported_clips'][:max(int(config.localize.num_pictures), 0)]
  panels = {}
  picture_paths = write_pictures(out_dir, config, clips, result['methods'], result['order'],
                                 shown, names, panels)
  chart = plot(result)
  result['files'] = dict(json=storage.join(out_dir, JSON_FILE),
                         markdown=storage.join(out_dir, MARKDOWN_FILE),
                         plot=storage.join(out_dir, PLOT_FILE), pictures=picture_paths)
  pictures.write_image(result['files']['plot'], chart)
  storage.write_text(result['files']['markdown'], markdown(result))
  storage.write_text(result['files']['json'], json.dumps(_json_ready(result), indent=1))
  if tensorboard_workdir is not None:
    images = {'comparison': chart, **panels}
    reports.write_images(tensorboard_workdir, {f'{OUTPUT_DIR}/{tag}': image
                                               for tag, image in images.items()})
  return result['files']
