"""Explaining and localizing video files with a trained or converted model.

The numeric work is `explain.explain` and `localize`; this module finds the
weights, cuts a video of any length and resolution into sliding clips,
explains them in fixed-size batches (one compilation), stitches the clip maps
into one volume for the whole video, localizes the action in it and writes the
maps and pictures under the workdir (`--mode=explain`, `--mode=localize`).

Long videos: clips of `config.data.num_frames` consecutive frames start every
`config.localize.clip_stride` frames (0: half a clip, so every frame away from
the ends is seen by two clips, once early and once late in a clip);
`localize.sliding_starts` adds a last clip that ends exactly at the last frame,
and a video shorter than a clip is loop-padded (Hara's LoopPadding).
`localize.stitch` averages the maps of the clips that cover each frame, so the
output has exactly one map per input frame. Each clip explains its own
argmax class (the paper's rule); where overlapping clips predict different
classes their maps are still averaged, and `clips.json` says which class each
clip explained. `config.data.frame_stride` is not applied: the maps are per
frame, so the clips take consecutive frames.

The whole video and every clip map are held in memory (float32 T x S x S per
clip and map): minutes of video at 112 px take gigabytes.
"""
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from gla_jax import config_checks
from gla_jax.training import checkpoints
from gla_jax.training import evaluate
from gla_jax import explain
from gla_jax.data import input_pipeline
from gla_jax.explain import localize
from gla_jax import models
from gla_jax.data import video_io
from gla_jax.outputs import pictures

CONVERTED_DIR = 'converted'
# Container of the overlay video per codec; OpenCV picks the muxer by extension.
_CODEC_EXTENSIONS = {'mp4v': '.mp4', 'avc1': '.mp4', 'MJPG': '.avi', 'XVID': '.avi',
                     'FFV1': '.mkv'}
_DEFAULT_FPS = 25.0
VIDEO_SCORES = ('mean', 'max')


def build_model(config: ml_collections.ConfigDict) -> models.ResNeXt3D:
  """The model that `config.model` describes (the one training builds)."""
  # One definition of "the config's model" for training and inference, so a
  # gated or otherwise customised config explains the network it trained.
  from gla_jax.training import train  # pylint: disable=g-import-not-at-top
  return train.create_model(config)


def load_variables(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Weights for inference: the workdir's training checkpoint, else its converted ones.

  The training checkpoint is `config.eval.checkpoint` ('latest' or 'best' by
  `config.train.best_metric`), as `--mode=eval` reads it.
  """
  variables = evaluate.load_training_checkpoint(config, workdir)
  if variables is not None:
    return variables
  converted = os.path.join(workdir, CONVERTED_DIR)
  if os.path.isdir(converted):
    variables, _ = checkpoints.load_variables(converted)
    return variables
  raise FileNotFoundError(
      f'No weights in {workdir}: neither a training checkpoint nor {converted}. Train with '
      '--mode=train, or convert published weights with --mode=convert --torch_checkpoint=PATH, '
      'using the same --workdir.')


def class_names(config: ml_collections.ConfigDict) -> List[str]:
  """Class names of the evaluation source, or `class_<k>` where the source cannot be opened."""
  try:
    names = list(input_pipeline.create_source(config.data, 'eval').class_names)
  except (OSError, ValueError, ImportError) as error:
    logging.warning('Class names unavailable (%s); using indices.', error)
    names = []
  if len(names) != config.model.num_classes:
    names = [f'class_{k}' for k in range(config.model.num_classes)]
  return names


def check_video_settings(config: ml_collections.ConfigDict) -> Tuple[str, bool]:
  """(`config.localize.video_score`, one of `VIDEO_SCORES`;
  `config.localize.weight_by_video_class`, a bool), checked."""
  return (config_checks.choice(config.localize, 'localize', 'video_score', VIDEO_SCORES),
          config_checks.boolean(config.localize, 'localize', 'weight_by_video_class'))


def video_scores(probabilities: np.ndarray, rule: str) -> np.ndarray:
  """Per-class scores [C] of a video from its clips' probabilities [N, C].

  'mean' averages the clips (Hara's video accuracy: a trimmed video, every clip
  shows the action); 'max' takes each class's most confident clip (an untrimmed
  video whose action fills few clips, where the empty clips' mean outvotes it).
  """
  if rule not in VIDEO_SCORES:
    raise ValueError(f'Unknown video score rule {rule!r}; choose one of {VIDEO_SCORES}.')
  return probabilities.mean(axis=0) if rule == 'mean' else probabilities.max(axis=0)


def clip_stride(config: ml_collections.ConfigDict) -> int:
  """Frames between sliding clips: `config.localize.clip_stride`, 0 = half a clip."""
  clip_frames = int(config.data.num_frames)
  stride = int(config.localize.clip_stride) or max(1, clip_frames // 2)
  if not 1 <= stride <= clip_frames:
    raise ValueError(f'config.localize.clip_stride={stride}: use 1 <= stride <= num_frames '
                     f'({clip_frames}), or 0 for half a clip; a larger stride skips frames.')
  return stride


def sliding_clips(num_frames: int, clip_frames: int, stride: int
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """Clips covering a video: (starts [N], frame indices [N, clip_frames]).

  Starts from `localize.sliding_starts`; a video shorter than a clip gives one
  loop-padded clip (the padding `localize.stitch(padding='loop')` undoes).
  """
  starts = localize.sliding_starts(num_frames, clip_frames, stride)
  indices = np.stack([input_pipeline.eval_frame_indices(num_frames, int(s), clip_frames, 1)
                      for s in starts])
  return starts, indices


def layers_option(layers: str):
  return tuple(name.strip() for name in layers.split(',')) if ',' in layers else layers


def explain_clips(model: models.ResNeXt3D, variables: Dict[str, Any], clips: np.ndarray,
                  explain_config: ml_collections.ConfigDict) -> Dict[str, np.ndarray]:
  """Explains float32 clips [N, T, S, S, 3] in batches of `explain_config.batch_size`.

  The last batch is padded to the full size so every batch reuses one compiled
  function.

  Returns:
    numpy arrays: `attention` [N, T, S, S], `layer/<name>` per layer (global
    first, in `explain`'s order), `gate/<stage>` for a gated model, `logits`
    [N, K], `target` [N], `has_signal` [N].
  """
  batch_size = int(explain_config.batch_size)
  layers = layers_option(explain_config.layers)
  outputs: Dict[str, List[np.ndarray]] = {}
  for first in range(0, len(clips), batch_size):
    batch = clips[first:first + batch_size]
    rows = len(batch)
    if rows < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - rows, *batch.shape[1:]), batch.dtype)])
    result = explain.explain(model, variables, batch, method=explain_config.method,
                             layers=layers, aggregate=explain_config.aggregate,
                             pooling=explain_config.pooling,
                             normalization=explain_config.normalization)
    pieces = dict(attention=result.attention, logits=result.logits, target=result.target,
                  has_signal=result.has_signal,
                  **{f'layer/{name}': result.layer_maps[name] for name in result.layer_names},
                  **{f'gate/{stage}': result.gate_maps[stage] for stage in sorted(result.gate_maps)})
    for key, value in pieces.items():
      outputs.setdefault(key, []).append(np.asarray(value)[:rows])
  return {key: np.concatenate(values) for key, values in outputs.items()}


def map_keys(result: Dict[str, np.ndarray]) -> List[str]:
  """The keys of `explain_clips` output that hold maps: attention, layers, gates."""
  return [key for key in result if key == 'attention' or key.startswith(('layer/', 'gate/'))]


def stitch_maps(result: Dict[str, np.ndarray], starts: Sequence[int], num_frames: int,
                clip_weights: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
  """Every map of `explain_clips` output as one [num_frames, S, S] volume (`localize.stitch`).

  `clip_weights` [N] scale each clip's maps before the covering clips are
  averaged (None: all 1).
  """
  def weighted(maps):
    if clip_weights is None:
      return maps
    return np.asarray(maps) * np.asarray(clip_weights, np.float32)[:, None, None, None]

  return {key: localize.stitch(weighted(result[key]), starts, num_frames)
          for key in map_keys(result)}


def boxes_to_frame(boxes: np.ndarray, region: Tuple[int, int, int], crop_size: int) -> np.ndarray:
  """Boxes in the S x S clip back to the original frame's pixels.

  The inverse of `input_pipeline.transform_boxes` without flip: the clip is
  the square (x0, y0, side) resized to S, so x = x_clip * side / S + x0.
  Rows of -1 (no box) stay -1.
  """
  boxes = np.asarray(boxes, np.float32)
  x0, y0, side = region
  out = boxes * (side / crop_size) + np.array([x0, y0, x0, y0], np.float32)
  return np.where(np.all(boxes >= 0, axis=-1, keepdims=True), out, -1).astype(np.float32)


def localize_volume(attention: np.ndarray, localize_config: ml_collections.ConfigDict
                    ) -> localize.Localization:
  """`localize.localize` of a stitched [N, S, S] volume with `config.localize`'s settings."""
  return localize.localize(attention, threshold=float(localize_config.threshold),
                           relative_to=localize_config.relative_to,
                           policy=localize_config.policy,
                           temporal_threshold=float(localize_config.temporal_threshold),
                           min_segment_frames=int(localize_config.min_segment_frames),
                           max_gap_frames=int(localize_config.max_gap_frames))


def nearest_clip(num_frames: int, starts: Sequence[int], clip_frames: int) -> np.ndarray:
  """For each frame, the clip whose centre is nearest (the earlier one on ties): int [num_frames]."""
  centres = np.asarray(starts, np.float64) + (clip_frames - 1) / 2
  return np.argmin(np.abs(np.arange(num_frames)[:, None] - centres[None]), axis=1)


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


def explain_video_file(config: ml_collections.ConfigDict, workdir: str, video_path: str,
                       max_panels: int = 4, with_localization: bool = True) -> str:
  """Explains (and localizes) a whole video file of any length.

  Output folder: `<workdir>/localize/<name>/` with localization, else
  `<workdir>/explain/<name>/`. It receives:
    attention.npy     float32 [frames, S, S]: the stitched global-local map of
                      every frame, at the model's crop resolution (S =
                      `config.data.crop_size`, the centre square of the frame);
    layers/<name>.npy the same per layer, and `gate_<stage>.npy` per gate of a
                      gated model;
    clips.json        per clip: first and last frame, explained class,
                      probability, the video class's probability, has_signal;
                      the stride and crop; the video's class
                      (`config.localize.video_score`: the clips' mean, or
                      their max for untrimmed videos). With
                      `config.localize.weight_by_video_class` every clip's
                      maps are scaled by its probability of the video's class
                      before stitching, so clips that do not see the action
                      fade from the volume (untrimmed videos);
    panel_<k>.png     clip k: frames, the attention, each layer global to
                      local, the gates (up to `max_panels` clips spread over
                      the video);
  and with localization also:
    localization.json per frame: the box in the original frame's pixels (null
                      where none), in the crop's pixels, the attention mass,
                      whether it is in a segment, and the class of the
                      nearest clip; the segments; the clips' classes;
    overlay.mp4       the ORIGINAL frames (same count, same size; an odd
                      width or height is padded by one repeated pixel row or
                      column) with the attention up-sampled back onto the
                      centre-crop region (the rest, unseen by the model, is
                      dimmed), the box on frames inside a segment, and the
                      class name; the container follows
                      `config.localize.video_codec` (.avi for MJPG/XVID);
    overlay.gif       the same frames, when `config.localize.write_gif`.

  Returns:
    The output folder.
  """
  rule, weight_by_video_class = check_video_settings(config)
  model = build_model(config)
  variables = load_variables(config, workdir)
  frames = video_io.read_video(video_path)                          # uint8 [N, H, W, 3]
  num_frames, height, width = frames.shape[:3]
  crops, normalised = input_pipeline.center_clip(frames, config.data)
  region = input_pipeline.corner_crop(height, width, 1.0, 0)        # (x0, y0, side)
  crop_size = int(config.data.crop_size)
  clip_frames = int(config.data.num_frames)
  if int(config.data.frame_stride) != 1:
    logging.warning('config.data.frame_stride=%d is not applied to explanations: maps are per '
                    'frame, so clips take consecutive frames.', config.data.frame_stride)
  stride = clip_stride(config)
  starts, indices = sliding_clips(num_frames, clip_frames, stride)
  result = explain_clips(model, variables, normalised[indices], config.explain)
  names = class_names(config)
  probabilities = np.asarray(jax.nn.softmax(result['logits'], axis=-1))
  scores = video_scores(probabilities, rule)
  video_class = dict(target=int(scores.argmax()), class_name=names[scores.argmax()],
                     probability=round(float(scores.max()), 4), video_score=rule,
                     weight_by_video_class=weight_by_video_class)
  video_class_probability = probabilities[:, video_class['target']]
  stitched = stitch_maps(result, starts, num_frames,
                         video_class_probability if weight_by_video_class else None)

  name = os.path.splitext(os.path.basename(video_path))[0]
  out_dir = os.path.join(workdir, 'localize' if with_localization else 'explain', name)
  os.makedirs(os.path.join(out_dir, 'layers'), exist_ok=True)
  np.save(os.path.join(out_dir, 'attention.npy'), stitched['attention'])
  for key, volume in stitched.items():
    kind, _, layer = key.partition('/')
    if kind in ('layer', 'gate'):
      filename = layer if kind == 'layer' else f'gate_{layer}'
      np.save(os.path.join(out_dir, 'layers', filename + '.npy'), volume)

  targets = result['target'].astype(int)
  clip_info = [dict(start_frame=int(start), end_frame=int(min(start + clip_frames, num_frames)),
                    target=int(targets[k]), class_name=names[targets[k]],
                    probability=round(float(probabilities[k, targets[k]]), 4),
                    video_class_probability=round(float(video_class_probability[k]), 4),
                    has_signal=bool(result['has_signal'][k]))
               for k, start in enumerate(starts)]

  loc = localize_volume(stitched['attention'], config.localize) if with_localization else None
  nearest = nearest_clip(num_frames, starts, clip_frames)
  for k in _panel_clips(len(starts), max_panels):
    maps = {_row_label(key): result[key][k] for key in map_keys(result)}
    boxes = None if loc is None else {'frames': loc.boxes[indices[k]]}
    title = (f'frames {starts[k]}-{starts[k] + clip_frames - 1}: {names[targets[k]]} '
             f'p={probabilities[k, targets[k]]:.2f}')
    pictures.write_image(os.path.join(out_dir, f'panel_{k}.png'),
                          pictures.panel(crops[indices[k]], maps, title=title, boxes=boxes))
  with open(os.path.join(out_dir, 'clips.json'), 'w') as f:
    json.dump(dict(video=os.path.abspath(video_path), num_frames=num_frames,
                   crop_size=crop_size, crop_region=dict(zip(('x0', 'y0', 'side'), region)),
                   clip_frames=clip_frames, clip_stride=stride, video_class=video_class,
                   clips=clip_info, explain=config.explain.to_dict()), f, indent=1)
  if not all(info['has_signal'] for info in clip_info):
    logging.warning('Some clips of %s have no attention signal (all gradients zero); their '
                    'maps are zeros.', video_path)
  if loc is None:
    return out_dir

  fps = video_io.video_info(video_path).fps or _DEFAULT_FPS
  frame_boxes = boxes_to_frame(loc.boxes, region, crop_size)
  in_segment = np.zeros(num_frames, bool)
  for start, end in loc.segments:
    in_segment[start:end] = True
  per_frame = [dict(frame=t, box=_box_list(frame_boxes[t]), box_crop=_box_list(loc.boxes[t]),
                    in_segment=bool(in_segment[t]), mass=round(float(loc.frame_mass[t]), 4),
                    class_name=names[targets[nearest[t]]])
               for t in range(num_frames)]
  with open(os.path.join(out_dir, 'localization.json'), 'w') as f:
    json.dump(dict(video=os.path.abspath(video_path), num_frames=num_frames, height=height,
                   width=width, fps=fps,
                   crop_region=dict(zip(('x0', 'y0', 'side'), region)), crop_size=crop_size,
                   settings={key: config.localize[key] for key in (
                       'threshold', 'relative_to', 'policy', 'temporal_threshold',
                       'min_segment_frames', 'max_gap_frames')},
                   video_class=video_class, clips=clip_info,
                   segments=[dict(start_frame=int(s), end_frame=int(e),
                                  start_s=round(s / fps, 3), end_s=round(e / fps, 3))
                             for s, e in loc.segments],
                   frames=per_frame), f, indent=1)

  drawn = pictures.overlay_region(frames, stitched['attention'], region)
  shown = np.where(in_segment[:, None], frame_boxes, -1)             # boxes inside segments
  drawn = pictures.draw_boxes(drawn, shown, pictures.PRED_COLOR,
                               thickness=max(1, round(min(height, width) / 160)))
  drawn = pictures.label_frames(drawn, [info['class_name'] for info in per_frame])
  codec = str(config.localize.video_codec)
  video_io.write_video(os.path.join(out_dir, 'overlay' + _CODEC_EXTENSIONS.get(codec, '.avi')),
                       pictures.pad_to_even(drawn), fps=fps, codec=codec)
  if config.localize.write_gif:
    pictures.write_gif(os.path.join(out_dir, 'overlay.gif'), drawn, fps=fps)
  return out_dir
