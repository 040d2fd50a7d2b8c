"""The network, its weights, config and class names, from a checkpoint or from the caller.

`load_model` is what `explain_video` runs on: a training workdir or a
converted directory carries the config it was made with (`metadata['config']`,
laid over `gla_jax.defaults` so older checkpoints without some keys still
load; a converted directory written before configs were stored has only the
architecture, and gets the default data settings), so it rebuilds the model by
itself. A `.pth` file carries no config: it needs `config` or `model`. The
class names are the weights' (`metadata['class_names']`), else the data
source's, else `class_<k>`.
"""
import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import ml_collections

from gla_jax import class_names as class_names_lib
from gla_jax import defaults
from gla_jax import models
from gla_jax import weight_fitting
from gla_jax import weights as weights_lib
from gla_jax.data import sources
from gla_jax.data import storage
from gla_jax.models import building
from gla_jax.models import convert


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """What explaining needs besides the video.

  Attributes:
    config: the whole config (data, explain and localize settings).
    model: the network.
    variables: its `{'params', 'batch_stats'}`.
    class_names: one name per class.
    source: where the weights came from (None: given by the caller).
  """
  config: ml_collections.ConfigDict
  model: models.ResNeXt3D
  variables: Dict[str, Any]
  class_names: List[str]
  source: Optional[str] = None


def _lay_over(target: ml_collections.ConfigDict, saved: Dict[str, Any], prefix: str,
              skipped: List[str]) -> None:
  """Sets every key of `saved` that `target` has (recursively); lists the others in `skipped`."""
  for key, value in saved.items():
    name = f'{prefix}{key}'
    if key not in target:
      skipped.append(name)
    elif isinstance(target[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _lay_over(target[key], value, name + '.', skipped)
    else:
      try:
        target[key] = value
      except (TypeError, ValueError) as error:
        skipped.append(f'{name} ({error})')


def config_from_metadata(metadata: Dict[str, Any]) -> ml_collections.ConfigDict:
  """The config of a checkpoint: its `metadata['config']` over the defaults.

  Without a stored config (a converted directory of an older version) the
  model comes from `preset` and `num_classes` and everything else is default.
  """
  config = defaults.base_config()
  saved = metadata.get('config')
  if isinstance(saved, dict):
    skipped: List[str] = []
    _lay_over(config, saved, '', skipped)
    if skipped:
      logging.warning('Config keys of the checkpoint that this version does not have (ignored): '
                      '%s', ', '.join(skipped))
  else:
    if metadata.get('preset') not in models.PRESETS:
      raise ValueError(
          f'The checkpoint\'s metadata names no known model (preset {metadata.get("preset")!r}, '
          f'known: {sorted(models.PRESETS)}) and stores no config; pass config= (the config '
          'it was made with) or model=.')
    config.model.preset = metadata['preset']
  if 'num_classes' in metadata:
    config.model.num_classes = int(metadata['num_classes'])
  return config


def _config_for_model(model: models.ResNeXt3D) -> ml_collections.ConfigDict:
  """Default settings with `model`'s class count (and preset, where it is one)."""
  config = defaults.base_config()
  config.model.num_classes = int(model.num_classes)
  config.model.preset = convert.preset_name(model) or config.model.preset
  return config


def resolve_class_names(metadata: Dict[str, Any], config: ml_collections.ConfigDict,
                        given: Optional[Sequence[str]] = None) -> List[str]:
  """`given`, else the weights' names, else the data source's (`class_<k>` where unknown)."""
  num_classes = int(config.model.num_classes)
  if given is not None:
    return class_names_lib.check_count([str(name) for name in given], num_classes,
                                       'class_names')
  return (class_names_lib.of_metadata(metadata, num_classes)
          or sources.class_names_or_indices(config.data, num_classes))


def load_model(checkpoint=None, *, model: Optional[models.ResNeXt3D] = None,
               variables: Optional[Dict[str, Any]] = None,
               config: Optional[ml_collections.ConfigDict] = None,
               class_names: Optional[Sequence[str]] = None) -> LoadedModel:
  """The network, weights, config and class names to explain with.

  Args:
    checkpoint: a training workdir, a converted directory or a `.pth` file
      (`weights.read`); None when `model` and `variables` are given.
    model: the network; built from the config when None.
    variables: the weights, with `model` instead of `checkpoint`.
    config: the whole config; None: the checkpoint's (over the defaults), or
      the defaults with `model`'s class count.
    class_names: names to use instead of the weights' or the data source's.

  Raises:
    ValueError: neither or both of checkpoint and variables, a `.pth` file
      without config or model, or a model without variables.
    FileNotFoundError: a checkpoint path that holds no weights.
  """
  if (checkpoint is None) == (variables is None):
    raise ValueError('Pass checkpoint= (a training workdir, a converted directory or a .pth '
                     'file) or model= and variables=, not ' +
                     ('both.' if checkpoint is not None else 'neither.'))
  metadata: Dict[str, Any] = {}
  source = None
  if checkpoint is None:
    if model is None and config is None:
      raise ValueError('variables= needs model= (or config=, to build the model from) too.')
    config = config or _config_for_model(model)
  else:
    checkpoint = os.fspath(checkpoint)
    if storage.is_file(checkpoint) and config is None and model is None:
      raise ValueError(f'{checkpoint!r} is a PyTorch file, which stores no config: pass '
                       'config= (e.g. configs/ucf101.py\'s get_config()) or model= to say which '
                       'network it is for.')
    if storage.is_file(checkpoint):
      config = config or _config_for_model(model)
      model = model or building.create_model(config)
      loaded = weights_lib.read(checkpoint, model)
    else:
      loaded = weights_lib.read(checkpoint, which=config.eval.checkpoint if config else 'latest',
                                best_metric=(config.train.best_metric if config
                                             else 'video_accuracy'))
      config = config or config_from_metadata(loaded.metadata)
    variables, metadata, source = loaded.variables, loaded.metadata, loaded.path
    logging.info('Explaining with the %s weights of %s.', loaded.kind, loaded.path)
  model = model or building.create_model(config)
  if source is not None:
    weight_fitting.check_fits(variables, model, source, metadata)   # Another model's weights.
  return LoadedModel(config, model, variables, resolve_class_names(metadata, config, class_names),
                     source)
