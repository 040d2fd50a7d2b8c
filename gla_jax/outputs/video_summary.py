"""What `--mode=explain` and `--mode=localize` print: each video's answer, a table of several.

Works on the JSON records of `VideoExplanation.summary()` (with `output`, the
video's folder, added; a video that could not be read has `error` instead),
which `summary.jsonl` also holds, one line per video.
"""
import json
from typing import Any, Dict, List, Sequence

from gla_jax.data import storage

SUMMARY_FILE = 'summary.jsonl'


def segments_text(record: Dict[str, Any]) -> str:
  """'0.96-1.20 s (frames 24-29), ...', 'none', or '' without localization."""
  if record.get('segments') is None:
    return ''
  if not record['segments']:
    return 'none'
  return ', '.join(f'{s["start_s"]:.2f}-{s["end_s"]:.2f} s (frames {s["start_frame"]}-'
                   f'{s["end_frame"] - 1})' for s in record['segments'])


def title(record: Dict[str, Any], localized: bool) -> str:
  """'Localization of walk.avi: move_left (p=0.91)'."""
  kind = 'Localization' if localized else 'Explanation'
  if 'error' in record:
    return f'{kind} of {record["video"]} failed: {record["error"]}'
  return f'{kind} of {record["video"]}: {record["class_name"]} (p={record["probability"]:.2f})'


def lines(record: Dict[str, Any]) -> List[str]:
  """The lines under `title`: the top classes, the segments (seconds), the output folder."""
  if 'error' in record:
    return []
  out = ['top 3:    ' + ', '.join(f'{top["class_name"]} {top["probability"]:.2f}'
                                  for top in record['top'])]
  if record.get('video_score') == 'max':   # Each class's best clip: they need not sum to 1.
    out[0] += '  (each class\'s most confident clip)'
  if record.get('segments') is not None:
    assumed = '' if record.get('fps') else '  (frame rate unknown: 25 fps assumed)'
    out.append(f'segments: {segments_text(record)}{assumed}')
  out.append(f'outputs:  {record["output"]}')
  return out


def table(records: Sequence[Dict[str, Any]]) -> List[str]:
  """One aligned line per video: name, class, probability, segments, folder (a header first)."""
  rows = [('video', 'class', 'p', 'segments (s)', 'outputs')]
  for record in records:
    if 'error' in record:
      rows.append((str(record['video']), 'FAILED', '', '', record['error'][:60]))
      continue
    segments = record.get('segments')
    times = ('' if segments is None else
             ', '.join(f'{s["start_s"]:.2f}-{s["end_s"]:.2f}' for s in segments) or 'none')
    rows.append((storage.path(record['video'] or 'array').name, record['class_name'],
                 f'{record["probability"]:.2f}', times, record['output']))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
  return ['  '.join(cell.ljust(width) for cell, width in zip(row, widths)) + '  ' + row[-1]
          for row in rows]


def write_jsonl(path: str, records: Sequence[Dict[str, Any]]) -> str:
  """`records` as JSON lines at `path` (local or a URI); returns `path`."""
  storage.write_text(path, ''.join(json.dumps(record) + '\n' for record in records))
  return path
