"""The files of an explained (and localized) video, from `explain.long_video.explain_video`.

`write_explanation` writes what every explained video gets (`attention.npy`,
`layers/`, `panel_<k>.png`, `clips.json`); `write_localization` what a
localized one adds (`localization.json`, the overlay video and GIF). The list
of files and their fields is `gla_jax.video_explanation.VideoExplanation.save`'s.
`clip_panel` and `overlay_frames` draw a panel and the overlay frames,
`write_overlay` writes them as a video or GIF by the file's suffix.
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
_CODEC_EXTENSIONS = {'mp4v': '.mp4', 'avc1': '.mp4', 'h264': '.mp4', 'H264': '.mp4',
                     'MJPG': '.avi', 'XVID': '.avi', 'FFV1': '.mkv'}
# The codec of an overlay file by suffix, where the config's codec is for another container.
_SUFFIX_CODECS = {'.mp4': 'mp4v', '.avi': 'MJPG', '.mkv': 'FFV1'}
OVERLAY_SUFFIXES = tuple(_SUFFIX_CODECS) + ('.gif',)


def video_name(video_path: str) -> str:
  """The name of a video's output folder: its file name without the extension.

  A folder of frames keeps its whole name (`v_walk/` -> `v_walk`).
  """
  base = os.path.basename(str(video_path).rstrip('/\\'))
  stem, extension = os.path.splitext(base)
  return stem if extension and not storage.is_dir(video_path) else base


def output_dir(workdir: str, video_path: str, with_localization: bool) -> str:
  """`<workdir>/localize/<name>/` with localization, else `<workdir>/explain/<name>/`."""
  return storage.join(workdir, 'localize' if with_localization else 'explain',
                      video_name(video_path))


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


def map_file_name(key: str) -> str:
  """The file name (no extension) of a stitched map: `layer/layer1` -> layer1, `gate/x` -> gate_x."""
  kind, _, name = key.partition('/')
  return {'layer': name, 'gate': f'gate_{name}'}.get(kind, key)


def _row_label(key: str) -> str:
  kind, _, name = key.partition('/')
  return {'layer': name, 'gate': f'gate\n{name}'}.get(kind, key)


def _box_list(box: np.ndarray) -> Optional[List[float]]:
  return None if np.any(box < 0) else [round(float(v), 2) for v in box]


def video_class_record(explanation: long_video.SlidingExplanation,
                       names: Sequence[str]) -> Dict[str, Any]:
  """The video's class as the JSON files give it."""
  scores = explanation.scores
  return dict(target=int(scores.argmax()), class_name=names[scores.argmax()],
              probability=round(float(scores.max()), 4), video_score=explanation.video_score,
              weight_by_video_class=explanation.weight_by_video_class)


def clip_records(explanation: long_video.SlidingExplanation,
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


def _source(video_path: Optional[str]) -> Optional[str]:
  return None if video_path is None else storage.absolute(video_path)


def clip_panel(explanation: long_video.SlidingExplanation, crops: np.ndarray,
               names: Sequence[str], clip: int,
               colormap: str = pictures.DEFAULT_COLORMAP) -> np.ndarray:
  """The panel of clip `clip` (uint8 RGB): its frames, the attention, each layer, the gates.

  Args:
    explanation: `long_video.explain_video`'s output.
    crops: uint8 [F, S, S, 3] the frames as the model saw them.
    names: the class names, indexed by class.
    clip: the clip's index (0 <= clip < the number of clips).
    colormap: the heat maps' colour map (`config.localize.colormap`).
  """
  result, starts = explanation.clips, explanation.starts
  if not 0 <= clip < len(starts):
    raise IndexError(f'clip={clip}: the video has {len(starts)} clips (0..{len(starts) - 1}).')
  target = int(result['target'][clip])
  maps = {_row_label(key): result[key][clip] for key in long_video.map_keys(result)}
  loc = explanation.localization
  boxes = None if loc is None else {'frames': loc.boxes[explanation.indices[clip]]}
  title = (f'frames {starts[clip]}-{starts[clip] + explanation.clip_frames - 1}: '
           f'{names[target]} p={explanation.probabilities[clip, target]:.2f}')
  return pictures.panel(crops[explanation.indices[clip]], maps, title=title, boxes=boxes,
                        colormap=colormap)


def write_explanation(out_dir: str, config: ml_collections.ConfigDict,
                      video_path: Optional[str], crops: np.ndarray,
                      region: Tuple[int, int, int],
                      explanation: long_video.SlidingExplanation, names: Sequence[str],
                      max_panels: int = 4) -> List[Dict[str, Any]]:
  """Writes `attention.npy`, `layers/*.npy`, `panel_<k>.png` and `clips.json` into `out_dir`.

  Args:
    out_dir: the folder (created if missing).
    config: the whole config (`data.crop_size`, `explain`).
    video_path: the explained video (file or folder of frames), None for an array.
    crops: uint8 [F, S, S, 3] the frames as the model saw them, for drawing.
    region: (x0, y0, side) of the model's crop in the original frames.
    explanation: `long_video.explain_video`'s output.
    names: the class names, indexed by class.
    max_panels: panels of clips spread over the video.

  Returns:
    `clip_records` (the clips of clips.json).
  """
  stitched = explanation.stitched
  storage.make_dirs(storage.join(out_dir, 'layers'))
  _save_array(storage.join(out_dir, 'attention.npy'), stitched['attention'])
  for key, volume in stitched.items():
    if key != 'attention':
      _save_array(storage.join(out_dir, 'layers', map_file_name(key) + '.npy'), volume)

  clip_info = clip_records(explanation, names)
  for k in _panel_clips(len(explanation.starts), max_panels):
    pictures.write_image(storage.join(out_dir, f'panel_{k}.png'),
                         clip_panel(explanation, crops, names, k,
                                    str(config.localize.colormap)))
  storage.write_text(storage.join(out_dir, 'clips.json'), json.dumps(dict(
      video=_source(video_path), num_frames=explanation.num_frames,
      crop_size=int(config.data.crop_size), crop_region=dict(zip(('x0', 'y0', 'side'), region)),
      clip_frames=explanation.clip_frames, clip_stride=explanation.stride,
      video_class=video_class_record(explanation, names),
      clips=clip_info, explain=config.explain.to_dict()), indent=1))
  return clip_info


def frame_class_names(explanation: long_video.SlidingExplanation,
                      names: Sequence[str]) -> List[str]:
  """Per frame: the class its nearest clip explained."""
  targets = explanation.clips['target'].astype(int)
  return [names[targets[k]] for k in explanation.nearest]


def overlay_frames(frames: np.ndarray, region: Tuple[int, int, int],
                   explanation: long_video.SlidingExplanation,
                   names: Sequence[str], colormap: str = pictures.DEFAULT_COLORMAP
                   ) -> np.ndarray:
  """The original frames with the attention on the model's crop, the boxes and the class.

  The boxes are drawn on the frames inside a segment (none without
  localization); each frame is labelled with its nearest clip's class; the
  heat map is in `colormap` (`config.localize.colormap`).
  Returns uint8 [F, H, W, 3], the frames' size.
  """
  height, width = frames.shape[1:3]
  drawn = pictures.overlay_region(frames, explanation.stitched['attention'], region,
                                  colormap=colormap)
  if explanation.localization is not None:
    shown = np.where(explanation.in_segment[:, None], explanation.frame_boxes, -1)
    drawn = pictures.draw_boxes(drawn, shown, pictures.PRED_COLOR,
                                thickness=max(1, round(min(height, width) / 160)))
  return pictures.label_frames(drawn, frame_class_names(explanation, names))


def overlay_codec(path: str, codec: str) -> str:
  """The FourCC for an overlay file: `codec` unless it is known for another container.

  So `config.localize.video_codec='MJPG'` writes a `.mp4` overlay as mp4v,
  and a codec not listed here is tried as it is.
  """
  suffix = os.path.splitext(str(path))[1].lower()
  if suffix not in OVERLAY_SUFFIXES or suffix == '.gif':
    raise ValueError(f'Overlay file {path!r}: the suffix picks the format; use one of '
                     f'{", ".join(OVERLAY_SUFFIXES)}.')
  return codec if _CODEC_EXTENSIONS.get(codec, suffix) == suffix else _SUFFIX_CODECS[suffix]


def write_overlay(path: str, drawn: np.ndarray, fps: float, codec: str = 'mp4v') -> str:
  """Writes overlay frames as a GIF (`.gif`) or a video (`.mp4`, `.avi`, `.mkv`); returns `path`.

  One output frame per input frame; a video of odd width or height is padded
  by one repeated pixel row or column (`pictures.pad_to_even`). `codec` is
  used where its container is the suffix's (`overlay_codec`).
  """
  if str(path).lower().endswith('.gif'):
    pictures.write_gif(path, drawn, fps=fps)
    return path
  codec = overlay_codec(path, codec)
  with storage.local_file_for_writing(path) as local:   # PyAV/OpenCV write local files.
    video_io.write_video(local, pictures.pad_to_even(drawn), fps=fps, codec=codec)
  return path


def segment_records(segments: Sequence[Tuple[int, int]], fps: float) -> List[Dict[str, Any]]:
  """The segments as JSON: first frame, end frame (exclusive), and both in seconds."""
  return [dict(start_frame=int(start), end_frame=int(end), start_s=round(start / fps, 3),
               end_s=round(end / fps, 3)) for start, end in segments]


def write_localization(out_dir: str, config: ml_collections.ConfigDict,
                       video_path: Optional[str], frames: np.ndarray,
                       region: Tuple[int, int, int],
                       explanation: long_video.SlidingExplanation, names: Sequence[str],
                       clip_info: List[Dict[str, Any]], fps: float) -> None:
  """Writes `localization.json`, the overlay video and (`config.localize.write_gif`) its GIF.

  Args:
    out_dir: the folder `write_explanation` wrote.
    config: the whole config (`data.crop_size`, `localize`).
    video_path: the explained video (file or folder of frames), None for an array.
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
  frame_classes = frame_class_names(explanation, names)
  per_frame = [dict(frame=t, box=_box_list(frame_boxes[t]), box_crop=_box_list(loc.boxes[t]),
                    in_segment=bool(in_segment[t]), mass=round(float(loc.frame_mass[t]), 4),
                    class_name=frame_classes[t])
               for t in range(num_frames)]
  storage.write_text(storage.join(out_dir, 'localization.json'), json.dumps(dict(
      video=_source(video_path), num_frames=num_frames, height=height, width=width,
      fps=fps, crop_region=dict(zip(('x0', 'y0', 'side'), region)),
      crop_size=int(config.data.crop_size),
      settings={key: config.localize[key] for key in (
          'threshold', 'relative_to', 'policy', 'temporal_threshold', 'min_segment_frames',
          'max_gap_frames')},
      video_class=video_class_record(explanation, names), clips=clip_info,
      segments=segment_records(loc.segments, fps),
      frames=per_frame), indent=1))

  drawn = overlay_frames(frames, region, explanation, names, str(config.localize.colormap))
  codec = str(config.localize.video_codec)
  write_overlay(storage.join(out_dir, 'overlay' + _CODEC_EXTENSIONS.get(codec, '.avi')), drawn,
                fps, codec)
  if config.localize.write_gif:
    write_overlay(storage.join(out_dir, 'overlay.gif'), drawn, fps)
