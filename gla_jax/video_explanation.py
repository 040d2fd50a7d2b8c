"""The Python API: `explain_video(video, checkpoint=...)`, an in-memory `VideoExplanation`.

  import gla_jax
  result = gla_jax.explain_video('walk.mp4', checkpoint='runs/demo')
  result.class_name, result.segments, result.boxes      # the answer
  result.save('out/'); result.write_overlay('walk_overlay.mp4')

The video is a file, a folder of frames or a uint8 array (`video_inputs`);
the weights, config and class names come from `model_loading.load_model`; the
computation is `explain.long_video.explain_video` (sliding clips, stitched
maps, localization; the clip batches split over this process's devices,
`parallel.make_local_mesh`) on the centre square of every frame; the files are
`outputs.explanation_files`'. `--mode=explain` and `--mode=localize`
(`jobs.explain`) call it for each `--video`.
"""
import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from absl import logging
import ml_collections
import numpy as np

from gla_jax import config_checks
from gla_jax import model_loading
from gla_jax import parallel
from gla_jax import validation
from gla_jax import video_inputs
from gla_jax import weights
from gla_jax.data import sampling
from gla_jax.data import storage
from gla_jax.explain import long_video
from gla_jax.models import building
from gla_jax.outputs import explanation_files
from gla_jax.outputs import reports

DEFAULT_FPS = 25.0       # Segment times and overlays of videos whose frame rate is unknown.
TOP_CLASSES = 3          # Classes of the summary.
preprocess = video_inputs.preprocess


@dataclasses.dataclass(frozen=True, eq=False)
class VideoExplanation:
  """The explanation of one video of N frames, explained in K sliding clips.

  Attributes:
    attention: float32 [N, h, w] in [0, 1], the global-local map of every frame
      on the model's crop (the centre square of the frame, resized to h = w =
      `config.data.crop_size`).
    layer_maps: {name: float32 [N, h, w]} per layer (global to local), and
      `gate_<stage>` per gate of a gated model.
    clip_starts: int [K] the first frame of each clip.
    clip_classes: int [K] the class each clip explained (its argmax, or `target`).
    clip_probabilities: float32 [K, C] each clip's softmax.
    video_class: the video's class (`config.localize.video_score` of the clips).
    class_name: its name.
    class_names: the names of the C classes.
    probabilities: float32 [C] the video's class scores.
    boxes: float32 [N, 4] (x0, y0, x1, y1) per frame in the original frame's
      pixels; all -1 where a frame has none (and everywhere without localization).
    segments: [(start, end exclusive)] frames of the action (empty without
      localization).
    fps: frames per second, None when unknown (then `DEFAULT_FPS` is used).
    source: the file or folder explained (absolute), None for an array.
    frames: uint8 [N, H, W, 3] the original frames.
    crops: uint8 [N, h, w, 3] what the model saw.
    region: (x0, y0, side) of the crop in the frames.
    config: the config explained with (explain and localize settings).
    details: `long_video.explain_video`'s output (per clip maps and more).
  """
  attention: np.ndarray
  layer_maps: Dict[str, np.ndarray]
  clip_starts: np.ndarray
  clip_classes: np.ndarray
  clip_probabilities: np.ndarray
  video_class: int
  class_name: str
  class_names: Tuple[str, ...]
  probabilities: np.ndarray
  boxes: np.ndarray
  segments: List[Tuple[int, int]]
  fps: Optional[float]
  source: Optional[str]
  frames: np.ndarray = dataclasses.field(repr=False)
  crops: np.ndarray = dataclasses.field(repr=False)
  region: Tuple[int, int, int] = dataclasses.field(repr=False)
  config: ml_collections.ConfigDict = dataclasses.field(repr=False)
  details: long_video.SlidingExplanation = dataclasses.field(repr=False)

  @property
  def num_frames(self) -> int:
    return len(self.attention)

  @property
  def localized(self) -> bool:
    return self.details.localization is not None

  def top(self, k: int = TOP_CLASSES) -> List[Tuple[str, float]]:
    """The k most probable classes of the video: [(name, probability)]."""
    order = np.argsort(-self.probabilities, kind='stable')[:k]
    return [(self.class_names[c], float(self.probabilities[c])) for c in order]

  def save(self, folder: str, max_panels: int = 4) -> str:
    """Writes the arrays and JSON files into `folder` (a local path or URI); returns it.

    attention.npy     float32 [N, h, w] the stitched map of every frame;
    layers/<name>.npy the same per layer, `gate_<stage>.npy` per gate;
    clips.json        per clip: first and last frame, explained class,
                      probability, the video class's probability, has_signal;
                      the stride and crop; the video's class;
    panel_<k>.png     clip k: frames, the attention, each layer global to
                      local, the gates (up to `max_panels` clips spread over
                      the video);
    and with localization also:
    localization.json per frame: the box in the original frame's pixels (null
                      where none), in the crop's pixels, the attention mass,
                      whether it is in a segment, the nearest clip's class;
                      the segments (frames and seconds);
    overlay.mp4       `write_overlay`'s frames (the container follows
                      `config.localize.video_codec`: .avi for MJPG/XVID);
    overlay.gif       the same, when `config.localize.write_gif`.
    """
    names = list(self.class_names)
    clip_info = explanation_files.write_explanation(folder, self.config, self.source, self.crops,
                                                    self.region, self.details, names, max_panels)
    if self.localized:
      explanation_files.write_localization(folder, self.config, self.source, self.frames,
                                           self.region, self.details, names, clip_info,
                                           self.fps or DEFAULT_FPS)
    return folder

  def overlay_frames(self) -> np.ndarray:
    """uint8 [N, H, W, 3]: the original frames with the attention on the model's crop (the
    rest, unseen by the model, dimmed), the box on frames inside a segment, the class."""
    return explanation_files.overlay_frames(self.frames, self.region, self.details,
                                            list(self.class_names),
                                            str(self.config.localize.colormap))

  def write_overlay(self, path: str) -> str:
    """Writes `overlay_frames` to `path`, one frame per input frame; returns `path`.

    The suffix picks the format: `.gif` (Pillow), `.mp4`, `.avi` or `.mkv`
    (`data.video_io.write_video`, with `config.localize.video_codec` where it
    suits the container); an odd width or height is padded by one pixel.
    """
    return explanation_files.write_overlay(path, self.overlay_frames(), self.fps or DEFAULT_FPS,
                                           str(self.config.localize.video_codec))

  def panel(self, clip: int) -> np.ndarray:
    """uint8 RGB image of clip `clip`: frames, attention, layers, gates (`panel_<k>.png`)."""
    return explanation_files.clip_panel(self.details, self.crops, list(self.class_names), clip,
                                        str(self.config.localize.colormap))

  def summary(self) -> Dict[str, Any]:
    """The video's answer as JSON: class, top classes, segments (frames and seconds)."""
    segments = (explanation_files.segment_records(self.segments, self.fps or DEFAULT_FPS)
                if self.localized else None)
    return dict(video=self.source, num_frames=self.num_frames, fps=self.fps,
                video_class=self.video_class, class_name=self.class_name,
                probability=round(float(self.probabilities[self.video_class]), 4),
                top=[dict(class_name=name, probability=round(p, 4)) for name, p in self.top()],
                video_score=str(self.config.localize.video_score), segments=segments)


def _target_index(target: Union[int, str, None], names: Sequence[str]) -> Optional[int]:
  if target is None:
    return None
  if isinstance(target, str):
    if target not in names:
      raise ValueError(f'target={target!r} is not a class name of the model (e.g. '
                       f'{", ".join(names[:5])}); pass a name or an index 0..{len(names) - 1}.')
    return list(names).index(target)
  if not config_checks.is_integer(target) or not 0 <= int(target) < len(names):
    raise ValueError(f'target={target!r}: pass a class index 0..{len(names) - 1} or a class name.')
  return int(target)


def explanation_config(config: ml_collections.ConfigDict, model, *, method=None, layers=None,
                       aggregate=None, clip_stride=None, batch_size=None, upsampling=None
                       ) -> ml_collections.ConfigDict:
  """A copy of `config` with the given explain/localize keys replaced, validated."""
  config = config.copy_and_resolve_references()
  if isinstance(layers, (list, tuple)):
    layers = ','.join(str(name) for name in layers)
  with config.unlocked():
    for section, key, value in (('explain', 'method', method), ('explain', 'layers', layers),
                                ('explain', 'aggregate', aggregate),
                                ('explain', 'batch_size', batch_size),
                                ('explain', 'upsampling', upsampling),
                                ('localize', 'clip_stride', clip_stride)):
      if value is not None:
        config[section][key] = value
  validation.validate_model_input(config.data)   # Not the data source's keys: none is read.
  validation.validate_explain(config, model)
  validation.validate_localize(config)
  return config


def explain_video(video, *, checkpoint=None, model=None, variables=None, config=None,
                  method: Optional[str] = None, layers: Union[str, Sequence[str], None] = None,
                  aggregate: Optional[str] = None, target: Union[int, str, None] = None,
                  clip_stride: Optional[int] = None, batch_size: Optional[int] = None,
                  with_localization: bool = True, progress: Any = True,
                  class_names: Optional[Sequence[str]] = None,
                  fps: Optional[float] = None,
                  upsampling: Optional[str] = None) -> VideoExplanation:
  """Explains (and localizes) a whole video of any length with sliding clips.

  Args:
    video: a video file (path or URI), a folder of JPEG/PNG frames (natural
      order, e.g. image_00001.jpg) or a uint8 RGB array [N, H, W, 3].
    checkpoint: a training workdir, a converted directory or a `.pth` file;
      a workdir or converted directory brings its config and class names.
    model, variables: the network and its weights, instead of `checkpoint`.
    config: the whole config (needed with a `.pth` file unless `model` is
      given); None: the checkpoint's, or the defaults.
    method, layers, aggregate, batch_size, upsampling: override
      `config.explain`'s keys (`upsampling`: `half_pixel` | `receptive_field`).
    target: the class (index or name) every clip explains; None: each
      clip's most probable class.
    clip_stride: overrides `config.localize.clip_stride` (0: half a clip).
    with_localization: also boxes and segments.
    progress: True: a progress bar over the clips (stderr); False: none; or
      a tqdm bar to advance (one bar shared by several videos).
    class_names: names to use instead of the weights' or the data source's.
    fps: the frame rate to use (a folder of frames or an array has none).

  Returns:
    A `VideoExplanation`.

  Raises:
    FileNotFoundError, ValueError: a missing or unreadable video, missing
      weights, a bad setting; each names the problem and the fix.
  """
  read = video_inputs.read_video_input(video, fps)          # A bad video fails before any load.
  loaded = model_loading.load_model(checkpoint, model=model, variables=variables, config=config,
                                    class_names=class_names)
  config = explanation_config(loaded.config, loaded.model, method=method, layers=layers,
                              aggregate=aggregate, clip_stride=clip_stride,
                              batch_size=batch_size, upsampling=upsampling)
  names = list(loaded.class_names)
  target = _target_index(target, names)
  frames = read.frames
  region = sampling.center_region(*frames.shape[1:3])
  crops = sampling.center_clip(frames, config.data)                 # uint8 [N, S, S, 3]
  if int(config.data.frame_stride) != 1:
    logging.warning('config.data.frame_stride=%d is not applied to explanations: maps are per '
                    'frame, so clips take consecutive frames.', config.data.frame_stride)
  own_bar = progress is True
  bar = (reports.progress(long_video.num_clips(len(frames), config), 'Explaining', unit='clip')
         if own_bar else progress or None)
  try:
    details = long_video.explain_video(
        loaded.model, loaded.variables, crops, config, str(config.localize.video_score),
        bool(config.localize.weight_by_video_class), region, with_localization,
        mesh=parallel.make_local_mesh(), target=target,
        on_batch=None if bar is None else bar.update)
  finally:
    if own_bar:
      bar.close()
  if not details.clips['has_signal'].all():
    logging.warning('Some clips of %s have no attention signal (all gradients zero); their '
                    'maps are zeros.', read.source or 'the video')
  boxes = (details.frame_boxes if details.frame_boxes is not None
           else np.full((len(frames), 4), -1, np.float32))
  segments = ([] if details.localization is None
              else [(int(s), int(e)) for s, e in details.localization.segments])
  return VideoExplanation(
      attention=details.stitched['attention'],
      layer_maps={explanation_files.map_file_name(key): volume
                  for key, volume in details.stitched.items() if key != 'attention'},
      clip_starts=details.starts, clip_classes=details.clips['target'].astype(int),
      clip_probabilities=details.probabilities, video_class=details.video_target,
      class_name=names[details.video_target], class_names=tuple(names),
      probabilities=np.asarray(details.scores, np.float32), boxes=boxes, segments=segments,
      fps=read.fps, source=read.source, frames=frames, crops=crops, region=region,
      config=config, details=details)


def load_for_workdir(config: ml_collections.ConfigDict, workdir: str,
                     checkpoint: Optional[str] = None) -> model_loading.LoadedModel:
  """The model of a mode with `config`: `weights.for_config`'s weights (`checkpoint` first)."""
  model = building.create_model(config)
  found = weights.for_config(config, workdir, model, checkpoint=checkpoint)
  return model_loading.LoadedModel(config, model, found.variables,
                                   model_loading.resolve_class_names(found.metadata, config),
                                   found.path)


def explain_video_file(config: ml_collections.ConfigDict, workdir: str, video_path: str,
                       max_panels: int = 4, with_localization: bool = True) -> str:
  """Explains (and localizes) a video with the workdir's weights into its output folder.

  The folder is `<workdir>/localize/<name>/` with localization, else
  `<workdir>/explain/<name>/` (`VideoExplanation.save` lists its files).

  Returns:
    The output folder.
  """
  validation.validate_localize(config)
  loaded = load_for_workdir(config, workdir)
  result = explain_video(video_path, model=loaded.model, variables=loaded.variables,
                         config=config, class_names=loaded.class_names,
                         with_localization=with_localization, progress=False)
  out_dir = explanation_files.output_dir(workdir, video_path, with_localization)
  return result.save(out_dir, max_panels)


def output_root(workdir: str, with_localization: bool) -> str:
  """`<workdir>/localize` or `<workdir>/explain`: where the videos' folders and summary go."""
  return storage.join(workdir, 'localize' if with_localization else 'explain')
