"""`validate(config)`: every section of a config checked before any work.

Each mode of the command line (and each library entry point that takes a whole
config) calls it first, so an impossible value fails at once with an error that
names `config.<section>.<key>=<value>` and what it accepts, instead of after
training. Paths are checked when they are opened, and the class count of the
data when a source is opened (`training.evaluate.check_num_classes`).
"""
from typing import Optional

import ml_collections
import numpy as np

from gla_jax import config_checks
from gla_jax import explain
from gla_jax import models
from gla_jax.data import sources
from gla_jax.data import storage
from gla_jax.data import synthetic_settings
from gla_jax.explain import compared_methods
from gla_jax.explain import localize
from gla_jax.explain import long_video
from gla_jax.models import building
from gla_jax.models import gating
from gla_jax.outputs import pictures
from gla_jax.training import checkpoints
from gla_jax.training import evaluate
from gla_jax.training import optimization

_SYNTHETIC_SIZES = ('train_size', 'val_size', 'num_frames', 'height', 'width')
_DATA_PATH_KEYS = ('root', 'eval_root', 'annotations', 'train_split_file', 'eval_split_file',
                   'tfds_name', 'tfds_train_split', 'tfds_eval_split', 'tfds_data_dir')
# The keys of those that are paths (local, or URIs of `storage.SCHEMES`).
_DATA_PATHS = ('root', 'eval_root', 'annotations', 'train_split_file', 'eval_split_file',
               'tfds_data_dir')


def _check_reachable(value: str, name: str) -> None:
  """A path setting is local or a URI of a scheme `storage` reaches (gs://, s3://, ...)."""
  if value:
    try:
      storage.absolute(value)
    except ValueError as error:
      raise ValueError(f'{name}: {error}') from None


def validate(config: ml_collections.ConfigDict, num_devices: Optional[int] = None,
             process_count: int = 1) -> None:
  """Checks every section of `config`; raises on the first impossible value.

  Args:
    config: a whole config (`gla_jax.defaults.base_config()` and overrides).
    num_devices: the devices the batch is split over; None skips the check
      that the batch sizes divide by them (modes that do not build a mesh).
    process_count: the processes of a multi-host run.

  Raises:
    TypeError: a value of the wrong type (None, True for a count, text for a
      number), naming `config.<section>.<key>`.
    ValueError: a value out of range, an unknown choice, or settings that
      cannot work together, naming the keys and the fix.
  """
  model = validate_model(config)
  validate_data(config.data)
  validate_train(config)
  validate_eval(config)
  validate_explain(config, model)
  validate_localize(config, model)
  validate_top_level(config, num_devices, process_count)


def validate_model(config: ml_collections.ConfigDict) -> models.ResNeXt3D:
  """`config.model`; returns the network it describes."""
  model = config.model
  config_checks.integer(model, 'model', 'num_classes', minimum=1)
  models.check_stem_kernel(
      config_checks.numbers_tuple(model, 'model', 'stem_kernel', length=3, minimum=1,
                                  integers=True), 'config.model.stem_kernel')
  config_checks.boolean(model, 'model', 'max_pool')
  config_checks.numbers_tuple(model, 'model', 'temporal_strides', length=len(models.STAGE_NAMES),
                              minimum=1, integers=True)   # One per stage of every preset.
  config_checks.boolean(model, 'model', 'gated')
  config_checks.choice(model, 'model', 'gate_normalization', gating.NORMALIZATIONS)
  config_checks.choice(model, 'model', 'gate_head', gating.HEADS)
  return building.create_model(config)   # Unknown preset or dtype.


def validate_model_input(data_config: ml_collections.ConfigDict) -> None:
  """The `config.data` keys of the model's input: clip length, crop size, normalisation."""
  for key in ('num_frames', 'crop_size'):
    config_checks.integer(data_config, 'data', key, minimum=1)
  config_checks.numbers_tuple(data_config, 'data', 'mean', length=3)
  config_checks.numbers_tuple(data_config, 'data', 'std', length=3, above=0)


def validate_data(data_config: ml_collections.ConfigDict) -> None:
  """`config.data`: types and ranges (paths are checked when a source opens them)."""
  section = 'data'
  config_checks.choice(data_config, section, 'source', sources.SOURCES)
  validate_model_input(data_config)
  config_checks.integer(data_config, section, 'frame_stride', minimum=1)
  config_checks.numbers_tuple(data_config, section, 'train_scales', above=0, maximum=1,
                              non_empty=True)
  config_checks.boolean(data_config, section, 'flip')
  config_checks.integer(data_config, section, 'workers', minimum=0)
  config_checks.choice(data_config, section, 'worker_type', ('thread', 'process'))
  config_checks.integer(data_config, section, 'prefetch', minimum=0)
  config_checks.number(data_config, section, 'max_bad_fraction', minimum=0, maximum=1)
  config_checks.integer(data_config, section, 'retries', minimum=0)
  config_checks.integer(data_config, section, 'random_labels_seed', minimum=-1,
                        hint='-1 = the true labels')
  for key in _DATA_PATH_KEYS:
    config_checks.string(data_config, section, key)
  for key in _DATA_PATHS:
    _check_reachable(data_config[key], f'config.data.{key}')
  synthetic_section = 'data.synthetic'
  for key in _SYNTHETIC_SIZES:
    config_checks.integer(data_config.synthetic, synthetic_section, key, minimum=1)
  config_checks.integer(data_config.synthetic, synthetic_section, 'seed', minimum=0)
  if data_config.source == 'synthetic':
    config_checks.choice(data_config.synthetic, synthetic_section, 'difficulty',
                         sorted(synthetic_settings.DIFFICULTIES))
  if data_config.source == 'folder' and not data_config.root:
    raise ValueError("config.data.source='folder' needs config.data.root, the folder holding "
                     '<class>/<video> files (and config.data.eval_root when the evaluation '
                     'videos are in another folder).')


def validate_train(config: ml_collections.ConfigDict) -> None:
  """`config.train`."""
  train_config = config.train
  config_checks.choice(train_config, 'train', 'optimizer', optimization.OPTIMIZERS)
  for key, minimum, hint in (('batch_size', 1, 'global, over all devices'),
                             ('num_steps', 1, ''), ('warmup_steps', 0, ''), ('seed', 0, ''),
                             ('log_every', 1, ''), ('eval_every', 0, '0 = only at the end'),
                             ('checkpoint_every', 0, '0 = only at the end'),
                             ('keep_checkpoints', 1,
                              'the latest checkpoint is what a restart resumes from'),
                             ('max_nonfinite_steps', 1, 'consecutive skipped steps that stop '
                              'the run')):
    config_checks.integer(train_config, 'train', key, minimum=minimum, hint=hint)
  config_checks.number(train_config, 'train', 'learning_rate', minimum=0)
  config_checks.number(train_config, 'train', 'step_decay', above=0)
  config_checks.number(train_config, 'train', 'momentum', minimum=0, maximum=1)
  config_checks.number(train_config, 'train', 'dampening', minimum=0, maximum=1,
                       hint="Hara's 0.9; nesterov uses 0")
  config_checks.number(train_config, 'train', 'weight_decay', minimum=0)
  for key in ('nesterov', 'drop_head', 'tensorboard'):
    config_checks.boolean(train_config, 'train', key)
  config_checks.string(train_config, 'train', 'init_checkpoint')
  _check_reachable(train_config.init_checkpoint, 'config.train.init_checkpoint')
  config_checks.choice(train_config, 'train', 'schedule', optimization.SCHEDULES)
  config_checks.choice(train_config, 'train', 'freeze_until', ('',) + optimization.FREEZE_POINTS)
  config_checks.choice(train_config, 'train', 'best_metric', evaluate.RANKING_METRICS)
  boundaries = config_checks.numbers_tuple(train_config, 'train', 'step_boundaries',
                                           integers=True)
  if (train_config.freeze_until or train_config.drop_head) and not train_config.init_checkpoint:
    raise ValueError('config.train.freeze_until / drop_head are fine-tuning options: set '
                     'config.train.init_checkpoint to the weights to start from (freezing '
                     'random weights is never what you want).')
  if train_config.warmup_steps > train_config.num_steps:
    raise ValueError(f'config.train.warmup_steps={train_config.warmup_steps}: must be in [0, '
                     f'num_steps={train_config.num_steps}].')
  if train_config.schedule == 'step' and (
      list(boundaries) != sorted(set(boundaries))
      or any(b <= train_config.warmup_steps for b in boundaries)):
    raise ValueError(f'config.train.step_boundaries={boundaries}: must increase and '
                     f'lie after warmup_steps={train_config.warmup_steps}.')


def validate_eval(config: ml_collections.ConfigDict) -> None:
  """`config.eval`."""
  evaluation = config.eval
  config_checks.integer(evaluation, 'eval', 'batch_size', minimum=1)
  config_checks.integer(evaluation, 'eval', 'max_batches', minimum=0,
                        hint='0 = the whole split')
  config_checks.integer(evaluation, 'eval', 'seed', minimum=0,
                        hint='which videos an evaluation capped by max_batches reads')
  config_checks.choice(evaluation, 'eval', 'split', sources.SPLITS)
  config_checks.choice(evaluation, 'eval', 'checkpoint', checkpoints.WHICH)


def validate_explain(config: ml_collections.ConfigDict, model: models.ResNeXt3D) -> None:
  """`config.explain`; the layer names are checked against `model`'s taps."""
  section = config.explain
  config_checks.choice(section, 'explain', 'method',
                       explain.METHODS + tuple(explain.METHOD_ALIASES))
  config_checks.choice(section, 'explain', 'aggregate', explain.AGGREGATES)
  config_checks.choice(section, 'explain', 'pooling', explain.POOLINGS)
  config_checks.choice(section, 'explain', 'normalization', explain.NORMALIZATIONS)
  config_checks.choice(section, 'explain', 'upsampling', explain.UPSAMPLINGS)
  layers = config_checks.string(section, 'explain', 'layers')
  try:
    explain.resolve_layers(model, long_video.layers_option(layers))
  except ValueError as error:
    raise ValueError(f'config.explain.layers={layers!r}: {error}') from None
  config_checks.integer(section, 'explain', 'batch_size', minimum=1)
  config_checks.integer(section, 'explain', 'max_clips', minimum=0,
                        hint='validation clips the main job explains')
  config_checks.integer(section, 'explain', 'chunk_size', minimum=1,
                        hint='channels per batched forward pass of scorecam/ablationcam')


def validate_localize(config: ml_collections.ConfigDict,
                      model: Optional[models.ResNeXt3D] = None) -> None:
  """`config.localize`: boxes, segments, long videos and the comparison's settings.

  With `model`, the comparison's methods are checked against its layers and gates.
  """
  section, name = config.localize, 'localize'
  validate_compared_methods(config, model)
  for key in ('threshold', 'temporal_threshold'):
    config_checks.number(section, name, key, minimum=0, maximum=1,
                         hint='a fraction of the maximum')
  config_checks.choice(section, name, 'relative_to', localize.RELATIVE_TO)
  config_checks.choice(section, name, 'policy', localize.POLICIES)
  config_checks.integer(section, name, 'min_segment_frames', minimum=1)
  config_checks.integer(section, name, 'max_gap_frames', minimum=0)
  config_checks.integer(section, name, 'clip_stride', minimum=0,
                        maximum=int(config.data.num_frames),
                        hint='frames between sliding clips, at most data.num_frames; '
                        '0 = half a clip')
  config_checks.choice(section, name, 'video_score', long_video.VIDEO_SCORES)
  for key in ('weight_by_video_class', 'write_gif'):
    config_checks.boolean(section, name, key)
  config_checks.numbers_tuple(section, name, 'thresholds', above=0, maximum=1, non_empty=True)
  config_checks.number(section, name, 'held_out_fraction', above=0, maximum=1,
                       hint='the clips that choose each threshold; the rest are reported')
  if float(section.held_out_fraction) >= 1:
    raise ValueError(f'config.localize.held_out_fraction={section.held_out_fraction}: use a '
                     'fraction in (0, 1); both the held-out and the reported part need clips.')
  config_checks.number(section, name, 'iou_threshold', above=0, maximum=1)
  config_checks.number(section, name, 'frame_map_threshold', above=0, maximum=1,
                       hint="frame-mAP's IoU")
  video_map = config_checks.numbers_tuple(section, name, 'video_map_thresholds', above=0,
                                          maximum=1, non_empty=True)
  if len(set(video_map)) != len(video_map):
    raise ValueError(f'config.localize.video_map_thresholds={video_map}: a threshold is given '
                     'twice; name each once.')
  config_checks.number(section, name, 'pointing_tolerance', minimum=0)
  for key, minimum, hint in (('deletion_steps', 0, '0 skips the deletion/insertion curves'),
                             ('curve_clips', 0, '0 = every evaluation clip'),
                             ('road_clips', 0, '0 skips ROAD and average drop'),
                             ('max_clips', 0, '0 = the whole split'),
                             ('batch_size', 1, ''), ('seed', 0, ''), ('num_pictures', 0, '')):
    config_checks.integer(section, name, key, minimum=minimum, hint=hint)
  codec = config_checks.string(section, name, 'video_codec')
  if len(codec) != 4:
    raise ValueError(f'config.localize.video_codec={codec!r}: must be a FourCC of 4 characters '
                     "(e.g. 'avc1' for H.264, 'mp4v', 'MJPG').")
  config_checks.choice(section, name, 'colormap', pictures.COLORMAPS)


def _strings_tuple(section: ml_collections.ConfigDict, key: str, what: str) -> tuple:
  value = section[key]
  if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
    raise TypeError(f'config.localize.{key}={value!r}: must be a tuple of {what} (() for the '
                    'default).')
  duplicates = sorted({v for v in value if list(value).count(v) > 1})
  if duplicates:
    raise ValueError(f'config.localize.{key}={tuple(value)}: {duplicates} given twice; name '
                     'each once.')
  return tuple(value)


def validate_compared_methods(config: ml_collections.ConfigDict,
                              model: Optional[models.ResNeXt3D] = None) -> None:
  """`config.localize.methods` and `upsamplings` (`--mode=loc_eval`'s table)."""
  upsamplings = _strings_tuple(config.localize, 'upsamplings', 'up-sampling names')
  unknown = [u for u in upsamplings if u not in explain.UPSAMPLINGS]
  if unknown:
    raise ValueError(f'config.localize.upsamplings={upsamplings}: unknown {unknown}; choose '
                     f'from {explain.UPSAMPLINGS} (() = config.explain.upsampling only).')
  methods = _strings_tuple(config.localize, 'methods', 'method names or kinds')
  unknown = [m for m in methods if m.partition(':')[0] not in compared_methods.KINDS]
  if unknown:
    raise ValueError(f'config.localize.methods={methods}: unknown {unknown}; name methods '
                     f'<kind>:<layer> or kinds of {compared_methods.KINDS} (() = all).')
  if model is not None:
    compared_methods.select(model, methods)


def validate_top_level(config: ml_collections.ConfigDict, num_devices: Optional[int],
                       process_count: int = 1) -> None:
  """`config.num_devices`, `config.distributed`, and the batch sizes against the devices."""
  config_checks.integer(config, '', 'num_devices', minimum=0, hint='0 = every visible device')
  config_checks.boolean(config, '', 'distributed')
  config_checks.boolean(config, '', 'compilation_cache')
  if num_devices is None:
    return
  for section in ('train', 'eval'):
    batch_size = int(config[section].batch_size)
    multiple = np.lcm(num_devices, process_count)
    if batch_size % multiple:
      raise ValueError(
          f'config.{section}.batch_size={batch_size} is not divisible by the {num_devices} '
          f'devices' + (f' and {process_count} processes' if process_count > 1 else '') +
          f'; use a multiple of {multiple} (e.g. {multiple * max(1, batch_size // multiple)}).')
