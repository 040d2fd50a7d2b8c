"""3D ResNeXt in the layout of Hara et al. (CVPR 2018), with explainable taps.

Every activation that the explanation step may use is *tapped*: the top-level
module adds a perturbation to it (`Module.perturb`, so `jax.grad` with respect
to the `'perturbations'` collection gives d(score)/d(activation)) and sows it
into `'intermediates'`. Both are no-ops unless the caller passes perturbations
or makes `'intermediates'` mutable, so training pays nothing for them.

Tap names (public, used by `explain` and the configs):
  `conv1`            stem output after BN and ReLU, before the max pool;
  `layer{s}.{b}`     output of block b (0-based) of stage s (1-based),
                     as in the PyTorch checkpoint names;
  `layer{s}`         stage output (the same values as its last block).

Submodule names follow the PyTorch checkpoint (`layer1_0` for `layer1.0`) so
that the weight conversion is a renaming; the stem is `stem_conv`/`stem_bn`
(PyTorch's `conv1`/`bn1`) because `conv1` names its tap.

References:
  Hara, Kataoka, Satoh. "Can Spatiotemporal 3D CNNs Retrace the History of 2D
  CNNs and ImageNet?" CVPR 2018 (https://github.com/kenshohara/3D-ResNets-PyTorch).
  Xie et al. "Aggregated Residual Transformations for Deep Neural Networks"
  (ResNeXt), CVPR 2017.
"""
import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gla_jax.models import conv
from gla_jax.models import gating

Dtype = Any

STAGE_NAMES = ('layer1', 'layer2', 'layer3', 'layer4')
STAGE_STRIDES = (1, 2, 2, 2)   # of each stage's first block, in every axis (Hara)
STEM_STRIDES = (1, 2, 2)       # (T, H, W) of conv1: Hara keeps every frame
POOL_STRIDES = (2, 2, 2)       # of the max pool after conv1
BN_MOMENTUM = 0.9    # PyTorch's momentum 0.1.
BN_EPSILON = 1e-5


def check_stem_kernel(stem_kernel: Sequence[int], name: str = 'stem_kernel') -> None:
  """Raises ValueError unless `stem_kernel` is three odd sizes (padded by half per side)."""
  if len(stem_kernel) != 3 or any(k < 1 or k % 2 == 0 for k in stem_kernel):
    raise ValueError(f'{name}={tuple(stem_kernel)}: need three odd sizes (kT, kH, kW), padded '
                     'by half on each side, e.g. (7, 7, 7) or (3, 3, 3).')


def check_temporal_strides(temporal_strides: Sequence[int], num_stages: int,
                           name: str = 'temporal_strides') -> None:
  """Raises ValueError unless `temporal_strides` has a stride >= 1 for each stage.

  As with `widths`, entries past the last stage are not used.
  """
  if len(temporal_strides) < num_stages or any(s < 1 for s in temporal_strides):
    raise ValueError(f'{name}={tuple(temporal_strides)}: need a time stride >= 1 for each of '
                     f'the {num_stages} stages, e.g. {STAGE_STRIDES[:num_stages]} (Hara) or '
                     f'{(1,) * num_stages} (every frame kept).')


class Conv3D(nn.Module):
  """Bias-free 3D convolution with explicit symmetric padding (as PyTorch's Conv3d).

  The kernel is stored in float32 as [kT, kH, kW, Cin / groups, Cout] (the
  layout of `flax.linen.Conv`) and cast to the compute dtype.
  """
  features: int
  kernel_size: Tuple[int, int, int]
  strides: Tuple[int, int, int] = (1, 1, 1)
  padding: Tuple[int, int, int] = (0, 0, 0)
  feature_group_count: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    in_features = x.shape[-1]
    if in_features % self.feature_group_count:
      raise ValueError(f'{in_features} input channels are not divisible into '
                       f'{self.feature_group_count} groups.')
    # PyTorch's Conv3d default init (kaiming uniform with a=sqrt(5)) is
    # variance 1/(3 fan_in); He normal trains these networks from scratch.
    kernel = self.param(
        'kernel', nn.initializers.kaiming_normal(),
        (*self.kernel_size, in_features // self.feature_group_count, self.features),
        jnp.float32)
    return conv.conv3d(
        x.astype(self.dtype), kernel.astype(self.dtype), self.strides,
        [(p, p) for p in self.padding], self.feature_group_count)


class Bottleneck(nn.Module):
  """ResNeXt bottleneck: 1x1x1 -> grouped 3x3x3 (stride) -> 1x1x1 to 2 * planes."""
  planes: int
  cardinality: int
  strides: Tuple[int, int, int] = (1, 1, 1)   # of the 3x3x3 and the shortcut (T, H, W)
  downsample: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32)
    mid = self.cardinality * (self.planes // 32)   # Hara: cardinality * int(planes / 32).
    stride3 = tuple(self.strides)
    y = Conv3D(mid, (1, 1, 1), dtype=self.dtype, name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = Conv3D(mid, (3, 3, 3), stride3, (1, 1, 1), self.cardinality, dtype=self.dtype,
               name='conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = Conv3D(self.planes * 2, (1, 1, 1), dtype=self.dtype, name='conv3')(y)
    y = norm(name='bn3')(y)
    if self.downsample:    # Shortcut type B: projection in the first block of each stage.
      x = Conv3D(self.planes * 2, (1, 1, 1), stride3, dtype=self.dtype,
                 name='downsample_conv')(x)
      x = norm(name='downsample_bn')(x)
    return nn.relu(y + x)


class ResNeXt3D(nn.Module):
  """3D ResNeXt: `[B, T, H, W, 3]` clips in, `[B, num_classes]` float32 logits out.

  Attributes:
    stage_sizes: blocks per stage (ResNeXt-50: (3, 4, 6, 3)).
    num_classes: size of the classifier.
    cardinality: groups of the 3x3x3 convolutions.
    widths: `planes` of each stage; each stage outputs 2 * planes channels.
    stem_width: channels of conv1.
    stem_kernel: (kT, kH, kW) of conv1, odd sizes, padded by half (Hara: 7x7x7;
      his later code has `conv1_t_size` for kT). Small clips train much faster
      with 3x3x3 (configs/demo.py); published weights need 7x7x7.
    max_pool: the 3x3x3 stride-2 max pool after conv1 (Hara's `no_max_pool`
      turns it off). Without it every feature map is twice as large in each
      axis: layer4 keeps more than one position on small clips.
    temporal_strides: the time stride of each stage's first block (Hara: the
      spatial one, `STAGE_STRIDES`). 1 keeps every frame in that stage, which
      short clips need to tell motions apart by their direction in time
      (configs/demo.py); the weights are the same, so published checkpoints
      load with any setting.
    dtype: compute dtype (bfloat16 on accelerators); parameters and BatchNorm
      statistics stay float32, logits are float32.
    gated: attention gates on `gate_stages` and a classifier over the gated
      vectors and the global feature (see `gating`); the backbone is unchanged,
      so published weights load into it.
    gate_stages: the gated stages.
    gate_normalization: `softmax` | `sigmoid` over (t, h, w).
    gate_head: `concat` (one classifier over all gated vectors and g) or
      `average` (a classifier per stage plus `fc` on g, logits averaged).
    gate_features: width of the gates' compatibility space.
  """
  stage_sizes: Sequence[int]
  num_classes: int = 400
  cardinality: int = 32
  widths: Sequence[int] = (128, 256, 512, 1024)
  stem_width: int = 64
  stem_kernel: Tuple[int, int, int] = (7, 7, 7)
  max_pool: bool = True
  temporal_strides: Sequence[int] = STAGE_STRIDES
  dtype: Dtype = jnp.float32
  gated: bool = False
  gate_stages: Sequence[str] = STAGE_NAMES
  gate_normalization: str = 'softmax'
  gate_head: str = 'concat'
  gate_features: int = 256

  def tap(self, name: str, x):
    """Makes `x` explainable under `name` (see the module docstring)."""
    x = self.perturb(name, x)
    self.sow('intermediates', name, x)
    return x

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim != 5 or x.shape[-1] != 3:
      raise ValueError(f'Expected clips [B, T, H, W, 3], got shape {x.shape}.')
    check_stem_kernel(self.stem_kernel)
    check_temporal_strides(self.temporal_strides, len(self.stage_sizes))
    x = Conv3D(self.stem_width, tuple(self.stem_kernel), STEM_STRIDES,
               tuple(k // 2 for k in self.stem_kernel), dtype=self.dtype,
               name='stem_conv')(x)                               # [B, T, H/2, W/2, 64]
    x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                     epsilon=BN_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                     name='stem_bn')(x)
    x = self.tap('conv1', nn.relu(x))
    if self.max_pool:
      x = nn.max_pool(x, (3, 3, 3), POOL_STRIDES, ((1, 1),) * 3)      # [B, T/2, H/4, W/4, 64]
    stage_outputs = {}
    for s, (blocks, planes, stride, time_stride) in enumerate(
        zip(self.stage_sizes, self.widths, STAGE_STRIDES, self.temporal_strides), start=1):
      for b in range(blocks):
        strides = (time_stride, stride, stride) if b == 0 else (1, 1, 1)
        x = Bottleneck(planes, self.cardinality, strides, downsample=b == 0, dtype=self.dtype,
                       name=f'layer{s}_{b}')(x, train)
        x = self.tap(f'layer{s}.{b}', x)
      x = stage_outputs[f'layer{s}'] = self.tap(f'layer{s}', x)
    # The head runs in float32 at least (bfloat16 logits would round class scores).
    g = jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=(1, 2, 3))
    # g: [B, 2 * widths[-1]], the global feature.
    if not self.gated:
      return nn.Dense(self.num_classes, name='fc')(g)
    return self._gated_head(stage_outputs, g)

  def _gated_head(self, stage_outputs, g):
    unknown = set(self.gate_stages) - set(stage_outputs)
    if unknown or not self.gate_stages:
      raise ValueError(f'gate_stages={tuple(self.gate_stages)}: choose a non-empty subset of '
                       f'{tuple(stage_outputs)}.')
    if self.gate_head not in gating.HEADS:
      raise ValueError(f'Unknown gate_head {self.gate_head!r}; choose one of {gating.HEADS}.')
    pooled = [gating.AttentionGate(self.gate_features, self.gate_normalization, self.dtype,
                                   name=f'gate_{stage}')(stage_outputs[stage], g)[0]
              for stage in self.gate_stages]
    if self.gate_head == 'concat':
      return nn.Dense(self.num_classes, name='gated_fc')(jnp.concatenate([*pooled, g], axis=-1))
    logits = [nn.Dense(self.num_classes, name=f'gated_fc_{stage}')(v)
              for stage, v in zip(self.gate_stages, pooled)]
    return jnp.mean(jnp.stack([*logits, nn.Dense(self.num_classes, name='fc')(g)]), axis=0)


ResNeXt3D50 = functools.partial(ResNeXt3D, stage_sizes=(3, 4, 6, 3))
ResNeXt3D101 = functools.partial(ResNeXt3D, stage_sizes=(3, 4, 23, 3))
ResNeXt3D152 = functools.partial(ResNeXt3D, stage_sizes=(3, 8, 36, 3))
# One block per stage, half the widths, 4 groups: for tests and CPU demos.
ResNeXt3DTiny = functools.partial(ResNeXt3D, stage_sizes=(1, 1, 1, 1), cardinality=4,
                                  widths=(64, 128, 256, 512), stem_width=16)

PRESETS: Dict[str, Callable[..., ResNeXt3D]] = {
    'resnext50': ResNeXt3D50,
    'resnext101': ResNeXt3D101,
    'resnext152': ResNeXt3D152,
    'tiny': ResNeXt3DTiny,
}


def module_stage(module: str) -> Optional[int]:
  """0 for the stem (`stem_conv`, `stem_bn`), s for `layer{s}_{b}`, None outside the stages."""
  if module in ('stem_conv', 'stem_bn'):
    return 0
  if module.startswith('layer') and '_' in module:
    stage = module[len('layer'):].split('_')[0]
    if stage.isdigit():
      return int(stage)
  return None


def stage_layer_names(model: ResNeXt3D) -> Tuple[str, ...]:
  """Tap names of the `stages` setting, global (deep) first: layer4 .. layer1, conv1."""
  return tuple(reversed(('conv1',) + STAGE_NAMES[:len(model.stage_sizes)]))


def block_layer_names(model: ResNeXt3D) -> Tuple[str, ...]:
  """Tap names of the `blocks` setting, global first: every block, then conv1."""
  names = ['conv1'] + [f'layer{s}.{b}' for s, blocks in enumerate(model.stage_sizes, 1)
                       for b in range(blocks)]
  return tuple(reversed(names))


def tap_names(model: ResNeXt3D) -> Tuple[str, ...]:
  """Every tapped activation of `model`."""
  return tuple(sorted(set(stage_layer_names(model)) | set(block_layer_names(model))))


def tap_strides(model: ResNeXt3D) -> Dict[str, Tuple[int, int, int]]:
  """{tap: (st, sh, sw)}, the cumulative stride of every tap of `tap_names(model)` (and gate).

  Cell i of a tap along an axis of stride s has its receptive field centred on
  input coordinate s * i: every convolution and the max pool pad k // 2 on
  each side of an odd kernel. The stem strides space only (`STEM_STRIDES`),
  the max pool (after the `conv1` tap) every axis by 2, each stage's first block
  (temporal_strides[s], STAGE_STRIDES[s], STAGE_STRIDES[s]); a stage's blocks
  and output share its strides, as do a gated model's gate maps (`gate_<stage>` keys).
  """
  st, sh, sw = STEM_STRIDES
  strides = {'conv1': (st, sh, sw)}
  if model.max_pool:
    st, sh, sw = (a * b for a, b in zip((st, sh, sw), POOL_STRIDES))
  for s, (blocks, stride, time_stride) in enumerate(
      zip(model.stage_sizes, STAGE_STRIDES, model.temporal_strides), start=1):
    st, sh, sw = st * time_stride, sh * stride, sw * stride
    for name in (f'layer{s}', *(f'layer{s}.{b}' for b in range(blocks))):
      strides[name] = (st, sh, sw)
  if model.gated:
    strides.update({f'gate_{stage}': strides[stage] for stage in model.gate_stages
                    if stage in strides})
  return strides


def init_variables(model: ResNeXt3D, rng: jax.Array,
                   clip_shape: Sequence[int] = (1, 16, 112, 112, 3)) -> Dict[str, Any]:
  """`{'params', 'batch_stats'}` of `model`, without the tap collections.

  The values depend on `rng` and the channel count only, not on the clip's
  length or size: the network is initialised on a one-voxel clip, so every
  caller with the same model shares one compiled program (in JAX's persistent
  cache too), whatever its clips.
  """
  one_voxel = (1, 1, 1, 1, clip_shape[-1])
  variables = jax.jit(functools.partial(model.init, train=False))(
      rng, jnp.zeros(one_voxel, jnp.float32))
  return {'params': variables['params'], 'batch_stats': variables['batch_stats']}


def create(name: str, **kwargs) -> ResNeXt3D:
  """A preset by name (`resnext50`, `resnext101`, `resnext152`, `tiny`)."""
  if name not in PRESETS:
    raise ValueError(f'Unknown model preset {name!r}; choose one of {sorted(PRESETS)}.')
  return PRESETS[name](**kwargs)
