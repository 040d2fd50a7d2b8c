"""The files of an explained (and localized) video, from `explain.long_video.explain_video`.

`write_explanation` writes what every explained video gets (`attention.npy`,
`layers/`, `panel_<k>.png`, `clips.json`); `write_localization` what a
localized one adds (`localization.json`, the overlay video and GIF). The list
of files and their fields is `gla_jax.video_explanation.explain_video_file`'s.
The folder may be a URI (`gla_jax.data.storage`); the overlay video and GIF,
which PyAV/OpenCV and Pillow write to local files only, then go through a
local temporary file.
"""
import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np

from gla_jax.data import storage
from gla_jax.data import video_io
from gla_jax.explain import long_video
from gla_jax.outputs import pictures

# Container of the overlay video per codec; OpenCV picks the muxer by extension.
_CODEC_EXTENSIONS = {'mp4v': '.mp4', 'avc1': '.mp4', 'MJPG': '.avi', 'XVID': '.avi',
                     'FFV1': '.mkv'}


def output_dir(workdir: str, video_path: str, with_localization: bool) -> str:
  """`<workdir>/localize/<name>/` with localization, else `<workdir>/explain/<name>/`."""
  name = os.path.splitext(os.path.basename(video_path))[0]
  return storage.join(workdir, 'localize' if with_localization else 'explain', name)


def _save_array(path: str, array: np.ndarray) -> None:
  """`np.save` to a local file or a URI (the .npy bytes written in one go)."""
  buffer = io.BytesIO()
  np.save(buffer, array)
  storage.path(path).write_bytes(buffer.getvalue())


def _panel_clips(num_clips: int, max_panels: int) -> List[int]:
  """Up to max_panels clips spread over the video (always the first)."""
  if max_panels < 1:
    return []
  return sorted(set(np.linspace(0, num_clips - 1, min(max_panels, num_clips)).round()
                    .astype(int).tolist()))


def _row_label(key: str) -> str:
  kind, _, name = key.partition('/')
  return {'layer': name, 'gate': f'gate\n{name}'}.get(kind, key)


def _box_list(box: np.ndarray) -> Optional[List[float]]:
  return None if np.any(box < 0) else [round(float(v), 2) for v in box]


def video_class_record(explanation: long_video.VideoExplanation,
                       names: Sequence[str]) -> Dict[str, Any]:
  """The video's class as the JSON files give it."""
  scores = explanation.scores
  return dict(target=int(scores.argmax()), class_name=names[scores.argmax()],
              probability=round(float(scores.max()), 4), video_score=explanation.video_score,
              weight_by_video_class=explanation.weight_by_video_class)


def clip_records(explanation: long_video.VideoExplanation,
                 names: Sequence[str]) -> List[Dict[str, Any]]:
  """Per clip: first and last frame, explained class, probabilities, has_signal."""
  clip_frames, num_frames = explanation.clip_frames, explanation.num_frames
  probabilities = explanation.probabilities
  targets = explanation.clips['target'].astype(int)
  return [dict(start_frame=int(start), end_frame=int(min(start + clip_frames, num_frames)),
               target=int(targets[k]), class_name=names[targets[k]],
               probability=round(float(probabilities[k, targets[k]]), 4),
               video_class_probability=round(float(explanation.video_class_probability[k]), 4),
               has_signal=bool(explanation.clips['has_signal'][k]))
          for k, start in enumerate(explanation.starts)]


def write_explanation(out_dir: str, config: ml_collections.ConfigDict, video_path: str,
                      crops: np.ndarray, region: Tuple[int, int, int],
                      explanation: long_video.VideoExplanation, names: Sequence[str],
                      max_panels: int = 4) -> List[Dict[str, Any]]:
  """Writes `attention.npy`, `layers/*.npy`, `panel_<k>.png` and `clips.json` into `out_dir`.

  Args:
    out_dir: the folder (created if missing).
    config: the whole config (`data.crop_size`, `explain`).
    video_path: the explained video file.
    crops: uint8 [F, S, S, 3] the frames as the model saw them, for drawing.
    region: (x0, y0, side) of the model's crop in the original frames.
    explanation: `long_video.explain_video`'s output.
    names: the class names, indexed by class.
    max_panels: panels of clips spread over the video.

  Returns:
    `clip_records` (the clips of clips.json).
  """
  stitched, result = explanation.stitched, explanation.clips
  starts, indices, clip_frames = explanation.starts, explanation.indices, explanation.clip_frames
  storage.make_dirs(storage.join(out_dir, 'layers'))
  _save_array(storage.join(out_dir, 'attention.npy'), stitched['attention'])
  for key, volume in stitched.items():
    kind, _, layer = key.partition('/')
    if kind in ('layer', 'gate'):
      filename = layer if kind == 'layer' else f'gate_{layer}'
      _save_array(storage.join(out_dir, 'layers', filename + '.npy'), volume)

  targets = result['target'].astype(int)
  probabilities = explanation.probabilities
  clip_info = clip_records(explanation, names)
  loc = explanation.localization
  for k in _panel_clips(len(starts), max_panels):
    maps = {_row_label(key): result[key][k] for key in long_video.map_keys(result)}
    boxes = None if loc is None else {'frames': loc.boxes[indices[k]]}
    title = (f'frames {starts[k]}-{starts[k] + clip_frames - 1}: {names[targets[k]]} '
             f'p={probabilities[k, targets[k]]:.2f}')
    pictures.write_image(storage.join(out_dir, f'panel_{k}.png'),
                         pictures.panel(crops[indices[k]], maps, title=title, boxes=boxes))
  storage.write_text(storage.join(out_dir, 'clips.json'), json.dumps(dict(
      video=storage.absolute(video_path), num_frames=explanation.num_frames,
      crop_size=int(config.data.crop_size), crop_region=dict(zip(('x0', 'y0', 'side'), region)),
      clip_frames=clip_frames, clip_stride=explanation.stride,
      video_class=video_class_record(explanation, names),
      clips=clip_info, explain=config.explain.to_dict()), indent=1))
  return clip_info


def write_localization(out_dir: str, config: ml_collections.ConfigDict, video_path: str,
                       frames: np.ndarray, region: Tuple[int, int, int],
                       explanation: long_video.VideoExplanation, names: Sequence[str],
                       clip_info: List[Dict[str, Any]], fps: float) -> None:
  """Writes `localization.json`, the overlay video and (`config.localize.write_gif`) its GIF.

  Args:
    out_dir: the folder `write_explanation` wrote.
    config: the whole config (`data.crop_size`, `localize`).
    video_path: the explained video file.
    frames: uint8 [F, H, W, 3] the original frames.
    region: (x0, y0, side) of the model's crop in them.
    explanation: `long_video.explain_video`'s output, with localization.
    names: the class names, indexed by class.
    clip_info: `write_explanation`'s return.
    fps: the video's frame rate (segment times, overlay video).
  """
  loc, frame_boxes, in_segment = (explanation.localization, explanation.frame_boxes,
                                  explanation.in_segment)
  num_frames, height, width = frames.shape[:3]
  targets = explanation.clips['target'].astype(int)
  nearest = explanation.nearest
  per_frame = [dict(frame=t, box=_box_list(frame_boxes[t]), box_crop=_box_list(loc.boxes[t]),
                    in_segment=bool(in_segment[t]), mass=round(float(loc.frame_mass[t]), 4),
                    class_name=names[targets[nearest[t]]])
               for t in range(num_frames)]
  storage.write_text(storage.join(out_dir, 'localization.json'), json.dumps(dict(
      video=storage.absolute(video_path), num_frames=num_frames, height=height, width=width,
      fps=fps, crop_region=dict(zip(('x0', 'y0', 'side'), region)),
      crop_size=int(config.data.crop_size),
      settings={key: config.localize[key] for key in (
          'threshold', 'relative_to', 'policy', 'temporal_threshold', 'min_segment_frames',
          'max_gap_frames')},
      video_class=video_class_record(explanation, names), clips=clip_info,
      segments=[dict(start_frame=int(s), end_frame=int(e),
                     start_s=round(s / fps, 3), end_s=round(e / fps, 3))
                for s, e in loc.segments],
      frames=per_frame), indent=1))

  drawn = pictures.overlay_region(frames, explanation.stitched['attention'], region)
  shown = np.where(in_segment[:, None], frame_boxes, -1)             # boxes inside segments
  drawn = pictures.draw_boxes(drawn, shown, pictures.PRED_COLOR,
                              thickness=max(1, round(min(height, width) / 160)))
  drawn = pictures.label_frames(drawn, [info['class_name'] for info in per_frame])
  codec = str(config.localize.video_codec)
  overlay = storage.join(out_dir, 'overlay' + _CODEC_EXTENSIONS.get(codec, '.avi'))
  with storage.local_file_for_writing(overlay) as local:   # PyAV/OpenCV write local files.
    video_io.write_video(local, pictures.pad_to_even(drawn), fps=fps, codec=codec)
  if config.localize.write_gif:
    pictures.write_gif(storage.join(out_dir, 'overlay.gif'), drawn, fps=fps)
