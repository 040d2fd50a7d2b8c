"""Which weights: one resolver for every mode and for training's `init_checkpoint`.

Weights come in three forms, all accepted wherever a path to weights is taken:
  a `.pth` file          a published PyTorch checkpoint (Hara et al.'s layout),
                         converted on the fly (needs torch);
  a converted directory  `variables/` + `metadata.json`, written by
                         `--mode=convert` (`convert_checkpoint`) or `save_variables`;
  a training workdir     its `checkpoints/` (or that folder itself): the latest
                         step, or the best by `train.best_metric`.

`for_config` picks the weights of a mode: `checkpoint=` (`--checkpoint`) if
given, else in this order:
  1. the workdir's training checkpoint (`config.eval.checkpoint`: latest | best);
  2. `config.train.init_checkpoint`, if set (a relative path is looked up in the
     workdir first, then in the current directory), fitted to the model as
     training fits it (`fit`);
  3. `<workdir>/converted`, where `--mode=convert` writes.
An error lists every place it looked; weights that do not fit the config's model
are refused (`check_fits`). Every path may be local or a URI that
`gla_jax.data.storage` reaches (gs://...); a `.pth` file on a URI is copied to
a local temporary file to be read, since torch reads local files here.
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
import uuid

from absl import logging
import jax
import ml_collections
import orbax.checkpoint as ocp

from gla_jax import class_names as class_names_lib
from gla_jax import models
from gla_jax import weight_fitting
from gla_jax.data import storage
from gla_jax.models import building
from gla_jax.models import convert
from gla_jax.models import torch_files
from gla_jax.training import checkpoints

CONVERTED_DIR = 'converted'
VARIABLES_DIR = 'variables'
METADATA_FILE = 'metadata.json'


@dataclasses.dataclass(frozen=True)
class Weights:
  """Variables and where they came from.

  Attributes:
    variables: `{'params', 'batch_stats'}`.
    path: the file or directory they were read from.
    kind: 'training' (a workdir's checkpoint), 'converted' (a converted
      directory) or 'pth' (a PyTorch file converted on the fly).
    step: the training step, for kind 'training'.
    metadata: what the source says about them (preset, classes, config, ...).
  """
  variables: Dict[str, Any]
  path: str
  kind: str
  step: Optional[int] = None
  metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def class_names(self) -> Optional[List[str]]:
    """The names of the classifier's outputs that the weights carry, or None."""
    return class_names_lib.of_metadata(self.metadata, self.metadata.get('num_classes'))


# ------------------------------------------------------------------------------
# The converted-directory format.
# ------------------------------------------------------------------------------


def _checkpointer() -> ocp.Checkpointer:
  # Synchronous: `save` returns with everything on disk or raises, so a failed
  # save can be cleaned up without racing Orbax's background threads.
  return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def save_variables(directory, variables: Any, metadata: Optional[Dict[str, Any]] = None
                   ) -> str:
  """Writes `variables` (any pytree of arrays) and JSON `metadata` to `directory`.

  A save never leaves a half-written directory, nor destroys a complete one:
  it writes a hidden sibling and swaps it in with renames once it is complete.
  (On an object store a rename is a copy, so there the swap is not atomic; a
  reader still tells a complete directory by its metadata file.)

  Args:
    directory: the checkpoint directory; an existing checkpoint there is
      replaced only after the new one is completely written.
    variables: pytree of numpy or jax arrays, e.g. `{'params', 'batch_stats'}`.
    metadata: JSON-serialisable dict (e.g. `preset`, `num_classes`, `source`).

  Returns:
    The absolute path of the checkpoint directory.
  """
  directory = storage.absolute(directory)
  parent, name = storage.path(directory).parent, storage.path(directory).name
  text = json.dumps(metadata or {}, indent=2, sort_keys=True)   # Fail before any I/O.
  parent.mkdir(parents=True, exist_ok=True)
  # Staging and backup live next to `directory`, on the same file system, so
  # the swaps below are renames, not copies (on a local disk).
  staging = parent / f'.{name}.saving-{uuid.uuid4().hex[:8]}'
  try:
    staging.mkdir(parents=True)
    checkpointer = _checkpointer()
    try:
      checkpointer.save(os.fspath(staging / VARIABLES_DIR), variables)
    finally:
      checkpointer.close()
    (staging / METADATA_FILE).write_text(text)
  except BaseException:
    _remove_quietly(staging)
    raise
  backup = None
  if storage.exists(directory):
    backup = parent / f'.{name}.replaced-{uuid.uuid4().hex[:8]}'
    storage.path(directory).rename(backup)
  try:
    staging.rename(directory)
  except BaseException:
    if backup:
      backup.rename(directory)
    _remove_quietly(staging)
    raise
  if backup:
    _remove_quietly(backup)
  return directory


def _remove_quietly(directory) -> None:
  """Deletes a staging or backup directory; a failure only logs (the save's outcome stands)."""
  try:
    storage.remove_tree(directory)
  except OSError as error:
    logging.warning('Could not delete %s: %s', directory, error)


def is_converted_dir(path) -> bool:
  """Whether `path` is a directory written by `save_variables`."""
  return storage.is_file(storage.join(path, METADATA_FILE))


def load_variables(directory) -> Tuple[Any, Dict[str, Any]]:
  """Reads a checkpoint written by `save_variables`.

  Returns:
    `(variables, metadata)`: the pytree as saved (numpy arrays stay numpy,
    jax arrays come back as jax arrays) and the metadata dict.
  """
  directory = storage.absolute(directory)
  variables_dir = storage.join(directory, VARIABLES_DIR)
  metadata_path = storage.join(directory, METADATA_FILE)
  if not (storage.is_dir(variables_dir) and storage.is_file(metadata_path)):
    raise FileNotFoundError(
        f'{directory!r} is not a variables checkpoint: expected {VARIABLES_DIR}/ and '
        f'{METADATA_FILE} inside it (written by gla_jax.weights.save_variables, e.g. by '
        '`--mode=convert`).')
  metadata = json.loads(storage.read_text(metadata_path))
  # Process-local: a restore otherwise ends in a barrier over every process.
  checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler(),
                                  multiprocessing_options=checkpoints.process_local_options())
  try:
    variables = checkpointer.restore(variables_dir)
  finally:
    checkpointer.close()
  return variables, metadata


def convert_checkpoint(torch_path, model: models.ResNeXt3D, directory,
                       drop_head: bool = False, rng: Union[jax.Array, int] = 0, *,
                       class_names: Optional[Sequence[str]] = None,
                       config: Optional[ml_collections.ConfigDict] = None) -> Dict[str, Any]:
  """Reads a PyTorch checkpoint, converts it for `model` and saves it (`save_variables`).

  Args:
    torch_path: the PyTorch `.pth` file (Hara's layout or a bare state dict).
    model: the Flax model the weights are for.
    directory: where the converted variables are written.
    drop_head: replace the checkpoint's classifier by a fresh one for
      `model.num_classes` (see `convert.torch_to_flax`).
    rng: PRNG key or seed of the fresh head.
    class_names: the names of the classes, one per output; by default the
      shipped list of the file's class count (`class_names.shipped`), none
      with `drop_head`.
    config: the config the model was built with, stored so that the weights
      rebuild their model (`metadata['config']`).

  Returns:
    The metadata saved next to the variables.

  Raises:
    ValueError: `class_names` of another count than `model.num_classes`.
  """
  if class_names is not None:
    class_names = class_names_lib.check_count(class_names, model.num_classes, 'class_names')
  elif not drop_head:
    class_names = class_names_lib.shipped(model.num_classes)
  with storage.local_copy(torch_path) as local:   # torch reads local files here.
    raw = torch_files.load_torch_file(local)
  variables = convert.torch_to_flax(torch_files.state_dict_of(raw, torch_path), model,
                                    drop_head, rng)
  source = raw if isinstance(raw, dict) else {}
  metadata = {
      'preset': convert.preset_name(model),
      'num_classes': model.num_classes,
      'stage_sizes': list(model.stage_sizes),
      'cardinality': model.cardinality,
      'widths': list(model.widths),
      'stem_width': model.stem_width,
      'source': storage.absolute(torch_path),
      'source_arch': str(source['arch']) if 'arch' in source else None,
      'source_epoch': int(source['epoch']) if isinstance(source.get('epoch'), int) else None,
      'drop_head': drop_head,
      'class_names': class_names,
      'config': config.to_dict() if config is not None else None,
  }
  save_variables(directory, variables, metadata)
  return metadata


# ------------------------------------------------------------------------------
# Reading any form.
# ------------------------------------------------------------------------------


def read(path, model: Optional[models.ResNeXt3D] = None, *, which: str = 'latest',
         best_metric: str = 'video_accuracy', drop_head: bool = False,
         rng: Union[jax.Array, int] = 0) -> Weights:
  """The weights at `path`: a `.pth` file, a converted directory or a training workdir.

  Args:
    path: the file or directory.
    model: the network, needed to convert a `.pth` file.
    which: for a training workdir, 'latest' or 'best' (by `best_metric`).
    best_metric: the evaluation metric that ranks steps for 'best'.
    drop_head: for a `.pth` file, a fresh classifier instead of the file's.
    rng: PRNG key or seed of that fresh classifier.

  Raises:
    FileNotFoundError: `path` is none of the three, with what each needs.
  """
  path = os.fspath(path)
  if storage.is_file(path):
    if model is None:
      raise ValueError(f'{path!r} is a PyTorch file: converting it needs the model.')
    logging.info('Converting the PyTorch checkpoint %s on the fly.', path)
    with storage.local_copy(path) as local:   # torch reads local files here.
      state_dict = torch_files.load_torch_checkpoint(local)
    variables = convert.torch_to_flax(state_dict, model, drop_head, rng)
    names = None if drop_head else class_names_lib.shipped(model.num_classes)
    return Weights(variables, storage.absolute(path), 'pth', metadata={'class_names': names})
  if is_converted_dir(path):
    variables, metadata = load_variables(path)
    return Weights(variables, storage.absolute(path), 'converted', metadata=metadata)
  if checkpoints.has_training_checkpoints(path):
    step = checkpoints.training_step(path, which, best_metric)
    variables, metadata = checkpoints.load_training_variables(path, which, best_metric)
    return Weights(variables, storage.absolute(path), 'training', step, metadata)
  raise FileNotFoundError(
      f'{path!r} holds no weights: it is neither a PyTorch .pth file, nor a converted '
      f'directory (with {METADATA_FILE}, written by --mode=convert), nor a training workdir '
      f'(with {checkpoints.CHECKPOINTS_DIR}/<step>/).')


# ------------------------------------------------------------------------------
# Fitting weights to a model (fine-tuning).
# ------------------------------------------------------------------------------


# The fitting of weights to a model lives in `gla_jax.weight_fitting`; its two
# functions that training uses are reachable here too.
fit = weight_fitting.fit
head_paths = weight_fitting.head_paths


def init_checkpoint_path(config: ml_collections.ConfigDict, workdir: Optional[str]) -> str:
  """`config.train.init_checkpoint` as a path: a relative one is looked up in `workdir` first.

  So `init_checkpoint='converted'` means `<workdir>/converted`, where
  `--mode=convert` writes; a relative path not in the workdir is taken from
  the current directory. '' when the config has none.
  """
  source = str(config.train.init_checkpoint)
  if source and workdir and not storage.is_absolute(source):
    in_workdir = storage.join(workdir, source)
    if storage.exists(in_workdir):
      return in_workdir
  return source


def initial_variables(config: ml_collections.ConfigDict, model: models.ResNeXt3D,
                      rng: jax.Array, workdir: Optional[str] = None) -> Dict[str, Any]:
  """Random `{'params', 'batch_stats'}`, or `train.init_checkpoint`'s fitted to `model`.

  What training starts from: with an init checkpoint, every leaf it provides
  replaces the random one (`fit`; a fresh classifier with `train.drop_head`).
  """
  return _initialised(config, model, rng, workdir)[0]


def _initialised(config, model, rng, workdir) -> Tuple[Dict[str, Any], Optional[Weights]]:
  """`initial_variables` and the init checkpoint's weights as read (None without one)."""
  init_rng, head_rng = jax.random.split(rng)
  variables = models.init_variables(model, init_rng, building.clip_shape(config))
  source = init_checkpoint_path(config, workdir)
  if not source:
    return variables, None
  try:
    loaded = read(source, model, best_metric=config.train.best_metric,
                  drop_head=config.train.drop_head, rng=head_rng)
  except FileNotFoundError as error:
    raise FileNotFoundError(f'config.train.init_checkpoint={config.train.init_checkpoint!r}: '
                            f'{error} Fix the path.') from None
  variables = fit(variables, loaded.variables, head_paths(model), config.train.drop_head,
                  source)
  logging.info('Initialised from %s (drop_head=%s).', source, config.train.drop_head)
  return variables, loaded


# ------------------------------------------------------------------------------
# The weights of a mode.
# ------------------------------------------------------------------------------


def for_config(config: ml_collections.ConfigDict, workdir: str,
               model: Optional[models.ResNeXt3D] = None,
               checkpoint: Optional[str] = None) -> Weights:
  """The weights every mode uses: `checkpoint`, else see the module docstring for the order.

  Args:
    config: the whole config (`eval.checkpoint`, `train.best_metric`,
      `train.init_checkpoint`, `train.seed` for a fresh head).
    workdir: the run's workdir.
    model: the network (`building.create_model(config)` by default).
    checkpoint: weights to use instead of the workdir's (`--checkpoint`): a
      training workdir, a converted directory or a `.pth` file (`read`).

  Raises:
    FileNotFoundError: no weights anywhere (the message lists every place
      looked and how to make weights), or no weights at `checkpoint`.
    ValueError: weights that do not fit the model (`weight_fitting.check_fits`).
  """
  if model is None:
    model = building.create_model(config)
  if checkpoint:
    if not storage.exists(checkpoint):
      raise FileNotFoundError(f'--checkpoint={checkpoint}: no such file or directory; give a '
                              'training workdir, a converted directory or a PyTorch .pth file.')
    try:
      weights = read(checkpoint, model, which=config.eval.checkpoint,
                     best_metric=config.train.best_metric)
    except FileNotFoundError as error:
      raise FileNotFoundError(f'--checkpoint={checkpoint}: {error}') from None
    logging.info('Using the weights of --checkpoint=%s (%s).', checkpoint, weights.kind)
  else:
    weights = _of_workdir(config, workdir, model)
  weight_fitting.check_fits(weights.variables, model, weights.path, weights.metadata)
  return weights


def _of_workdir(config, workdir, model) -> Weights:
  """`for_config` without `checkpoint`: the order of the module docstring."""
  looked: List[str] = []
  if checkpoints.has_training_checkpoints(workdir):
    weights = read(workdir, which=config.eval.checkpoint, best_metric=config.train.best_metric)
    logging.info('Using the %s training checkpoint of %s (step %s).', config.eval.checkpoint,
                 workdir, weights.step)
    return weights
  looked.append(f'{storage.join(workdir, checkpoints.CHECKPOINTS_DIR)} (no training checkpoint)')
  source = init_checkpoint_path(config, workdir)
  if source:
    if storage.exists(source):
      variables, loaded = _initialised(config, model, jax.random.key(int(config.train.seed)),
                                       workdir)
      # A fresh classifier has none of the checkpoint's class names.
      names = None if config.train.drop_head else loaded.class_names
      return Weights(variables, loaded.path, loaded.kind, loaded.step, {'class_names': names})
    looked.append(f'config.train.init_checkpoint={config.train.init_checkpoint!r} (not in '
                  f'{workdir}, nor in {os.getcwd()})')
  converted = storage.join(workdir, CONVERTED_DIR)
  if is_converted_dir(converted):
    return read(converted)
  looked.append(f'{converted} (no converted weights)')
  raise FileNotFoundError(
      'No weights found. Looked in:\n' + '\n'.join(f'  {place}' for place in looked) +
      '\nTrain with --mode=train, or convert published weights with --mode=convert '
      '--torch_checkpoint=PATH.pth (same --workdir), or set --config.train.init_checkpoint '
      'to a .pth file, a converted directory or a training workdir.')
