"""Sanity checks of saliency maps: cascading randomisation and the similarity of two maps.

A method whose maps barely change when the network's weights are replaced by
random ones, from the classifier down to the stem, explains the input rather
than the model (Adebayo et al.). `cascade_stages` gives the order, `randomize`
re-initialises the chosen modules, and `spearman` and `ssim` measure how
alike the maps of the trained and the randomised network are.

Reference:
  Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. "Sanity Checks for Saliency
    Maps", NeurIPS 2018 (cascading randomisation from the top layer; Spearman
    rank correlation with and without absolute values; SSIM).
  Wang, Bovik, Sheikh, Simoncelli. "Image Quality Assessment: From Error
    Visibility to Structural Similarity", IEEE TIP 2004 (SSIM).
"""
import functools
from typing import Any, Dict, Mapping, Sequence, Tuple

import jax
import numpy as np

from gla_jax import models

CLASSIFIER = 'classifier'
STEM = 'stem'
# skimage.metrics.structural_similarity's defaults (uniform window, sample covariance).
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
# float32 rounding of normalised maps: values this far outside [0, 1] are clipped, not refused.
_ROUNDING = 1e-5

Stage = Tuple[str, Tuple[str, ...]]


def _module_group(module: str) -> str:
  """The cascade stage of a top-level module: classifier, layer<s> (with its gate) or stem."""
  stage = models.module_stage(module)
  if stage == 0:
    return STEM
  if stage is not None:
    return f'layer{stage}'
  if module.startswith('gate_layer'):
    return module[len('gate_'):]
  if module == 'fc' or module.startswith('gated_fc'):
    return CLASSIFIER
  raise ValueError(f'Top-level module {module!r} is of no cascade stage; expected stem_conv, '
                   'stem_bn, layer<s>_<b>, gate_layer<s>, fc or gated_fc*: pass the params of a '
                   '`models.ResNeXt3D`.')


def cascade_stages(params: Mapping[str, Any]) -> Tuple[Stage, ...]:
  """(stage, its top-level modules) from the top: classifier, layer4 .. layer1, stem.

  A gated model's `gate_layer<s>` goes with layer<s>. Adebayo et al. randomise
  cumulatively in this order: stage k of the cascade re-initialises the first
  k + 1 stages.

  Args:
    params: the `params` of a `models.ResNeXt3D` (or its whole variables).
  """
  params = params.get('params', params)
  groups: Dict[str, list] = {}
  for module in params:
    groups.setdefault(_module_group(module), []).append(module)
  layers = sorted((g for g in groups if g.startswith('layer')), key=lambda g: -int(g[5:]))
  order = [g for g in (CLASSIFIER, *layers, STEM) if g in groups]
  return tuple((group, tuple(sorted(groups[group]))) for group in order)


@functools.lru_cache(maxsize=2)
def _fresh_variables(model: models.ResNeXt3D, key_data: Tuple[int, ...]) -> Dict[str, Any]:
  """`models.init_variables(model, key)`, once per model and key (a cascade asks 6 times)."""
  rng = jax.random.wrap_key_data(np.asarray(key_data, np.uint32))
  return models.init_variables(model, rng)


def randomize(variables: Mapping[str, Any], stages: Sequence[str], rng: jax.Array,
              model: models.ResNeXt3D) -> Dict[str, Any]:
  """`variables` with the modules of `stages` re-initialised (`models.init_variables(model, rng)`).

  The params and batch-norm statistics of every module of the named stages
  (`cascade_stages` names) are the fresh initialisation's; every other
  module keeps its values (the same arrays).

  Raises:
    ValueError: a stage name that `cascade_stages` does not give.
  """
  known = dict(cascade_stages(variables['params']))
  unknown = [stage for stage in stages if stage not in known]
  if unknown:
    raise ValueError(f'Unknown cascade stages {unknown}; choose from {tuple(known)}.')
  modules = {module for stage in stages for module in known[stage]}
  raw = (jax.random.key_data(rng) if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
         else rng)                                            # A legacy uint32 PRNGKey.
  fresh = _fresh_variables(model, tuple(np.asarray(raw).ravel().tolist()))
  result = {}
  for collection in ('params', 'batch_stats'):
    tree = dict(variables.get(collection, {}))
    for module in modules & set(tree):
      tree[module] = fresh[collection][module]
    result[collection] = tree
  return result


def _rows(a: Any, b: Any, what: str) -> Tuple[np.ndarray, np.ndarray]:
  """`a` and `b` as float64 [N, M] (one flattened map per row); the same shape required."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim < 2:
    raise ValueError(f'{what}: maps of shapes {a.shape} and {b.shape}; pass two arrays of the '
                     'same shape [N, ...], one map per row.')
  return a.reshape(len(a), -1), b.reshape(len(b), -1)


def average_ranks(values: np.ndarray) -> np.ndarray:
  """Ranks 1..M along the last axis of [N, M], ties given their average rank (rankdata's)."""
  values = np.asarray(values)
  order = np.argsort(values, axis=-1, kind='stable')
  ordered = np.take_along_axis(values, order, axis=-1)
  count = values.shape[-1]
  position = np.broadcast_to(np.arange(count), values.shape)
  starts = np.ones(values.shape, bool)
  starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
  ends = np.ones(values.shape, bool)
  ends[..., :-1] = starts[..., 1:]
  first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
  last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, count), -1), -1), -1)
  ranks = np.empty(values.shape, np.float64)
  np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
  return ranks


def spearman(a: Any, b: Any, absolute: bool = False) -> np.ndarray:
  """Spearman rank correlation of each pair of maps: [N, ...] x [N, ...] -> [N].

  The Pearson correlation of the average ranks (ties share theirs, as
  scipy.stats.spearmanr); with `absolute`, of |a| and |b| (Adebayo et al.
  report both; for maps in [0, 1] they coincide). NaN where a map is constant.
  """
  a, b = _rows(a, b, 'spearman')
  if absolute:
    a, b = np.abs(a), np.abs(b)
  ranks_a, ranks_b = average_ranks(a), average_ranks(b)
  ranks_a -= ranks_a.mean(axis=1, keepdims=True)
  ranks_b -= ranks_b.mean(axis=1, keepdims=True)
  norm = np.sqrt((ranks_a ** 2).sum(axis=1) * (ranks_b ** 2).sum(axis=1))
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(norm > 0, (ranks_a * ranks_b).sum(axis=1) / norm, np.nan)


def _window_means(images: np.ndarray, size: int) -> np.ndarray:
  """Means of the size x size windows inside [..., H, W]: [..., H - size + 1, W - size + 1]."""
  padded = np.zeros(images.shape[:-2] + (images.shape[-2] + 1, images.shape[-1] + 1))
  padded[..., 1:, 1:] = images.cumsum(-2).cumsum(-1)          # Summed-area table.
  sums = (padded[..., size:, size:] - padded[..., :-size, size:] - padded[..., size:, :-size]
          + padded[..., :-size, :-size])
  return sums / size ** 2


def frame_ssim(a: Any, b: Any) -> np.ndarray:
  """SSIM of each pair of frames [..., H, W] in [0, 1] -> [...].

  skimage.metrics.structural_similarity with its defaults and data_range=1: a
  7 x 7 uniform window, K1 = 0.01, K2 = 0.03, sample (co)variances, the mean
  over the window positions at least 3 pixels from the border.

  Raises:
    ValueError: frames of different shapes, smaller than 7 x 7, or values outside [0, 1].
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim < 2:
    raise ValueError(f'ssim: frames of shapes {a.shape} and {b.shape}; pass two arrays of the '
                     'same shape [..., H, W].')
  if min(a.shape[-2:]) < SSIM_WINDOW:
    raise ValueError(f'ssim: frames of {a.shape[-2]} x {a.shape[-1]} pixels are smaller than the '
                     f'{SSIM_WINDOW} x {SSIM_WINDOW} window; explain larger clips.')
  for maps in (a, b):
    if maps.size and (maps.min() < -_ROUNDING or maps.max() > 1 + _ROUNDING
                      or not np.isfinite(maps).all()):
      raise ValueError(f'ssim: map values in [{maps.min():g}, {maps.max():g}]; SSIM here takes '
                       'maps in [0, 1] (data_range=1): min-max normalise them first.')
  a, b = np.clip(a, 0, 1), np.clip(b, 0, 1)
  samples = SSIM_WINDOW ** 2
  sample_correction = samples / (samples - 1)
  mean_a, mean_b = _window_means(a, SSIM_WINDOW), _window_means(b, SSIM_WINDOW)
  var_a = sample_correction * (_window_means(a * a, SSIM_WINDOW) - mean_a ** 2)
  var_b = sample_correction * (_window_means(b * b, SSIM_WINDOW) - mean_b ** 2)
  covariance = sample_correction * (_window_means(a * b, SSIM_WINDOW) - mean_a * mean_b)
  c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2                           # data_range = 1
  similarity = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)
                / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2)))
  return similarity.mean(axis=(-2, -1))


def ssim(a: Any, b: Any) -> np.ndarray:
  """SSIM of each pair of clip maps [N, T, H, W] in [0, 1]: `frame_ssim` averaged over T -> [N]."""
  a, b = np.asarray(a), np.asarray(b)
  if a.ndim != 4:
    raise ValueError(f'ssim: maps of shape {a.shape}; pass clip maps [N, T, H, W].')
  return frame_ssim(a, b).mean(axis=1)
