"""Independent PyTorch reference of Hara's 3D ResNeXt, for parity tests.

Written from the description of the backbone in docs/design.md and Hara et al.'s
`models/resnext.py` (3D-ResNets-PyTorch), not from `gla_jax.models`, so that
agreement between the two is evidence and not a tautology. Layout is NCDHW, as
in PyTorch; the Flax model is NDHWC.

`ResNeXt.forward(x, return_taps=True)` also returns the activations under the
tap names of the Flax model (`conv1`, `layer{s}.{b}`, `layer{s}`), so
explanation tests can take autograd gradients of a logit with respect to them.

References:
  Hara, Kataoka, Satoh. "Can Spatiotemporal 3D CNNs Retrace the History of 2D
  CNNs and ImageNet?" CVPR 2018 (https://github.com/kenshohara/3D-ResNets-PyTorch).
"""
import functools
from typing import Dict, Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

# Blocks per stage of the published depths.
DEPTHS = {
    'resnext50': (3, 4, 6, 3),
    'resnext101': (3, 4, 23, 3),
    'resnext152': (3, 8, 36, 3),
}
# Keyword arguments that match each preset of `gla_jax.models.PRESETS`.
PRESET_KWARGS = {
    **{name: dict(stage_sizes=sizes) for name, sizes in DEPTHS.items()},
    'tiny': dict(stage_sizes=(1, 1, 1, 1), cardinality=4, widths=(64, 128, 256, 512),
                 stem_width=16),
}


def downsample_basic_block(x, planes: int, stride: int):
  """Hara's shortcut type A: strided subsampling, channels zero-padded (no parameters)."""
  out = F.avg_pool3d(x, kernel_size=1, stride=stride)
  zeros = out.new_zeros(out.size(0), planes - out.size(1), *out.shape[2:])
  return torch.cat([out, zeros], dim=1)


class ResNeXtBottleneck(nn.Module):
  """1x1x1 -> grouped 3x3x3 (stride: int or (sT, sH, sW)) -> 1x1x1 to 2 * planes, + shortcut."""
  expansion = 2

  def __init__(self, inplanes: int, planes: int, cardinality: int, stride=1,
               downsample: Optional[nn.Module] = None):
    super().__init__()
    mid_planes = cardinality * int(planes / 32)    # Hara's formula, verbatim.
    self.conv1 = nn.Conv3d(inplanes, mid_planes, kernel_size=1, bias=False)
    self.bn1 = nn.BatchNorm3d(mid_planes)
    self.conv2 = nn.Conv3d(mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1,
                           groups=cardinality, bias=False)
    self.bn2 = nn.BatchNorm3d(mid_planes)
    self.conv3 = nn.Conv3d(mid_planes, planes * self.expansion, kernel_size=1, bias=False)
    self.bn3 = nn.BatchNorm3d(planes * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample
    self.stride = stride

  def forward(self, x):
    residual = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
      residual = self.downsample(x)
    return self.relu(out + residual)


class ResNeXt(nn.Module):
  """Hara's 3D ResNeXt on `[B, 3, T, H, W]` clips.

  Args:
    stage_sizes: blocks per stage (ResNeXt-101: (3, 4, 23, 3)).
    cardinality: groups of the 3x3x3 convolutions.
    widths: `planes` of each stage; each stage outputs 2 * planes channels.
    stem_width: channels of conv1.
    num_classes: size of `fc`.
    stem_kernel: (kT, kH, kW) of conv1 (odd; padded by half).
    max_pool: the max pool after conv1 (Hara's `no_max_pool=False`).
    temporal_strides: time stride of each stage's first block (Hara: the
      spatial stride, 1, 2, 2, 2).
    shortcut_type: 'B' (1x1x1 conv + BN projection, the published ResNeXt
      weights) or 'A' (parameter-free; only to produce such checkpoints in tests).
  """

  def __init__(self, stage_sizes: Sequence[int], cardinality: int = 32,
               widths: Sequence[int] = (128, 256, 512, 1024), stem_width: int = 64,
               num_classes: int = 400, stem_kernel: Sequence[int] = (7, 7, 7),
               max_pool: bool = True, temporal_strides: Sequence[int] = (1, 2, 2, 2),
               shortcut_type: str = 'B'):
    super().__init__()
    if shortcut_type not in ('A', 'B'):
      raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}.")
    self.stage_sizes = tuple(stage_sizes)
    self.inplanes = stem_width
    self.conv1 = nn.Conv3d(3, stem_width, kernel_size=tuple(stem_kernel), stride=(1, 2, 2),
                           padding=tuple(k // 2 for k in stem_kernel), bias=False)
    self.bn1 = nn.BatchNorm3d(stem_width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = (nn.MaxPool3d(kernel_size=3, stride=2, padding=1) if max_pool
                    else nn.Identity())
    for s, (blocks, planes, stride, time_stride) in enumerate(
        zip(stage_sizes, widths, (1, 2, 2, 2), temporal_strides), 1):
      setattr(self, f'layer{s}', self._make_layer(planes, blocks, shortcut_type, cardinality,
                                                  (time_stride, stride, stride)))
    self.avgpool = nn.AdaptiveAvgPool3d(1)
    self.fc = nn.Linear(widths[len(stage_sizes) - 1] * ResNeXtBottleneck.expansion,
                        num_classes)

  def _make_layer(self, planes, blocks, shortcut_type, cardinality, stride):
    out_planes = planes * ResNeXtBottleneck.expansion
    # Hara builds a shortcut whenever the stride or the width changes: in
    # practice block 0 of every stage.
    downsample = None
    if stride != (1, 1, 1) or self.inplanes != out_planes:
      if shortcut_type == 'A':
        downsample = functools.partial(downsample_basic_block, planes=out_planes,
                                       stride=stride)
      else:
        downsample = nn.Sequential(
            nn.Conv3d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm3d(out_planes))
    layers = [ResNeXtBottleneck(self.inplanes, planes, cardinality, stride, downsample)]
    self.inplanes = out_planes
    layers += [ResNeXtBottleneck(self.inplanes, planes, cardinality) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x, return_taps: bool = False):
    """Logits `[B, num_classes]`, and with `return_taps` a dict of NCDHW activations.

    The taps are the tensors of the graph (not copies), so
    `torch.autograd.grad(logits[i, c], taps['layer3'])` works.
    """
    taps: Dict[str, torch.Tensor] = {}
    x = self.relu(self.bn1(self.conv1(x)))
    taps['conv1'] = x
    x = self.maxpool(x)
    for s in range(1, len(self.stage_sizes) + 1):
      for b, block in enumerate(getattr(self, f'layer{s}')):
        x = block(x)
        taps[f'layer{s}.{b}'] = x
      taps[f'layer{s}'] = x
    logits = self.fc(torch.flatten(self.avgpool(x), 1))
    return (logits, taps) if return_taps else logits


def create(name: str, **kwargs) -> ResNeXt:
  """The reference model matching `gla_jax.models.create(name, **kwargs)`."""
  return ResNeXt(**{**PRESET_KWARGS[name], **kwargs})


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights and BatchNorm statistics, in place; returns `model` in eval mode.

  Freshly initialised BatchNorm layers (scale 1, bias 0, mean 0, var 1) would
  hide a swapped or mis-transposed BN parameter, so every BN tensor is drawn
  at random too (`running_var` strictly positive). Conv weights are He-scaled
  so activations stay O(1) through the network.
  """
  gen = torch.Generator().manual_seed(seed)

  def draw(shape, scale=1.0, offset=0.0):
    return torch.randn(shape, generator=gen) * scale + offset

  for module in model.modules():
    if isinstance(module, nn.Conv3d):
      fan_in = module.weight[0].numel()
      module.weight.copy_(draw(module.weight.shape, (2.0 / fan_in) ** 0.5))
    elif isinstance(module, nn.BatchNorm3d):
      module.weight.copy_(draw(module.weight.shape, 0.2, 1.0))
      module.bias.copy_(draw(module.bias.shape, 0.2))
      module.running_mean.copy_(draw(module.running_mean.shape, 0.2))
      module.running_var.copy_(
          torch.rand(module.running_var.shape, generator=gen) * 1.5 + 0.5)
      module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=gen)))
    elif isinstance(module, nn.Linear):
      module.weight.copy_(draw(module.weight.shape, module.in_features ** -0.5))
      module.bias.copy_(draw(module.bias.shape, 0.1))
  return model.eval()


def published_state_dict(model: nn.Module, num_batches_tracked: bool = True
                         ) -> Dict[str, torch.Tensor]:
  """`model.state_dict()` as in the published files: `module.` prefix (DataParallel)."""
  return {'module.' + k: v for k, v in model.state_dict().items()
          if num_batches_tracked or not k.endswith('num_batches_tracked')}


def save_published_checkpoint(model: nn.Module, path, arch: str = 'resnext-101',
                              epoch: int = 200, num_batches_tracked: bool = True):
  """Saves `model` in the layout of Hara's released `.pth` files.

  Args:
    model: the network to save.
    path: the file to write.
    arch: the `'arch'` entry (the released files say e.g. 'resnext-101').
    epoch: the `'epoch'` entry.
    num_batches_tracked: False drops the BN counters, as in files saved
      before PyTorch 0.4.1.
  """
  num_params = len(list(model.parameters()))
  optimizer = {  # SGD's state_dict layout: plain Python containers, no tensors needed.
      'state': {},
      'param_groups': [dict(lr=0.1, momentum=0.9, dampening=0.9, weight_decay=1e-3,
                            nesterov=False, params=list(range(num_params)))],
  }
  torch.save({'epoch': epoch, 'arch': arch,
              'state_dict': published_state_dict(model, num_batches_tracked),
              'optimizer': optimizer}, path)
