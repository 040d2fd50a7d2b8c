"""The 3D ResNeXt of Hara et al. in Flax, its attention gates, its convolution and weights.

`from gla_jax import models` gives the network (`models.ResNeXt3D101`, `models.create`,
the tap names, `models.normalize_video` for its uint8 input); `models.convert` maps
published PyTorch weights onto it.
"""
from gla_jax.models.input_normalization import normalize_video
from gla_jax.models.resnext import (BN_EPSILON, BN_MOMENTUM, PRESETS, STAGE_NAMES,
                                    STAGE_STRIDES, Bottleneck, Conv3D, ResNeXt3D,
                                    ResNeXt3D50, ResNeXt3D101, ResNeXt3D152, ResNeXt3DTiny,
                                    block_layer_names, check_stem_kernel,
                                    check_temporal_strides, create, init_variables, module_stage,
                                    stage_layer_names, tap_names, tap_strides)
