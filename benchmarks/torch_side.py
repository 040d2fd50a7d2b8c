"""The PyTorch side of `benchmarks.bench`: the reference network's variants, timed.

`TorchBench` builds `tests/torch_resnext.py`'s network with the benchmark's
preset, clip and batch, and gives the variants (training step, explanation by
hooks, by `torch.autograd.grad`, block-by-block `torch.compile`, forward);
`torch_gradcam` computes the Grad-CAM maps as `gla_jax.explain` defines them.
"""
import copy
import time
from typing import Any, Callable, Dict, Sequence

import numpy as np

from benchmarks import harness
from gla_jax import explain
from gla_jax import models


def torch_gradcam(torch, activations: Dict[str, Any], gradients: Dict[str, Any],
                  layers: Sequence[str], size: Sequence[int]):
  """`gla_jax.explain`'s Grad-CAM in PyTorch: [B, T, H, W] attention from NCDHW taps.

  Per layer: channel weights = mean gradient over (t, h, w), ReLU of the
  weighted sum, trilinear up-sampling (half-pixel centres), min-max per clip;
  then the mean over layers, min-max again.
  """
  def minmax(maps):
    low = maps.amin(dim=(1, 2, 3), keepdim=True)
    span = maps.amax(dim=(1, 2, 3), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-30), torch.zeros_like(maps))

  maps = []
  for name in layers:
    a, g = activations[name].float(), gradients[name].float()
    cam = torch.relu((g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=tuple(size), mode='trilinear',
                                          align_corners=False)[:, 0]
    maps.append(minmax(cam))
  return minmax(torch.stack(maps).mean(dim=0))


def tap_modules(net, layers: Sequence[str]) -> Dict[str, Any]:
  """The module whose output is each tap of `torch_resnext.ResNeXt.forward`.

  A stage's tap is its last block's output (`forward` runs the blocks one by
  one, never the stage's `nn.Sequential` itself).
  """
  modules = {}
  for name in layers:
    if name == 'conv1':
      modules[name] = net.relu          # The stem's ReLU (blocks have their own).
    else:
      stage, _, block = name.partition('.')
      modules[name] = getattr(net, stage)[int(block) if block else -1]
  return modules


class TorchBench:
  """The PyTorch variants on one device, dtype and layout."""

  def __init__(self, torch, torch_resnext, args):
    self.torch, self.args = torch, args
    self.device = torch.device('cuda' if args.device == 'gpu' else 'cpu')
    channels_last = (args.torch_channels_last == 'on'
                     or (args.torch_channels_last == 'auto' and args.device == 'gpu'))
    self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    self.net = torch_resnext.create(args.preset, num_classes=args.num_classes,
                                    **harness.network_options(args)).to(
        self.device, memory_format=self.memory_format)
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn((args.batch, 3, args.frames, args.size, args.size), generator=generator)
    self.clips = clips.to(self.device, memory_format=self.memory_format)
    self.labels = torch.randint(0, args.num_classes, (args.batch,), generator=generator).to(
        self.device)
    self.size = (args.frames, args.size, args.size)
    self.layers = {layers: explain.resolve_layers(
        models.create(args.preset, num_classes=args.num_classes), layers)
        for layers in harness.LAYER_SETS}
    self.compiled_net = None

  def autocast(self):
    return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16,
                               enabled=self.args.dtype == 'bfloat16')

  def sync(self, _=None):
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()

  def train_step_fn(self):
    torch = self.torch
    self.net.train()
    optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)

    def step():
      optimizer.zero_grad(set_to_none=True)
      with self.autocast():
        logits = self.net(self.clips)
      loss = torch.nn.functional.cross_entropy(logits.float(), self.labels)
      loss.backward()
      optimizer.step()
      return loss
    return step

  def _score(self, logits):
    target = logits.argmax(dim=1)
    return logits.float().gather(1, target[:, None]).sum()

  def explain_hooks_fn(self, layers: str):
    """Forward hooks keep activations and hook their gradients; one backward()."""
    names = self.layers[layers]
    activations, gradients, handles = {}, {}, []

    def make_hook(name):
      def hook(module, inputs, output):
        activations[name] = output
        output.register_hook(lambda grad: gradients.__setitem__(name, grad))
      return hook

    def run():
      self.net.eval()
      handles.extend(module.register_forward_hook(make_hook(name))
                     for name, module in tap_modules(self.net, names).items())
      try:
        self.net.zero_grad(set_to_none=True)
        with self.autocast():
          logits = self.net(self.clips)
        self._score(logits).backward()
      finally:
        for handle in handles:
          handle.remove()
        handles.clear()
      with self.torch.no_grad():
        return torch_gradcam(self.torch, activations, gradients, names, self.size)
    return run

  def explain_autograd_fn(self, layers: str, compiled: bool = False):
    """`torch.autograd.grad` of the target score w.r.t. the taps (of `torch.compile(net)`)."""
    names = self.layers[layers]
    if compiled and self.compiled_net is None:
      self.compiled_net = self._compiled_copy()
    net = self.compiled_net if compiled else self.net

    def run():
      self.net.eval()
      with self.autocast():
        logits, taps = net(self.clips, return_taps=True)
      gradients = self.torch.autograd.grad(self._score(logits), [taps[n] for n in names])
      with self.torch.no_grad():
        return torch_gradcam(self.torch, taps, dict(zip(names, gradients)), names, self.size)
    return run

  def _compiled_copy(self):
    """A copy of the network whose stem and blocks are each `torch.compile`d.

    Compiling the network as a whole hides the taps inside one graph: they come
    out as extra outputs, not on the autograd path from the logits, so
    `torch.autograd.grad(score, taps)` finds nothing to differentiate. Block by
    block, each tap is a compiled block's output and the next block's input.
    """
    net = copy.deepcopy(self.net)
    for module in (net.conv1, net.bn1, *(block for stage in range(1, len(net.stage_sizes) + 1)
                                         for block in getattr(net, f'layer{stage}'))):
      module.compile()
    return net

  def forward_fn(self):
    def run():
      self.net.eval()
      with self.torch.inference_mode(), self.autocast():
        return self.net(self.clips)
    return run

  def measure(self, name: str, fn: Callable[[], Any]) -> Dict[str, Any]:
    """Times `fn`; the first call's time is reported as `first_call_s` (compilation)."""
    torch, args = self.torch, self.args
    if self.device.type == 'cuda':
      torch.cuda.reset_peak_memory_stats(self.device)
    rss_before = harness.max_rss_bytes()
    start = time.perf_counter()
    self.sync(fn())
    first_call_s = time.perf_counter() - start
    seconds = harness.time_calls(fn, args.steps, max(args.warmup - 1, 0), self.sync)
    return {
        'clips_per_s': args.batch * args.steps / sum(seconds),
        'seconds_per_step': float(np.median(seconds)),
        'first_call_s': first_call_s,
        'device_peak_bytes': (int(torch.cuda.max_memory_allocated(self.device))
                              if self.device.type == 'cuda' else None),
        'rss_growth_bytes': (harness.max_rss_bytes() - rss_before
                             if self.device.type == 'cpu' else None),
    }
