"""Conversion of Hara et al.'s PyTorch 3D ResNeXt checkpoints to Flax variables.

The published weights (Kinetics-400, UCF101/HMDB51 fine-tunes) are `torch.save`
files of `{'epoch', 'arch', 'state_dict', 'optimizer'}` whose keys carry the
`module.` prefix of `nn.DataParallel`. The Flax model in `gla_jax.models`
names its submodules after those keys, so the conversion is a renaming plus a
layout change:

  conv1.weight                      -> params/stem_conv/kernel
  bn1.{weight,bias}                 -> params/stem_bn/{scale,bias}
  bn1.{running_mean,running_var}    -> batch_stats/stem_bn/{mean,var}
  layer{s}.{b}.conv{k}.weight       -> params/layer{s}_{b}/conv{k}/kernel
  layer{s}.{b}.bn{k}.*              -> layer{s}_{b}/bn{k}/*
  layer{s}.0.downsample.0.weight    -> params/layer{s}_0/downsample_conv/kernel
  layer{s}.0.downsample.1.*         -> layer{s}_0/downsample_bn/*
  fc.{weight,bias}                  -> params/fc/{kernel,bias}

Conv3d weights (O, I/groups, kT, kH, kW) become (kT, kH, kW, I/groups, O);
Linear weights (out, in) become (in, out); `num_batches_tracked` is ignored.

Key mismatches are the most frequent failure with these weights (wrong depth,
shortcut type, number of classes, prefix, code branch), so every mismatch
raises `CheckpointMismatchError` naming the keys and what they suggest.

Reading `.pth` files (`load_torch_checkpoint`, from `torch_files`) needs PyTorch;
the conversion of already loaded arrays does not.

References:
  Hara, Kataoka, Satoh. "Can Spatiotemporal 3D CNNs Retrace the History of 2D
  CNNs and ImageNet?" CVPR 2018 (https://github.com/kenshohara/3D-ResNets-PyTorch).
"""
import collections
import functools
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gla_jax import models
from gla_jax.models import torch_files
# Reading .pth files, re-exported: `convert.load_torch_checkpoint(path)` then `torch_to_flax`.
from gla_jax.models.torch_files import load_torch_checkpoint  # pylint: disable=unused-import

Shape = Tuple[int, ...]

# Blocks per stage of Hara's ResNeXt depths, for naming a checkpoint's depth.
KNOWN_DEPTHS = {
    (3, 4, 6, 3): 'resnext50',
    (3, 4, 23, 3): 'resnext101',
    (3, 8, 36, 3): 'resnext152',
}
# How many names an error message lists before it says "... and N more".
_MAX_LISTED = 10

# Flax submodule -> PyTorch module name; `layer{s}_{b}` -> `layer{s}.{b}` by regex.
_MODULE_TO_TORCH = {
    'stem_conv': 'conv1',
    'stem_bn': 'bn1',
    'downsample_conv': 'downsample.0',
    'downsample_bn': 'downsample.1',
}
_BLOCK_MODULE = re.compile(r'^(layer\d+)_(\d+)$')
# (Flax collection, Flax leaf) -> PyTorch tensor name.
_LEAF_TO_TORCH = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
_HEAD_PREFIX = 'fc.'


class CheckpointMismatchError(ValueError):
  """A checkpoint's keys or shapes do not fit the model."""


# ---------------------------------------------------------------------------
# Names and layouts.


def _torch_name(path: Tuple[str, ...]) -> str:
  """('params', 'layer1_0', 'downsample_bn', 'scale') -> 'layer1.0.downsample.1.weight'."""
  collection, *modules, leaf = path
  if (collection, leaf) not in _LEAF_TO_TORCH:
    raise ValueError(f'No PyTorch name for Flax variable {"/".join(path)}: only '
                     f'{sorted(_LEAF_TO_TORCH)} (collection, leaf) pairs are convertible.')
  names = [_MODULE_TO_TORCH.get(m) or _BLOCK_MODULE.sub(r'\1.\2', m) for m in modules]
  return '.'.join(names + [_LEAF_TO_TORCH[(collection, leaf)]])


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
  if array.ndim == 5:   # Conv3d (O, I/g, kT, kH, kW) -> (kT, kH, kW, I/g, O).
    return array.transpose(2, 3, 4, 1, 0)
  if array.ndim == 2:   # Linear (out, in) -> (in, out).
    return array.T
  return array


def _torch_axes(ndim: int) -> Tuple[int, ...]:
  """Axes that take a Flax kernel to PyTorch's layout (the inverse of `_to_flax_layout`)."""
  # (kT, kH, kW, I/g, O) -> (O, I/g, kT, kH, kW); (in, out) -> (out, in).
  return {5: (4, 3, 0, 1, 2), 2: (1, 0)}.get(ndim, tuple(range(ndim)))


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
  return array.transpose(_torch_axes(array.ndim))


def _flat_paths(tree) -> Dict[Tuple[str, ...], Any]:
  """{('params', 'stem_conv', 'kernel'): leaf, ...} of a nested dict of variables."""
  return {tuple(str(k.key) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def abstract_variables(model: models.ResNeXt3D) -> Dict[str, Any]:
  """`{'params', 'batch_stats'}` of `model` as `jax.ShapeDtypeStruct`s, without an init.

  Parameter shapes do not depend on the clip size, so a 1x1x1 clip is traced
  (`jax.eval_shape`: no FLOPs, no memory, even for ResNeXt-152).
  """
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 1, 1, 1, 3), jnp.float32))
  return {'params': shapes['params'], 'batch_stats': shapes['batch_stats']}


def expected_torch_shapes(model: models.ResNeXt3D,
                          abstract: Optional[Mapping[str, Any]] = None) -> Dict[str, Shape]:
  """`{torch key: shape}` of the PyTorch state dict (no `num_batches_tracked`) fitting `model`.

  Args:
    model: the Flax model.
    abstract: `abstract_variables(model)`, if the caller has it already.
  """
  if abstract is None:
    abstract = abstract_variables(model)
  return {_torch_name(path): tuple(leaf.shape[i] for i in _torch_axes(len(leaf.shape)))
          for path, leaf in _flat_paths(abstract).items()}


# ---------------------------------------------------------------------------
# Diagnosis of mismatches.


def _listing(names: List[str], limit: int = _MAX_LISTED) -> str:
  shown = ', '.join(names[:limit])
  return shown + (f', ... and {len(names) - limit} more' if len(names) > limit else '')


def _blocks_per_stage(keys: Iterable[str]) -> Tuple[int, ...]:
  """(3, 4, 23, 3) from keys `layer{s}.{b}.*`; 0 for a stage without keys."""
  blocks = collections.defaultdict(int)
  for key in keys:
    match = re.match(r'^layer(\d+)\.(\d+)\.', key)
    if match:
      stage, block = int(match.group(1)), int(match.group(2))
      blocks[stage] = max(blocks[stage], block + 1)
  return tuple(blocks[s] for s in range(1, max(blocks, default=0) + 1))


def _describe_depth(sizes: Tuple[int, ...]) -> str:
  name = KNOWN_DEPTHS.get(sizes)
  return f'{sizes} ({name})' if name else f'{sizes} (not a published ResNeXt depth)'


def _suggestions(expected: Mapping[str, Shape], found: Mapping[str, Shape],
                 missing: List[str], unexpected: List[str], misshaped: List[str],
                 model: models.ResNeXt3D) -> List[str]:
  """What the mismatched keys suggest, most specific first."""
  hints = []
  roots = {key.split('.')[0] for key in expected}
  foreign = sorted({key.split('.')[0] for key in unexpected} - roots
                   - {f'layer{s}' for s in range(1, 10)})
  if foreign:
    prefixes = {key.split('.')[0] for key in found}
    strip = (f" All keys start with '{foreign[0]}.': if it wraps a Hara ResNeXt, strip "
             'that prefix from the state dict first.') if len(prefixes) == 1 else ''
    hints.append(
        f'Keys under {", ".join(repr(p + ".") for p in foreign)} do not follow Hara\'s naming '
        f'({", ".join(sorted(roots))}): this is not a Hara 3D ResNeXt checkpoint '
        '(3D-ResNets-PyTorch), or it comes from a different code branch or wrapper.' + strip)

  found_sizes = _blocks_per_stage(found)
  model_sizes = tuple(model.stage_sizes)
  if any(found_sizes) and found_sizes != model_sizes:
    preset = KNOWN_DEPTHS.get(found_sizes)
    fix = (f"models.create('{preset}', ...)" if preset
           else f'ResNeXt3D(stage_sizes={found_sizes}, ...)')
    hints.append(
        f'Wrong depth: the checkpoint has {_describe_depth(found_sizes)} blocks per stage, '
        f'the model {_describe_depth(model_sizes)}. Build the model as {fix}.')

  missing_set = set(missing)
  # A first block that is present but has no projection conv: Hara's type A
  # shortcut is a function (strided identity, zero-padded channels), not a module.
  stages_without_projection = [
      key.split('.')[0] for key in missing if key.endswith('.0.downsample.0.weight')
      and key.replace('downsample.0', 'conv1') in found]
  if stages_without_projection:
    hints.append(
        f'No shortcut projection conv in {", ".join(stages_without_projection)} '
        '(`layer{s}.0.downsample.0.weight`): a shortcut type A checkpoint (parameter-free '
        'zero-padding shortcut). Type A is not supported, only type B (1x1x1 conv + BN); '
        'the published ResNeXt weights are type B.')
  basic = [key for key in missing if re.match(r'^layer\d+\.\d+\.conv3\.weight$', key)
           and key.replace('conv3', 'conv2') in found]
  if basic and len(basic) == sum(1 for key in expected if key.endswith('.conv3.weight')):
    hints.append('No block has a conv3: a ResNet with basic blocks (ResNet-18/34), not a '
                 'ResNeXt bottleneck network.')

  for key in misshaped:
    want, got = expected[key], found[key]
    if key.endswith('.conv2.weight') and len(got) == 5 and got[1]:
      # Hara's grouped conv2 is (cardinality * planes / 32, planes / 32, 3, 3, 3):
      # out / in-per-group is the cardinality whatever the width.
      groups = got[0] // got[1]
      if groups != model.cardinality and got[0] % got[1] == 0:
        fix = ('The conv2 is ungrouped: a ResNet or WideResNet checkpoint, not a ResNeXt.'
               if groups == 1 else f'Build the model with cardinality={groups}.')
        hints.append(
            f'Different cardinality: {key} is {got} ({got[0]} channels in groups of '
            f'{got[1]}), so cardinality {groups}; the model has cardinality '
            f'{model.cardinality}, expecting {want}. {fix}')
      else:
        hints.append(f'Different bottleneck width: {key} is {got}, the model expects '
                     f'{want}. Check `widths` (planes per stage).')
      break   # One conv2 tells the story; the others repeat it.

  head = [key for key in misshaped if key.startswith(_HEAD_PREFIX)]
  if 'fc.weight' in head and found['fc.weight'][0] != expected['fc.weight'][0]:
    only = not (missing_set or unexpected or set(misshaped) - set(head))
    hints.append(
        f"{'Only the head differs: ' if only else ''}the checkpoint has "
        f"{found['fc.weight'][0]} classes, the model {expected['fc.weight'][0]}. To fine-tune "
        'from it, drop its head: `torch_to_flax(..., drop_head=True)` / '
        '`convert_checkpoint(..., drop_head=True)` (the config option to drop the head); '
        f"or build the model with num_classes={found['fc.weight'][0]} to use it as is.")
  if not hints:
    hints.append('No known pattern: compare the keys above with the model configuration '
                 f'(stage_sizes={model_sizes}, cardinality={model.cardinality}, '
                 f'widths={tuple(model.widths)}, stem_width={model.stem_width}).')
  return hints


def check_state_shapes(found: Mapping[str, Shape], model: models.ResNeXt3D,
                       drop_head: bool = False,
                       abstract: Optional[Mapping[str, Any]] = None) -> None:
  """Raises `CheckpointMismatchError` unless `found` fits `model` exactly.

  Needs only shapes, so whole published checkpoints can be checked without
  their weights (e.g. from a PyTorch model on the meta device).

  Args:
    found: `{torch key: shape}` without the `module.` prefix;
      `num_batches_tracked` entries are ignored.
    model: the Flax model.
    drop_head: ignore `fc.*` on both sides.
    abstract: `abstract_variables(model)`, if the caller has it already.
  """
  expected = expected_torch_shapes(model, abstract)
  found = {key: tuple(shape) for key, shape in found.items()
           if not key.endswith('num_batches_tracked')}
  if drop_head:
    expected = {k: v for k, v in expected.items() if not k.startswith(_HEAD_PREFIX)}
    found = {k: v for k, v in found.items() if not k.startswith(_HEAD_PREFIX)}
  missing = sorted(set(expected) - set(found), key=_natural_key)
  unexpected = sorted(set(found) - set(expected), key=_natural_key)
  misshaped = sorted((k for k in set(expected) & set(found) if expected[k] != found[k]),
                     key=_natural_key)
  if not (missing or unexpected or misshaped):
    return
  lines = [f'Checkpoint does not fit {_describe_model(model)}:']
  if missing:
    lines.append(f'  {len(missing)} missing keys (in the model, not in the checkpoint): '
                 f'{_listing(missing)}')
  if unexpected:
    lines.append(f'  {len(unexpected)} unexpected keys (in the checkpoint, not in the '
                 f'model): {_listing(unexpected)}')
  if misshaped:
    lines.append(f'  {len(misshaped)} keys with the wrong shape (PyTorch layout):')
    lines += [f'    {k}: expected {expected[k]}, found {found[k]}'
              for k in misshaped[:_MAX_LISTED]]
    if len(misshaped) > _MAX_LISTED:
      lines.append(f'    ... and {len(misshaped) - _MAX_LISTED} more')
  lines.append('What this suggests:')
  lines += ['  - ' + hint for hint in _suggestions(expected, found, missing, unexpected,
                                                    misshaped, model)]
  raise CheckpointMismatchError('\n'.join(lines))


def _natural_key(key: str):
  """Sorts layer3.10 after layer3.9."""
  return [int(part) if part.isdigit() else part for part in key.split('.')]


def _describe_model(model: models.ResNeXt3D) -> str:
  preset = preset_name(model) or 'ResNeXt3D'
  return (f'{preset}(stage_sizes={tuple(model.stage_sizes)}, cardinality={model.cardinality},'
          f' widths={tuple(model.widths)}, stem_width={model.stem_width}, '
          f'num_classes={model.num_classes})')


# ---------------------------------------------------------------------------
# Conversion.


def torch_to_flax(state: Mapping[str, Any], model: models.ResNeXt3D, drop_head: bool = False,
                  rng: Union[jax.Array, int] = 0) -> Dict[str, Any]:
  """Converts a Hara ResNeXt state dict to the variables of `model`.

  Args:
    state: `{torch key: array}` as from `load_torch_checkpoint` (numpy arrays,
      or anything `np.asarray` takes, e.g. CPU tensors); a `module.` prefix is
      stripped and `num_batches_tracked` is ignored.
    model: the Flax model the variables are for.
    drop_head: ignore the checkpoint's `fc.*` and initialise a fresh head for
      `model.num_classes` (fine-tuning a Kinetics-400 checkpoint to UCF101).
    rng: PRNG key or integer seed of the fresh head (only with `drop_head`).

  Returns:
    `{'params', 'batch_stats'}` of float32 numpy arrays, in the tree structure
    of `models.init_variables(model, ...)`.

  A gated model (`model.gated`) takes the backbone from the checkpoint and
  initialises its gates and gated classifiers fresh from `rng`; with
  `gate_head='average'` the checkpoint's `fc` is kept (unless `drop_head`).

  Raises:
    CheckpointMismatchError: missing, unexpected or mis-shaped keys; the
      message lists them and what they suggest.
  """
  if model.gated:
    return _torch_to_gated(state, model, drop_head, rng)
  state = {torch_files.strip_prefix(key): value for key, value in state.items()
           if not key.endswith('num_batches_tracked')}
  abstract = abstract_variables(model)
  check_state_shapes({key: np.shape(value) for key, value in state.items()}, model, drop_head,
                     abstract)
  flat = {}
  for path, leaf in _flat_paths(abstract).items():
    name = _torch_name(path)
    if drop_head and name.startswith(_HEAD_PREFIX):
      continue
    # np.array copies: the variables never alias the caller's state dict.
    flat[path] = np.array(_to_flax_layout(np.asarray(state[name], np.float32)))
    assert flat[path].shape == leaf.shape, (path, flat[path].shape, leaf.shape)
  if drop_head:
    if isinstance(rng, (int, np.integer)):
      rng = jax.random.key(rng)
    in_features = abstract['params']['fc']['kernel'].shape[0]
    # The model's head is a default nn.Dense: initialising one alone gives the
    # same distribution without initialising (or compiling) the backbone.
    head = nn.Dense(model.num_classes).init(rng, jnp.zeros((1, in_features)))
    for leaf_name, value in head['params'].items():
      flat[('params', 'fc', leaf_name)] = np.asarray(value, np.float32)
  variables = traverse_util.unflatten_dict(flat)
  return {'params': variables['params'], 'batch_stats': variables['batch_stats']}


def _torch_to_gated(state: Mapping[str, Any], model: models.ResNeXt3D, drop_head: bool,
                    rng: Union[jax.Array, int]) -> Dict[str, Any]:
  """`torch_to_flax` for a gated model: converted backbone, fresh gates and gated head."""
  if isinstance(rng, (int, np.integer)):
    rng = jax.random.key(rng)
  keeps_fc = model.gate_head == 'average' and not drop_head
  backbone = torch_to_flax(state, model.clone(gated=False), drop_head=not keeps_fc, rng=rng)
  # Parameter shapes do not depend on the clip size: a 1x1x1 clip initialises
  # the gates for almost no compute.
  fresh = jax.jit(functools.partial(model.init, train=False))(
      rng, jnp.zeros((1, 1, 1, 1, 3), jnp.float32))
  flat = {path: np.asarray(leaf, np.float32) for path, leaf in _flat_paths(
      {'params': fresh['params'], 'batch_stats': fresh['batch_stats']}).items()}
  for path, value in _flat_paths(backbone).items():
    if path in flat and (keeps_fc or path[1] != 'fc'):
      flat[path] = value
  variables = traverse_util.unflatten_dict(flat)
  return {'params': variables['params'], 'batch_stats': variables['batch_stats']}


def flax_to_torch(variables: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """The inverse of `torch_to_flax`: `{torch key: float32 numpy array}`, no `module.` prefix.

  Works for any subtree whose submodules follow the model's naming (a whole
  `ResNeXt3D`, or a single `Bottleneck`: `conv1.weight`, `downsample.0.weight`).
  Collections other than `params` and `batch_stats` are ignored. No
  `num_batches_tracked` entries are written (PyTorch accepts their absence).
  """
  return {_torch_name(path): np.array(_to_torch_layout(np.asarray(leaf, np.float32)))
          for path, leaf in _flat_paths({c: variables[c] for c in ('params', 'batch_stats')
                                         if c in variables}).items()}


def preset_name(model: models.ResNeXt3D) -> Optional[str]:
  """The `models.PRESETS` name whose architecture `model` has, if any."""
  def arch(m):
    return (tuple(m.stage_sizes), m.cardinality, tuple(m.widths), m.stem_width)
  return next((name for name, preset in models.PRESETS.items() if arch(preset()) == arch(model)),
              None)
