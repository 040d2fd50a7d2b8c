"""The methods of the localization comparison: their names, descriptions and compiled maps.

The registry (`method_names`, in table order, the baseline first): last-layer
Grad-CAM, Grad-CAM of each other stage, the global-local aggregations of all
stages (mean, max, product), the mean over all stages of each other gradient
method (`FUSED_METHODS`), the masked methods of the last layer
(`MASKED_METHODS`: a forward pass per channel) and a gated model's attention
gates. With several up-samplings every method appears once per up-sampling,
`<method>@<upsampling>`, except under the config's own `explain.upsampling`,
whose names carry no suffix. All maps of a batch come from one compiled
function: one forward and backward pass, plus the masked methods' forward
passes; each map exactly as `explain.explain` makes it with the same options.

References:
  Jiang et al. "LayerCAM", IEEE TIP 2021; Chattopadhay et al. "Grad-CAM++",
    WACV 2018; Fu et al. "Axiom-based Grad-CAM" (XGrad-CAM), BMVC 2020;
    Draelos, Carin. "HiResCAM", 2020; Muhammad, Yeasin. "Eigen-CAM", IJCNN 2020;
    Wang et al. "Score-CAM", CVPR-W 2020; Desai, Ramaswamy. "Ablation-CAM",
    WACV 2020.
"""
import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from gla_jax import models
from gla_jax.explain import attention
from gla_jax.explain.cam_methods import MASKED_METHODS
from gla_jax.explain import masked_cams
from gla_jax.models import input_normalization

BASELINE = f'gradcam:{models.STAGE_NAMES[-1]}'
AGGREGATIONS = ('mean', 'max', 'product')
GLOBAL_LOCAL = tuple(f'global-local:{how}' for how in AGGREGATIONS)
# Gradient methods (`attention.layer_map`) entering the table as the mean of the stage maps.
FUSED_METHODS = ('layercam', 'gradcam_pp', 'xgradcam', 'hirescam', 'gradcam_elementwise',
                 'eigencam')
# Masked methods (`masked_cams.masked_cam`, cam_methods.MASKED_METHODS): one forward pass per
# channel and clip, so of the last layer only (see `describe`).
# The first part of every name; `config.localize.methods` may name a kind for all its methods.
KINDS = ('gradcam', 'global-local', *FUSED_METHODS, *MASKED_METHODS, 'gate')
# config.localize.methods' default: every kind whose cost does not grow with the channels.
DEFAULT_KINDS = tuple(kind for kind in KINDS if kind not in MASKED_METHODS)
# Always compared, whatever config.localize.methods says: the verdict compares them.
REQUIRED = (BASELINE, *GLOBAL_LOCAL)

_TITLES = {'layercam': 'LayerCAM', 'gradcam_pp': 'Grad-CAM++', 'xgradcam': 'XGrad-CAM',
           'hirescam': 'HiResCAM (element-wise gradient x activation, summed)',
           'gradcam_elementwise': 'element-wise Grad-CAM (ReLU per channel)',
           'eigencam': 'Eigen-CAM (first principal component, no gradient)',
           'scorecam': 'Score-CAM', 'ablationcam': 'Ablation-CAM'}


def _gate_stages(model: models.ResNeXt3D) -> Tuple[str, ...]:
  """A gated model's gated stages, global first as the layers."""
  return tuple(s for s in models.stage_layer_names(model) if model.gated and s in model.gate_stages)


def registry(model: models.ResNeXt3D) -> Tuple[str, ...]:
  """Every method the comparison can compute for `model`, without up-sampling suffix."""
  layers = models.stage_layer_names(model)                       # global (deep) first
  names = [f'gradcam:{layer}' for layer in layers]
  names += [*GLOBAL_LOCAL, *(f'{method}:mean' for method in FUSED_METHODS)]
  names += [f'{method}:{layers[0]}' for method in MASKED_METHODS]
  if model.gated:
    names += [f'gate:{stage}' for stage in _gate_stages(model)] + ['gate:mean']
  return tuple(names)


def select(model: models.ResNeXt3D, methods: Sequence[str] = ()) -> Tuple[str, ...]:
  """The registry's names that `methods` (names or kinds; empty: all) picks, plus `REQUIRED`.

  Raises:
    ValueError: an entry that names no method of `model`, saying the choices.
  """
  known = registry(model)
  if not methods:
    return known
  unknown = [m for m in methods if m not in known and m not in KINDS]
  if unknown:
    raise ValueError(f'config.localize.methods: {unknown} name no method of this model; use '
                     f'names of {known} or kinds of {KINDS} (empty: all).')
  wanted = set(methods) | set(REQUIRED)
  return tuple(name for name in known if name in wanted or name.partition(':')[0] in wanted)


def upsampling_suffix(upsampling: str, own_upsampling: str) -> str:
  """'' for the config's own up-sampling, else '@<upsampling>'."""
  return '' if upsampling == own_upsampling else f'@{upsampling}'


def split_name(name: str, own_upsampling: str) -> Tuple[str, str]:
  """(registry name, up-sampling) of a table name."""
  method, _, upsampling = name.partition('@')
  return method, upsampling or own_upsampling


def method_names(model: models.ResNeXt3D, methods: Sequence[str] = (),
                 upsamplings: Sequence[str] = (), own_upsampling: str = 'half_pixel'
                 ) -> Tuple[str, ...]:
  """The compared methods of `model` in table order: per up-sampling (own first), baseline first.

  Args:
    methods: `config.localize.methods` (see `select`).
    upsamplings: `config.localize.upsamplings`; empty: `own_upsampling` only.
    own_upsampling: `config.explain.upsampling`, whose names carry no suffix.
  """
  chosen = select(model, methods)
  return tuple(name + upsampling_suffix(upsampling, own_upsampling)
               for upsampling in upsampling_order(upsamplings, own_upsampling)
               for name in chosen)


def upsampling_order(upsamplings: Sequence[str], own_upsampling: str) -> Tuple[str, ...]:
  """`upsamplings` with `own_upsampling` first (empty: it alone)."""
  upsamplings = tuple(upsamplings) or (own_upsampling,)
  return (*(u for u in upsamplings if u == own_upsampling),
          *(u for u in upsamplings if u != own_upsampling))


def describe(name: str) -> str:
  """One line saying what a method of `method_names` is (the up-sampling is its own column)."""
  name = name.partition('@')[0]
  kind, _, detail = name.partition(':')
  if name == BASELINE:
    return 'Grad-CAM of the last layer only (global)'
  if kind in MASKED_METHODS:
    return (f'{_TITLES[kind]} of {detail} alone (a forward pass per channel and clip: of all '
            'stages it would cost about twice the last layer, which has most channels)')
  if kind in FUSED_METHODS:
    return f'{_TITLES[kind]} of every stage, mean'
  return {
      'gradcam': f'Grad-CAM of {detail} alone',
      'global-local': f'Grad-CAM of every stage, {detail} (global-local)',
      'gate': 'mean of the attention gates' if detail == 'mean' else f'attention gate of {detail}',
  }[kind]


# ----------------------------------------------------------------------------
# The maps of every method.
# ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _compiled_method_maps(model: models.ResNeXt3D, pooling: str, normalization: str,
                          mean: Tuple[float, ...], std: Tuple[float, ...],
                          names: Tuple[str, ...], own_upsampling: str, chunk_size: int):
  """The jitted `(variables, uint8 video) -> (maps, logits, target)` of `method_maps`."""
  # layer_map would take any other pooling for 'time'; normalize checks its own option.
  if pooling not in attention.POOLINGS:
    raise ValueError(f'Unknown pooling {pooling!r} (config.explain.pooling); choose one of '
                     f'{attention.POOLINGS}.')
  layers = models.stage_layer_names(model)
  gate_stages = _gate_stages(model)
  wanted = [split_name(name, own_upsampling) for name in names]
  strides = models.tap_strides(model)

  def method_maps_fn(variables, video):
    video = models.normalize_video(video, mean, std)
    logits, target, activations, gradients = attention.tap_gradients(model, variables, video)
    size = video.shape[1:4]

    @functools.lru_cache(maxsize=None)
    def layer_map(name, method):
      # At the layer's own resolution: shared by every up-sampling.
      return attention.layer_map(activations[name], gradients[name], method, pooling)

    def resize(maps, tap, upsampling):
      return attention.upsample(maps, size, upsampling, strides[tap])

    @functools.lru_cache(maxsize=None)
    def stage_maps(method, upsampling):
      # Each stage's map exactly as explain.explain makes it, for one method.
      return jnp.stack([normalize(resize(layer_map(name, method), name, upsampling))
                        for name in layers])                          # [L, B, T, H, W]

    def normalize(maps):
      return attention.normalize(maps, normalization)

    def masked(method, tap, upsampling):
      resize_tap = functools.partial(resize, tap=tap, upsampling=upsampling)
      raw = masked_cams.masked_cam(model, variables, video, target, activations[tap], tap,
                                   method, resize_tap, chunk_size)
      return normalize(resize_tap(raw))

    @functools.lru_cache(maxsize=None)
    def gates(upsampling):
      # The gates' own maps, as Explanation.gate_maps has them.
      return jnp.stack([attention.minmax(resize(activations[f'gate_{stage}'], f'gate_{stage}',
                                                upsampling)) for stage in gate_stages])

    maps = {}
    for name, (method, upsampling) in zip(names, wanted):
      kind, _, detail = method.partition(':')
      if kind == 'gradcam':
        maps[name] = stage_maps('gradcam', upsampling)[layers.index(detail)]
      elif kind == 'global-local':
        maps[name] = attention.aggregate_maps(stage_maps('gradcam', upsampling), detail)
      elif kind in FUSED_METHODS:
        maps[name] = attention.aggregate_maps(stage_maps(kind, upsampling), 'mean')
      elif kind in MASKED_METHODS:
        maps[name] = masked(kind, detail, upsampling)
      else:                                                           # gate
        all_gates = gates(upsampling)
        maps[name] = (attention.aggregate_maps(all_gates, 'mean') if detail == 'mean'
                      else all_gates[gate_stages.index(detail)])
    return maps, logits, target

  return jax.jit(method_maps_fn)


def method_maps(model: models.ResNeXt3D, variables: Dict[str, Any], video: Any,
                mean: Sequence[float], std: Sequence[float], pooling: str = 'global',
                normalization: str = 'minmax', names: Optional[Sequence[str]] = None,
                own_upsampling: str = 'half_pixel', chunk_size: int = 32
                ) -> Tuple[Dict[str, jax.Array], jax.Array, jax.Array]:
  """The maps of the methods `names` for a batch of clips, from one compiled function.

  Args:
    model: a `models.ResNeXt3D`.
    variables: `{'params', 'batch_stats'}`.
    video: uint8 [B, T, H, W, 3] clips (the loader's), normalised on the device
      with `mean` and `std` (`config.data`).
    pooling, normalization: `explain.explain`'s per-layer options.
    names: names of `method_names` (None: every method of the registry, own up-sampling).
    own_upsampling: the up-sampling of the names without '@' (`config.explain.upsampling`).
    chunk_size: channels per batched forward pass of the masked methods
      (`config.explain.chunk_size`).

  Returns:
    ({name: [B, T, H, W] in [0, 1]}, logits [B, K], explained (argmax) class
    [B]). Compiled once per model, options and shape.
  """
  video = jnp.asarray(video)
  attention.check_clips(jax.ShapeDtypeStruct(video.shape, jnp.float32))   # Shape messages.
  input_normalization.check_uint8_clips(video, 'method_maps')
  constants = tuple(map(float, mean)), tuple(map(float, std))
  names = registry(model) if names is None else tuple(names)
  return _compiled_method_maps(model, pooling, normalization, *constants, names, own_upsampling,
                               int(chunk_size))(variables, video)
