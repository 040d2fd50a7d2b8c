"""The files of the localization comparison: `<workdir>/loc_eval/comparison.{json,md}` and panels.

`comparison.json` holds every number of `explain.comparison.compare` (NaN
written as null), `comparison.md` the table (best value per column in bold)
and the verdict, and `clip_<k>.png` every method's map of a reported clip with
its predicted boxes in white and the ground truth in green.
"""
import json
import math
from typing import Any, Dict, List, Sequence

import ml_collections
import numpy as np

from gla_jax.data import storage
from gla_jax.explain import comparison
from gla_jax.explain import localize
from gla_jax.outputs import pictures

OUTPUT_DIR = 'loc_eval'
JSON_FILE = 'comparison.json'
MARKDOWN_FILE = 'comparison.md'


def _cell(value: float, best: bool) -> str:
  if isinstance(value, float) and math.isnan(value):
    return 'n/a'
  return f'**{value:.3f}**' if best else f'{value:.3f}'


def markdown(result: Dict[str, Any]) -> str:
  """`comparison.md`: the setting, the table (best value per column in bold), the verdict."""
  methods, iou_threshold = result['methods'], result['settings']['iou_threshold']
  columns = comparison.metric_columns(iou_threshold)
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
       f'({result["settings"]["deletion_steps"]} steps). Every method explains the predicted '
       f'class (clip accuracy {result["clip_accuracy"]:.3f}).'),
      '',
      '| method | what | threshold | ' + ' | '.join(title for _, title, _ in columns) + ' |',
      '|---|---|---|' + '---|' * len(columns),
  ]
  for name in result['order']:
    entry = methods[name]
    cells = [_cell(entry['summary'][key], entry['summary'][key] == best_values.get(key))
             for key, _, _ in columns]
    lines.append(f'| `{name}` | {entry["description"]} | {entry["threshold"]:g} | '
                 + ' | '.join(cells) + ' |')
  lines += ['', f'**Verdict.** {result["verdict"]}', '']
  return '\n'.join(lines)


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
                   indices: Sequence[int], names: Sequence[str]) -> List[str]:
  """One panel per clip of `indices`: each method's map with its boxes, and the ground truth.

  `names` are the class names, indexed by class.
  """
  settings = config.localize
  paths = []
  for index in indices:
    frames = clips['video'][index]                  # uint8 RGB, as the loader gives them
    rows, boxes = {}, {}
    for name in order:
      row = name.replace(':', '\n')         # Two short lines fit the panel's label column.
      rows[row] = clips['maps'][name][index]
      boxes[row] = localize.frame_boxes(rows[row], methods[name]['threshold'],
                                        settings.relative_to, settings.policy)
    target, label = int(clips['target'][index]), int(clips['label'][index])
    title = (f'clip {index}: {names[label]}, explained {names[target]} '
             f'p={clips["probability"][index]:.2f}; white predicted, green truth')
    image = pictures.panel(frames, rows, title=title, boxes=boxes,
                           gt_boxes=clips['boxes'][index])
    path = storage.join(out_dir, f'clip_{index}.png')
    pictures.write_image(path, image)
    paths.append(path)
  return paths


def write(out_dir: str, config: ml_collections.ConfigDict, clips: Dict[str, Any],
          result: Dict[str, Any], names: Sequence[str]) -> Dict[str, Any]:
  """Writes the panels, `comparison.md` and `comparison.json` into `out_dir`.

  Args:
    out_dir: the folder (created if missing), `<workdir>/OUTPUT_DIR`.
    config: the whole config (`localize`).
    clips: `comparison.collect_clips`'s output.
    result: `comparison.compare`'s output; receives 'files' (the paths of
      the JSON, the Markdown and the pictures), which the JSON includes.
    names: the class names, indexed by class.

  Returns:
    result['files'].
  """
  storage.make_dirs(out_dir)
  shown = result['reported_clips'][:max(int(config.localize.num_pictures), 0)]
  picture_paths = write_pictures(out_dir, config, clips, result['methods'], result['order'],
                                 shown, names)
  result['files'] = dict(json=storage.join(out_dir, JSON_FILE),
                         markdown=storage.join(out_dir, MARKDOWN_FILE), pictures=picture_paths)
  storage.write_text(result['files']['markdown'], markdown(result))
  storage.write_text(result['files']['json'], json.dumps(_json_ready(result), indent=1))
  return result['files']
