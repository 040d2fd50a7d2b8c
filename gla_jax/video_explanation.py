"""`--mode=explain` and `--mode=localize`: explain (and localize) a video file of any length.

Finds the weights (`gla_jax.weights.for_config`), reads the video, computes with `explain.long_video`
(sliding clips, stitched maps, localization; the clip batches split over all
of this process's devices, `parallel.make_local_mesh`: one process explains a
file, no other joins it) and writes with `outputs.explanation_files`.
"""
import logging

import ml_collections

from gla_jax import parallel
from gla_jax import validation
from gla_jax import weights
from gla_jax.data import sampling
from gla_jax.data import sources
from gla_jax.data import storage
from gla_jax.data import video_io
from gla_jax.explain import long_video
from gla_jax.models import building
from gla_jax.outputs import explanation_files

_DEFAULT_FPS = 25.0


def explain_video_file(config: ml_collections.ConfigDict, workdir: str, video_path: str,
                       max_panels: int = 4, with_localization: bool = True) -> str:
  """Explains (and localizes) a whole video file of any length.

  Output folder: `<workdir>/localize/<name>/` with localization, else
  `<workdir>/explain/<name>/` (the workdir and the video may be URIs,
  `gla_jax.data.storage`). It receives:
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
  validation.validate_localize(config)
  rule = str(config.localize.video_score)
  weight_by_video_class = bool(config.localize.weight_by_video_class)
  model = building.create_model(config)
  variables = weights.for_config(config, workdir, model).variables
  with storage.local_copy(video_path) as local_video:   # PyAV/OpenCV read local files only.
    frames = video_io.read_video(local_video)                       # uint8 [N, H, W, 3]
    fps = video_io.video_info(local_video).fps or _DEFAULT_FPS
  height, width = frames.shape[1:3]
  crops = sampling.center_clip(frames, config.data)                 # uint8 [N, S, S, 3]
  region = sampling.corner_crop(height, width, 1.0, 0)              # (x0, y0, side)
  if int(config.data.frame_stride) != 1:
    logging.warning('config.data.frame_stride=%d is not applied to explanations: maps are per '
                    'frame, so clips take consecutive frames.', config.data.frame_stride)
  explanation = long_video.explain_video(model, variables, crops, config, rule,
                                         weight_by_video_class, region, with_localization,
                                         mesh=parallel.make_local_mesh())
  names = sources.class_names_or_indices(config.data, int(config.model.num_classes))

  out_dir = explanation_files.output_dir(workdir, video_path, with_localization)
  clip_info = explanation_files.write_explanation(out_dir, config, video_path, crops, region,
                                                  explanation, names, max_panels)
  if not all(info['has_signal'] for info in clip_info):
    logging.warning('Some clips of %s have no attention signal (all gradients zero); their '
                    'maps are zeros.', video_path)
  if explanation.localization is None:
    return out_dir

  explanation_files.write_localization(out_dir, config, video_path, frames, region, explanation,
                                       names, clip_info, fps)
  return out_dir
