"""The network a config describes: `create_model(config)` and the clip it takes.

`create_model` builds the `config.model` network (a `resnext.PRESETS` entry,
the compute dtype, the other keys as `ResNeXt3D` attributes); `clip_shape` is
the input clip of `config.data`; `check_clip_shape` traces the feature map
shapes of a clip through the network (Hara et al.'s strides) and refuses a
clip that cannot pass.

References:
  Hara, Kataoka, Satoh. "Can Spatiotemporal 3D CNNs Retrace the History of 2D
  CNNs and ImageNet?" CVPR 2018 (https://github.com/kenshohara/3D-ResNets-PyTorch).
"""
import functools
import math
from typing import Dict, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from gla_jax.models import resnext

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def create_model(config: ml_collections.ConfigDict) -> resnext.ResNeXt3D:
  """The `config.model` network.

  `preset` names a `models.PRESETS` entry, `dtype` the compute dtype; every
  other key of `config.model` is a `ResNeXt3D` attribute (`num_classes`, and
  e.g. `gated` where the config has it).
  """
  model_config = config.model
  if model_config.preset not in resnext.PRESETS:
    raise ValueError(f'Unknown model preset {model_config.preset!r} (config.model.preset); '
                     f'choose one of {sorted(resnext.PRESETS)}.')
  if model_config.dtype not in DTYPES:
    raise ValueError(f'Unknown config.model.dtype {model_config.dtype!r}; choose one of '
                     f'{sorted(DTYPES)} (parameters stay float32 either way).')
  kwargs = {key: value for key, value in model_config.items() if key not in ('preset', 'dtype')}
  # ConfigDict turns tuples into lists and nests dicts: give the module plain values.
  kwargs = {key: tuple(value) if isinstance(value, list) else value
            for key, value in kwargs.items()}
  return resnext.create(model_config.preset, dtype=DTYPES[model_config.dtype], **kwargs)


def clip_shape(config: ml_collections.ConfigDict, batch: int = 1) -> Tuple[int, ...]:
  """`(batch, data.num_frames, data.crop_size, data.crop_size, 3)`."""
  size = int(config.data.crop_size)
  return (batch, int(config.data.num_frames), size, size, 3)


def check_clip_shape(model: resnext.ResNeXt3D, num_frames: int,
                     crop_size: int) -> Dict[str, Tuple]:
  """Feature map shapes of `model` on a T x S x S clip; raises if the clip cannot pass.

  The stem keeps T and halves H, W (stride (1, 2, 2)), the max pool (if the
  model has it) halves all three and layer2..layer4 halve all three again
  (time by `model.temporal_strides`): total strides 16 in time and 32 in
  space for Hara's network (8 and 16 without the max pool).
  With Hara's symmetric padding every stride-2 layer maps a size n to
  ceil(n / 2), so any clip with T, S >= 1 reaches layer4 with at least
  1 x 1 x 1. A clip shorter or smaller than the strides runs, but layer4's
  3 x 3 x 3 windows then read partly zero padding: this logs a warning. The
  shapes are traced with `jax.eval_shape` (no compute), so a model variant
  with other strides is checked as it is.

  Returns:
    `{tap name: (T, H, W)}` of the feature maps.
  """
  if num_frames < 1 or crop_size < 1:
    raise ValueError(f'Clip {num_frames}x{crop_size}x{crop_size} (data.num_frames x '
                     'data.crop_size^2): both must be >= 1.')
  # init leaves 'intermediates' (the sown taps) out unless every collection is mutable.
  abstract = jax.eval_shape(
      functools.partial(model.init, train=False, mutable=True), jax.random.key(0),
      jax.ShapeDtypeStruct((1, num_frames, crop_size, crop_size, 3), jnp.float32))
  shapes = {name: tuple(value[0].shape[1:4])
            for name, value in abstract.get('intermediates', {}).items()
            if name in resnext.STAGE_NAMES + ('conv1',)}
  last = shapes.get(resnext.STAGE_NAMES[len(model.stage_sizes) - 1])
  if last is not None and min(last) < 1:
    raise ValueError(f'The last stage has a {last} feature map on a {num_frames}x{crop_size}x'
                     f'{crop_size} clip; raise data.num_frames or data.crop_size.')
  num_stages = len(model.stage_sizes)
  pool = 2 if model.max_pool else 1
  frame_stride = pool * math.prod(model.temporal_strides[:num_stages])
  pixel_stride = 2 * pool * math.prod(resnext.STAGE_STRIDES[:num_stages])
  if num_frames < frame_stride or crop_size < pixel_stride:
    logging.warning('A %dx%dx%d clip is smaller than the network\'s strides (%d frames, %d '
                    'pixels): layer4 (%s) is computed partly from zero padding.',
                    num_frames, crop_size, crop_size, frame_stride, pixel_stride, last)
  return shapes
