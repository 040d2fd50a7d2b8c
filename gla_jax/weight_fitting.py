"""Whether weights fit a model: `fit` for fine-tuning and `check_fits`, the strict check.

`fit` is what training's `train.init_checkpoint` goes through (a fresh
classifier with `drop_head`, fresh attention gates for a plain backbone);
`check_fits` is what weights used as they are (evaluation, explanations)
must pass: every variable of the model, with its shape, and nothing else.
Both name what differs and the fix.
"""
import functools
from typing import Any, Dict, List, Optional, Tuple

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from gla_jax import models
from gla_jax.models import convert

# Leaves listed in a mismatch error.
_MAX_LISTED = 8
# Variable shapes by the repr of the model (`_shapes`).
_SHAPES: Dict[str, Dict[Tuple[str, ...], Tuple[int, ...]]] = {}


def _flat(tree: Any) -> Dict[Tuple[str, ...], Any]:
  return traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _shapes(model: models.ResNeXt3D) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
  """The shape of every variable of `model`, by path (traced once per architecture)."""
  key = repr(model)   # Every attribute of the module.
  if key not in _SHAPES:
    abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                              jax.ShapeDtypeStruct((1, 1, 1, 1, 3), jnp.float32))
    _SHAPES[key] = {path: leaf.shape for path, leaf in _flat(
        {'params': abstract['params'], 'batch_stats': abstract['batch_stats']}).items()}
  return _SHAPES[key]


def head_paths(model: models.ResNeXt3D) -> set:
  """Paths of the variables whose shape depends on the class count (the classifiers)."""
  a, b = _shapes(model), _shapes(model.clone(num_classes=model.num_classes + 1))
  return {path for path in a if a[path] != b.get(path)}


def _listing(paths) -> str:
  names = sorted('/'.join(p) for p in paths)
  return ', '.join(names[:_MAX_LISTED]) + (
      f', ... and {len(names) - _MAX_LISTED} more' if len(names) > _MAX_LISTED else '')


def fit(fresh: Dict[str, Any], loaded: Dict[str, Any], heads: set, drop_head: bool,
        source: str) -> Dict[str, Any]:
  """`fresh` variables with every leaf that `loaded` provides, checked leaf by leaf.

  Args:
    fresh: freshly initialised `{'params', 'batch_stats'}` of the model.
    loaded: variables read from a checkpoint.
    heads: paths of the class-count-dependent leaves (`head_paths`).
    drop_head: keep the fresh classifier (`heads`) instead of the loaded one.
    source: the checkpoint's path, for error messages.

  Backbone leaves must all be present with the model's shapes. Leaves outside
  the backbone that the checkpoint lacks (attention gates added to a plain
  backbone) stay fresh.
  """
  fresh_flat = _flat({c: fresh[c] for c in ('params', 'batch_stats')})
  loaded_flat = _flat({c: loaded[c] for c in ('params', 'batch_stats') if c in loaded})
  if drop_head:
    # The checkpoint's classifier goes too where the model names its own otherwise (a plain
    # checkpoint's `fc` fitted into a gated model whose classifier is `gated_fc`).
    loaded_flat = {p: v for p, v in loaded_flat.items() if p not in heads and not (
        p not in fresh_flat and (p[1] == 'fc' or p[1].startswith('gated_fc')))}
  missing = [p for p in fresh_flat if p not in loaded_flat
             and not (drop_head and p in heads) and models.module_stage(p[1]) is not None]
  missing += [p for p in heads if not drop_head and p not in loaded_flat]
  unexpected = [p for p in loaded_flat if p not in fresh_flat]
  misshaped = [p for p in loaded_flat if p in fresh_flat
               and np.shape(loaded_flat[p]) != np.shape(fresh_flat[p])]
  if missing or unexpected or misshaped:
    lines = [f'config.train.init_checkpoint={source!r} does not fit the model:',
             *_differences(missing, unexpected, misshaped,
                           lambda p: (np.shape(loaded_flat[p]), np.shape(fresh_flat[p])))]
    if misshaped and all(p in heads for p in misshaped):
      lines.append('Only the classifier differs: set config.train.drop_head=True to fine-tune '
                   'to the new class count.')
    else:
      lines.append('Check config.model (preset, num_classes, gating) against the checkpoint.')
    raise ValueError('\n'.join(lines))
  merged = {p: np.asarray(loaded_flat.get(p, v), np.float32) if p in loaded_flat else v
            for p, v in fresh_flat.items()}
  variables = traverse_util.unflatten_dict(merged)
  return {'params': variables['params'], 'batch_stats': variables['batch_stats']}


def _differences(missing, unexpected, misshaped, shapes) -> List[str]:
  """Lines listing missing, unexpected and misshaped leaves; `shapes(p)`: (found, wanted)."""
  lines = []
  if missing:
    lines.append(f'  {len(missing)} missing: {_listing(missing)}')
  if unexpected:
    lines.append(f'  {len(unexpected)} unexpected: {_listing(unexpected)}')
  if misshaped:
    lines.append(f'  {len(misshaped)} with another shape: ' + ', '.join(
        f'{"/".join(p)} {shapes(p)[0]} vs {shapes(p)[1]}' for p in misshaped[:_MAX_LISTED]))
  return lines


def check_fits(variables: Dict[str, Any], model: models.ResNeXt3D, source: str,
               metadata: Optional[Dict[str, Any]] = None) -> None:
  """Raises unless `variables` hold every variable of `model` with its shape, and nothing more.

  Args:
    variables: `{'params', 'batch_stats'}` as read.
    model: the network of the config.
    source: where the variables come from, for the message.
    metadata: what the source says it holds (`preset`, `num_classes`), for the fix.

  Raises:
    ValueError: what is missing, unexpected or of another shape, and the fix.
  """
  want = _shapes(model)
  got = {path: np.shape(leaf) for path, leaf in
         _flat({c: variables[c] for c in ('params', 'batch_stats') if c in variables}).items()}
  missing = [p for p in want if p not in got]
  unexpected = [p for p in got if p not in want]
  misshaped = [p for p in got if p in want and tuple(got[p]) != tuple(want[p])]
  if not (missing or unexpected or misshaped):
    return
  preset = convert.preset_name(model) or 'custom'
  lines = [f'The weights at {source} do not fit the model of the config ({preset!r}, '
           f'{model.num_classes} classes):',
           *_differences(missing, unexpected, misshaped,
                         lambda p: (tuple(got[p]), tuple(want[p])))]
  metadata = metadata or {}
  if metadata.get('preset') or metadata.get('num_classes'):
    lines.append(f'They are of a {metadata.get("preset")!r} model with '
                 f'{metadata.get("num_classes")} classes: use the config they were made with '
                 '(--config.model.preset, --config.model.num_classes), or other weights.')
  else:
    lines.append('Check config.model (preset, num_classes, gating) against the weights, or '
                 'use other weights.')
  raise ValueError('\n'.join(lines))
