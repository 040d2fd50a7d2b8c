"""Localization ground truth on disk: the project's annotation file, and UCF101-24.

`load`/`save`/`validate` read, write and check the project's JSON annotation file
(classes; per video its path, label, frame count, frame size, segments and one
box per frame, x1/y1 exclusive), which `synthetic.export_video_folder` writes and
the 'folder' source reads. `from_ucf101_24` converts Singh et al.'s `pyannot.pkl`
(per video `numf` and tubes with 0-based frames and 1-based MATLAB boxes): the box
of a frame is the union of the tubes present in it. The formats in full:
docs/design.md (Data). Paths may be local or URIs (`gla_jax.data.storage`).

References:
  Soomro, Zamir, Shah. "UCF101: A Dataset of 101 Human Actions Classes From
    Videos in The Wild", CRCV-TR-12-01, 2012 (UCF101-24 boxes from THUMOS 2013).
  Singh et al. "Online Real-time Multiple Spatiotemporal Action Localisation and
    Prediction", ICCV 2017; corrected annotations
    github.com/gurkirt/corrected-UCF101-Annots (pyannot.pkl).
"""
import json
import math
import numbers
import pickle
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from gla_jax.data import storage

# UCF101 videos are 320 x 240; pyannot.pkl does not store the size.
UCF101_HEIGHT = 240
UCF101_WIDTH = 320

# Problems listed in one validation error before the rest are counted.
_MAX_LISTED = 20


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))


def _video_problems(video: Any, index: int, num_classes: int) -> List[str]:
  """Everything wrong with one video entry, each naming the video and the fix."""
  if not isinstance(video, Mapping):
    return [f'videos[{index}] is a {type(video).__name__}, not an object with "path", "label", '
            '"num_frames".']
  name = f'video {video.get("path", f"videos[{index}]")!r}'
  problems = []
  for key in ('path', 'label', 'num_frames'):
    if key not in video:
      problems.append(f'{name}: missing "{key}"; every video needs path, label and num_frames.')
  if problems:
    return problems
  if not isinstance(video['path'], str) or not video['path']:
    problems.append(f'{name}: "path" must be a non-empty string relative to the folder.')
  if not _is_int(video['label']) or not 0 <= video['label'] < num_classes:
    problems.append(f'{name}: label {video["label"]!r} is not an index into the '
                    f'{num_classes} classes; use 0..{num_classes - 1}.')
  num_frames = video['num_frames']
  if not _is_int(num_frames) or num_frames < 1:
    return problems + [f'{name}: num_frames {num_frames!r} must be an integer >= 1.']
  size = {}
  for key in ('height', 'width'):
    if key in video:
      if _is_int(video[key]) and video[key] >= 1:
        size[key] = video[key]
      else:
        problems.append(f'{name}: {key} {video[key]!r} must be an integer >= 1 (pixels).')

  segments = video.get('segments')
  if segments is not None:
    if not isinstance(segments, (list, tuple)):
      problems.append(f'{name}: "segments" must be a list of [start, end_exclusive] pairs.')
    else:
      for k, segment in enumerate(segments):
        if (not isinstance(segment, (list, tuple)) or len(segment) != 2
            or not all(_is_int(v) for v in segment)):
          problems.append(f'{name}: segment {k} is {segment!r}; write [start, end_exclusive] '
                          'integer frames.')
        elif not 0 <= segment[0] < segment[1] <= num_frames:
          problems.append(f'{name}: segment {k} {list(segment)} is out of range; need '
                          f'0 <= start < end <= num_frames ({num_frames}), end exclusive.')

  boxes = video.get('boxes')
  if boxes is not None:
    if not isinstance(boxes, (list, tuple)):
      return problems + [f'{name}: "boxes" must be a list with one [x0, y0, x1, y1] or null per '
                         'frame.']
    if len(boxes) != num_frames:
      problems.append(f'{name}: {len(boxes)} boxes for num_frames={num_frames}; give exactly '
                      'one entry per frame (null where the action is not visible).')
    height, width = size.get('height'), size.get('width')
    for t, box in enumerate(boxes):
      if box is None:
        continue
      if (not isinstance(box, (list, tuple)) or len(box) != 4
          or not all(_is_number(v) for v in box)):
        problems.append(f'{name}, frame {t}: box {box!r} must be [x0, y0, x1, y1] (4 finite '
                        'numbers) or null.')
        continue
      x0, y0, x1, y1 = box
      if not (x0 < x1 and y0 < y1):
        problems.append(f'{name}, frame {t}: box {list(box)} is empty or inverted; need '
                        'x0 < x1 and y0 < y1 (corners, x1/y1 exclusive; not x, y, w, h), or '
                        'null for no box.')
      elif (x0 < 0 or y0 < 0 or (width is not None and x1 > width)
            or (height is not None and y1 > height)):
        frame = f'{width} x {height}' if width and height else 'the frame'
        problems.append(f'{name}, frame {t}: box {list(box)} lies outside {frame} '
                        f'(width x height); clip it to [0, width] x [0, height] (x1/y1 '
                        'exclusive) or correct the video\'s "width"/"height".')
  return problems


def validate(annotations: Any) -> None:
  """Checks an annotation dict (format in the module docstring).

  Raises:
    ValueError: listing every problem found (up to 20, then a count), each
      naming the video, the frame or segment, and the fix.
  """
  if not isinstance(annotations, Mapping):
    raise ValueError(f'Annotations must be an object with "classes" and "videos", got a '
                     f'{type(annotations).__name__}.')
  problems = []
  classes = annotations.get('classes')
  if (not isinstance(classes, (list, tuple)) or not classes
      or not all(isinstance(c, str) and c for c in classes)):
    problems.append('"classes" must be a non-empty list of class names (label i is classes[i]).')
    classes = []
  elif len(set(classes)) != len(classes):
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    problems.append(f'"classes" repeats {duplicates}; each class name must appear once.')
  videos = annotations.get('videos')
  if not isinstance(videos, (list, tuple)):
    problems.append('"videos" must be a list of video entries.')
    videos = []
  seen = set()
  for index, video in enumerate(videos):
    problems.extend(_video_problems(video, index, len(classes)))
    path = video.get('path') if isinstance(video, Mapping) else None
    if isinstance(path, str):
      if path in seen:
        problems.append(f'video {path!r} appears more than once; merge its entries.')
      seen.add(path)
  if problems:
    listed = '\n  '.join(problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    raise ValueError(f'Invalid annotations ({len(problems)} problem(s)):\n  {listed}'
                     + (f'\n  ... and {more} more.' if more > 0 else ''))


def _plain(value: Any) -> Any:
  """numpy scalars and arrays -> Python numbers and lists, for json."""
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return _plain(value.tolist())
  if isinstance(value, np.generic):
    return value.item()
  return value


def load(path: str, check: bool = True) -> Dict[str, Any]:
  """Reads an annotation file; validates it unless `check` is False."""
  text = storage.read_text(path)
  try:
    annotations = json.loads(text)
  except json.JSONDecodeError as error:
    raise ValueError(f'{path!r} is not valid JSON ({error}); annotation files are JSON '
                     'objects with "classes" and "videos".') from None
  if check:
    try:
      validate(annotations)
    except ValueError as error:
      raise ValueError(f'{path}: {error}') from None
  return annotations


def save(annotations: Mapping[str, Any], path: str) -> None:
  """Validates and writes an annotation dict as JSON (numpy values become plain numbers)."""
  annotations = _plain(annotations)
  validate(annotations)
  storage.write_text(path, json.dumps(annotations))   # Its folder is created if missing.


def ground_truth(video: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
  """Per-frame arrays of one video entry, as `synthetic` and the metrics use them.

  Returns:
    boxes float32 [num_frames, 4] (x0, y0, x1, y1), all -1 where null or
    where the entry has no boxes; present bool [num_frames].
  """
  num_frames = int(video['num_frames'])
  boxes = np.full((num_frames, 4), -1, np.float32)
  for t, box in enumerate(video.get('boxes') or []):
    if box is not None and t < num_frames:
      boxes[t] = box
  return boxes, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


# ----------------------------------------------------------------------------
# UCF101-24.
# ----------------------------------------------------------------------------

def load_ucf101_24_pickle(path: str) -> Dict[str, Any]:
  """Loads `pyannot.pkl` (written by Python 2: numpy arrays need latin1).

  Unpickling runs code from the file: only load files from a source you trust.
  """
  with storage.path(path).open('rb') as f:
    return pickle.load(f, encoding='latin1')


def _merge_segments(ranges: List[Tuple[int, int]]) -> List[List[int]]:
  merged: List[List[int]] = []
  for start, end in sorted(ranges):
    if merged and start <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], end)
    else:
      merged.append([start, end])
  return merged


def from_ucf101_24(annots: Mapping[str, Any], class_names: Sequence[str],
                   videos: Optional[Sequence[str]] = None, path_format: str = '{name}.avi',
                   height: int = UCF101_HEIGHT, width: int = UCF101_WIDTH,
                   frame_offset: int = 0, box_offset: float = 1.0,
                   clip_boxes: bool = True) -> Dict[str, Any]:
  """Converts the UCF101-24 `pyannot.pkl` dict to the annotation format.

  Args:
    annots: {video_name: {'numf', 'annotations': [{'label', 'sf', 'ef',
      'boxes'}], optional 'label'}} (see the module docstring).
    class_names: the class names, in the order of the labels (24 for
      UCF101-24).
    videos: video names to convert (e.g. a test list), in that order; None:
      all, sorted.
    path_format: the entry's "path" from the video name, e.g.
      '{name}.avi' gives 'Basketball/v_Basketball_g01_c01.avi'.
    height, width: the frame size of the videos (UCF101: 240 x 320).
    frame_offset: subtracted from 'sf' and 'ef' (0 for pyannot.pkl, whose
      frames are 0-based with 'ef' exclusive; 1 for releases with 1-based
      frames).
    box_offset: subtracted from x and y (1 for pyannot.pkl's MATLAB pixel
      coordinates; 0 for 0-based ones). w and h are pixel counts, so the
      exclusive corner is x0 + w.
    clip_boxes: clip boxes to the frame: the original annotations overshoot
      the border by a few pixels in places. False keeps them, and the
      validation of the result then raises, naming each one.

  Returns:
    The annotation dict (validated).

  Raises:
    ValueError: a tube lies outside its video's frames, a tube's box count is
      not ef - sf, labels disagree or are missing, or a video name is unknown.
  """
  class_names = list(class_names)
  names = sorted(annots) if videos is None else list(videos)
  entries = []
  for name in names:
    if name not in annots:
      raise ValueError(f'Video {name!r} is not in the UCF101-24 annotations; check the name '
                       'format (e.g. "Basketball/v_Basketball_g01_c01").')
    record = annots[name]
    num_frames = int(record['numf'])
    tubes = record.get('annotations', [])
    labels = {int(tube['label']) for tube in tubes}
    if 'label' in record:
      labels.add(int(record['label']))
    if len(labels) != 1:
      raise ValueError(f'Video {name!r} has labels {sorted(labels)} (video and tubes); '
                       'expected exactly one class per video.')
    label = labels.pop()
    boxes = np.full((num_frames, 4), np.nan, np.float64)
    ranges = []
    for k, tube in enumerate(tubes):
      start, end = int(tube['sf']) - frame_offset, int(tube['ef']) - frame_offset
      tube_boxes = np.asarray(tube['boxes'], np.float64).reshape(-1, 4)
      if not 0 <= start < end <= num_frames:
        raise ValueError(f'Video {name!r}, tube {k}: frames [{start}, {end}) after '
                         f'frame_offset={frame_offset} are outside [0, {num_frames}); check '
                         'frame_offset (0 for pyannot.pkl, 1 for 1-based releases) and numf.')
      if len(tube_boxes) != end - start:
        raise ValueError(f'Video {name!r}, tube {k}: {len(tube_boxes)} boxes for frames '
                         f'[{start}, {end}); a tube needs one (x, y, w, h) per frame.')
      corners = np.concatenate([tube_boxes[:, :2] - box_offset,
                                tube_boxes[:, :2] - box_offset + tube_boxes[:, 2:]], axis=1)
      span = boxes[start:end]
      # Union with the tubes seen before; NaN marks frames without a box yet.
      span[:, :2] = np.fmin(span[:, :2], corners[:, :2])
      span[:, 2:] = np.fmax(span[:, 2:], corners[:, 2:])
      ranges.append((start, end))
    if clip_boxes:
      boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
      boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    frame_boxes = []
    for box in boxes:
      if np.isnan(box).any() or box[2] <= box[0] or box[3] <= box[1]:
        # No tube, or a box clipped away entirely (it lay outside the frame).
        frame_boxes.append(None)
      else:
        frame_boxes.append([int(v) if float(v).is_integer() else float(v) for v in box])
    entries.append(dict(path=path_format.format(name=name), label=label,
                        num_frames=num_frames, height=int(height), width=int(width),
                        segments=_merge_segments(ranges), boxes=frame_boxes))
  annotations = dict(classes=class_names, videos=entries)
  validate(annotations)
  return annotations
