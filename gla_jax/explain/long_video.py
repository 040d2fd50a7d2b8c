"""Explaining and localizing a video of any length: sliding clips, stitched maps, one volume.

Clips of `config.data.num_frames` consecutive frames start every
`config.localize.clip_stride` frames (`localize.sliding_starts`; a video
shorter than a clip is loop-padded), are explained in fixed-size batches (one
compilation), and `localize.stitch` averages the maps of the clips that cover
each frame, so there is one map per input frame; each clip explains its own
argmax class. Reading the video and writing its files is
`gla_jax.video_explanation`; the reasoning is in docs/design.md section 1.3.

The whole video (uint8, the model's crop of every frame) and every clip map
(float32 T x S x S per clip and map) are held in memory: minutes of video at
112 px take gigabytes. Clips cross to the device as uint8 and are normalised
there (`models.normalize_video`).
"""
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gla_jax import models
from gla_jax.data import sampling
from gla_jax.explain import attention
from gla_jax.explain import localize
from gla_jax.models import input_normalization

VIDEO_SCORES = ('mean', 'max')
# uint8 clips -> float32 model input, on the device (the batch's sharding kept).
_normalize = jax.jit(models.normalize_video, static_argnames=('mean', 'std'))

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
  indices = np.stack([sampling.eval_frame_indices(num_frames, int(s), clip_frames, 1)
                      for s in starts])
  return starts, indices


def num_clips(num_frames: int, config: ml_collections.ConfigDict) -> int:
  """How many sliding clips `explain_video` explains in a video of `num_frames` frames."""
  return len(localize.sliding_starts(num_frames, int(config.data.num_frames), clip_stride(config)))


def layers_option(layers: str):
  return tuple(name.strip() for name in layers.split(',')) if ',' in layers else layers


def place_variables(variables: Dict[str, Any], mesh: Optional[Mesh] = None) -> Dict[str, Any]:
  """`variables` on the device once (replicated over `mesh`'s devices), not copied per batch.

  Numpy variables (as checkpoints load) would otherwise cross from the host at
  every batch: about 190 MB per call for ResNeXt-101 at fp32.
  """
  if mesh is None:
    return jax.device_put(variables)
  return jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))


def explain_clips(model: models.ResNeXt3D, variables: Dict[str, Any], clips: np.ndarray,
                  config: ml_collections.ConfigDict, mesh: Optional[Mesh] = None,
                  target: Optional[int] = None,
                  on_batch: Optional[Callable[[int], Any]] = None) -> Dict[str, np.ndarray]:
  """Explains uint8 clips [N, T, S, S, 3] in batches of `config.explain.batch_size`.

  Each batch crosses to the device as uint8 and is normalised there with
  `config.data.mean` and `std`; `config.explain` holds the explanation's
  options. The variables go to the device(s) once (`place_variables`). The
  last batch is padded to the full size so every batch reuses one compiled
  function. With a 1-D `mesh` (over this process's devices) each batch is
  split over its devices, data parallel: the batch size is rounded up to a
  multiple of the device count and the padding rows are dropped; the maps are
  those of one device. `target` is the class every clip explains (None: each
  clip's argmax); `on_batch(clips)` is called after each batch with the number
  of clips it explained (a progress bar's `update`).

  Returns:
    numpy arrays: `attention` [N, T, S, S], `layer/<name>` per layer (global
    first, in `explain`'s order), `gate/<stage>` for a gated model, `logits`
    [N, K], `target` [N], `has_signal` [N].
  """
  clips = np.asarray(clips)
  input_normalization.check_uint8_clips(clips, 'explain_clips')
  explain_config = config.explain
  mean, std = tuple(map(float, config.data.mean)), tuple(map(float, config.data.std))
  batch_size = int(explain_config.batch_size)
  batch_sharding = None
  if mesh is not None:
    devices = mesh.devices.size
    batch_size = -(-batch_size // devices) * devices
    batch_sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
  variables = place_variables(variables, mesh)
  layers = layers_option(explain_config.layers)
  targets = None if target is None else np.full(batch_size, int(target), np.int32)
  outputs: Dict[str, List[np.ndarray]] = {}
  for first in range(0, len(clips), batch_size):
    batch = clips[first:first + batch_size]
    rows = len(batch)
    if rows < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - rows, *batch.shape[1:]), batch.dtype)])
    batch = jax.device_put(batch, batch_sharding)          # None: the default device
    result = attention.explain(model, variables, _normalize(batch, mean=mean, std=std),
                               method=explain_config.method, layers=layers,
                               aggregate=explain_config.aggregate, target=targets,
                               pooling=explain_config.pooling,
                               normalization=explain_config.normalization,
                               upsampling=explain_config.upsampling,
                               chunk_size=int(explain_config.chunk_size))
    pieces = dict(attention=result.attention, logits=result.logits, target=result.target,
                  has_signal=result.has_signal,
                  **{f'layer/{name}': result.layer_maps[name] for name in result.layer_names},
                  **{f'gate/{stage}': result.gate_maps[stage]
                     for stage in sorted(result.gate_maps)})
    for key, value in pieces.items():
      outputs.setdefault(key, []).append(np.asarray(value)[:rows])
    if on_batch is not None:
      on_batch(rows)
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

  The inverse of `sampling.transform_boxes` without flip: the clip is
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
  """For each frame, the clip whose centre is nearest (the earlier on ties): int [num_frames]."""
  centres = np.asarray(starts, np.float64) + (clip_frames - 1) / 2
  return np.argmin(np.abs(np.arange(num_frames)[:, None] - centres[None]), axis=1)


def segment_mask(segments: Sequence[Tuple[int, int]], num_frames: int) -> np.ndarray:
  """bool [num_frames]: True on the frames inside one of the (start, end) segments."""
  in_segment = np.zeros(num_frames, bool)
  for start, end in segments:
    in_segment[start:end] = True
  return in_segment


@dataclasses.dataclass(frozen=True)
class SlidingExplanation:
  """What `explain_video` computes for one video of F frames in N sliding clips.

  Attributes:
    num_frames: F.
    clip_frames: frames per clip (`config.data.num_frames`).
    stride: frames between clip starts (`clip_stride`).
    starts: int [N] the first frame of each clip.
    indices: int [N, clip_frames] the frames of each clip.
    clips: `explain_clips`'s output (maps, logits, target, has_signal per clip).
    probabilities: [N, K] softmax of each clip's logits.
    video_score: the rule of `video_scores`.
    scores: [K] the video's class scores by that rule.
    video_target: the video's class, argmax of `scores`.
    video_class_probability: [N] each clip's probability of the video's class.
    weight_by_video_class: whether the clips' maps were scaled by it.
    stitched: {map key: [F, S, S]} `stitch_maps` of every map.
    nearest: int [F] the clip whose centre is nearest to each frame.
    localization: `localize_volume` of the stitched attention, or None.
    frame_boxes: [F, 4] its boxes in the original frame's pixels, or None.
    in_segment: bool [F] the frames inside its segments, or None.
  """
  num_frames: int
  clip_frames: int
  stride: int
  starts: np.ndarray
  indices: np.ndarray
  clips: Dict[str, np.ndarray]
  probabilities: np.ndarray
  video_score: str
  scores: np.ndarray
  video_target: int
  video_class_probability: np.ndarray
  weight_by_video_class: bool
  stitched: Dict[str, np.ndarray]
  nearest: np.ndarray
  localization: Optional[localize.Localization] = None
  frame_boxes: Optional[np.ndarray] = None
  in_segment: Optional[np.ndarray] = None


def explain_video(model: models.ResNeXt3D, variables: Dict[str, Any], frames: np.ndarray,
                  config: ml_collections.ConfigDict, video_score: str,
                  weight_by_video_class: bool, region: Tuple[int, int, int],
                  with_localization: bool = True, mesh: Optional[Mesh] = None,
                  target: Optional[int] = None,
                  on_batch: Optional[Callable[[int], Any]] = None) -> SlidingExplanation:
  """Explains (and localizes) a whole video with sliding clips.

  Args:
    model, variables: the network and its `{'params', 'batch_stats'}`.
    frames: uint8 [F, S, S, 3] every frame's crop at the model's size
      (`sampling.center_clip`), normalised on the device.
    config: the whole config (`data.num_frames`, `explain`, `localize`).
    video_score: how the clips' probabilities make the video's class
      (`VIDEO_SCORES`).
    weight_by_video_class: scale each clip's maps by its probability of the
      video's class before stitching (clips that miss the action fade).
    region: (x0, y0, side) of the model's crop in the original frames.
    with_localization: also localize the stitched attention.
    mesh: a 1-D mesh of this process's devices to split the clip batches over
      (`explain_clips`); None: one device.
    target: the class every clip explains; None: each clip's argmax.
    on_batch: called with the clips of each explained batch (progress).

  Returns:
    A `SlidingExplanation`.
  """
  num_frames = len(frames)
  clip_frames = int(config.data.num_frames)
  stride = clip_stride(config)
  starts, indices = sliding_clips(num_frames, clip_frames, stride)
  result = explain_clips(model, variables, frames[indices], config, mesh, target, on_batch)
  probabilities = np.asarray(jax.nn.softmax(result['logits'], axis=-1))
  scores = video_scores(probabilities, video_score)
  video_target = int(scores.argmax())
  video_class_probability = probabilities[:, video_target]
  stitched = stitch_maps(result, starts, num_frames,
                         video_class_probability if weight_by_video_class else None)
  located = {}
  if with_localization:
    loc = localize_volume(stitched['attention'], config.localize)
    located = dict(localization=loc,
                   frame_boxes=boxes_to_frame(loc.boxes, region, int(config.data.crop_size)),
                   in_segment=segment_mask(loc.segments, num_frames))
  return SlidingExplanation(
      num_frames=num_frames, clip_frames=clip_frames, stride=stride, starts=starts,
      indices=indices, clips=result, probabilities=probabilities, video_score=video_score,
      scores=scores, video_target=video_target, video_class_probability=video_class_probability,
      weight_by_video_class=weight_by_video_class, stitched=stitched,
      nearest=nearest_clip(num_frames, starts, clip_frames), **located)
