r"""JAX against PyTorch on the same network, in one run: training step, explanation, forward.

  python benchmarks/bench.py --preset=resnext101 --frames=16 --size=112 --batch=32 \
      --dtype=bfloat16 --device=gpu --steps=20 --out=/tmp/bench.json
  # configs/demo.py's network on CPU (Hara's architecture is the default):
  python benchmarks/bench.py --preset=tiny --frames=8 --size=32 --batch=16 \
      --dtype=float32 --device=cpu --steps=3 --stem_kernel=3,3,3 --no-max_pool \
      --temporal_strides=1,1,1,1

Variants (every one on one device, the same preset, clip and batch):
  JAX (this project)
    train             `train.make_train_step` on a 1-device mesh: SGD with
                      momentum and weight decay, BatchNorm in training mode;
    explain_stages    `explain.make_explainer(layers='stages')`: one forward,
                      the tap gradients of the argmax score, Grad-CAM maps
                      up-sampled, normalised and averaged;
    explain_blocks    the same with `layers='blocks'` (every block);
    forward           `model.apply` in inference mode.
  PyTorch (the reference network `tests/torch_resnext.py`, imported by putting
  the repository's tests/ directory on sys.path)
    train             `torch.optim.SGD` (same momentum and weight decay), loss
                      and backward;
    explain_hooks     eager, the way Grad-CAM libraries do it: forward hooks
                      store the activations and register tensor hooks for their
                      gradients, then one `backward()` (which also computes the
                      weight gradients);
    explain_autograd  eager `torch.autograd.grad(score, taps)`: only the tap
                      gradients, the work JAX does;
    explain_compiled  `explain_autograd` with the stem and every block
                      `torch.compile`d (a failure is reported, not raised);
    forward           under `torch.inference_mode()`.
  The Grad-CAM maps of every explanation variant are computed as
  `gla_jax.explain` defines them (see `torch_gradcam`). On GPU PyTorch runs
  under bfloat16 autocast when --dtype=bfloat16, and in channels_last_3d
  layout unless --torch_channels_last=off.

Reported per variant: clips/s (warm-up calls excluded, every timing ends with
`block_until_ready` / `torch.cuda.synchronize`), JAX compile time (lowering and
XLA compilation), achieved FLOP/s from XLA's cost analysis of the JAX program
(`cost_analysis()['flops']`, counted on the program traced with `lax`
convolutions, see `model_flops`; PyTorch variants are credited with the FLOPs
of the matching JAX program) as a fraction of --peak_tflops (defaults:
H200 dense bfloat16 989, float32 67; on CPU an estimate from the cores, clock
and vector width, flagged as such), and memory: the JAX program's compiled
footprint (`memory_analysis()`: arguments + outputs + temporaries - aliased),
the device's peak (JAX `memory_stats()['peak_bytes_in_use']`, the process-wide
high-water mark so far, where the backend has it; `torch.cuda.max_memory_allocated`
per variant), and on CPU the growth of the process's max RSS during the
variant. Then the ratios JAX / PyTorch (clips/s; above 1: JAX is faster) and
the explanation's memory growth: compiled footprint of `blocks` over `stages`
and of batch 2b over b (compiled, not run).

--conv_impl picks `gla_jax.conv`'s implementation (`auto`: the fast
reformulations on CPU, XLA's convolutions elsewhere; `xla` to compare).
--out writes every figure as JSON. Without PyTorch (not installed, or
--notorch) only the JAX figures are printed.
"""
import argparse
import copy
import datetime
import functools
import json
import os
import platform
import resource
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from gla_jax import defaults  # pylint: disable=g-import-not-at-top
from gla_jax.models import conv  # pylint: disable=g-import-not-at-top
from gla_jax import explain  # pylint: disable=g-import-not-at-top
from gla_jax import hugepages  # pylint: disable=g-import-not-at-top
from gla_jax import models  # pylint: disable=g-import-not-at-top
from gla_jax import parallel  # pylint: disable=g-import-not-at-top
from gla_jax.training import train  # pylint: disable=g-import-not-at-top

LAYER_SETS = ('stages', 'blocks')
# Dense peak TFLOP/s of an H200 (SXM), by compute dtype.
GPU_PEAK_TFLOPS = {'bfloat16': 989.0, 'float32': 67.0}
# Pairs (JAX variant, PyTorch variant) whose clips/s are compared.
COMPARISONS = (
    ('train', 'train'),
    *((f'explain_{layers}', f'explain_{how}_{layers}')
      for layers in LAYER_SETS for how in ('hooks', 'autograd', 'compiled')),
    ('forward', 'forward'),
)


# ------------------------------------------------------------------------------
# Helpers shared with conv_bench.py.
# ------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], calls: int, warmup: int,
               sync: Callable[[Any], Any]) -> list:
  """Seconds of each of `calls` calls of `fn`, after `warmup` untimed calls.

  `sync(result)` waits for the work `fn` dispatched (`jax.block_until_ready`,
  `torch.cuda.synchronize`), so each time covers the computation.
  """
  for _ in range(warmup):
    sync(fn())
  seconds = []
  for _ in range(calls):
    start = time.perf_counter()
    sync(fn())
    seconds.append(time.perf_counter() - start)
  return seconds


def import_torch() -> Tuple[Any, Any]:
  """(torch, torch_resnext) or (None, None) where PyTorch does not import.

  `torch_resnext` is the reference network of the test suite: the
  repository's tests/ directory is put on sys.path to import it.

  OpenMP threads wait passively unless OMP_WAIT_POLICY says otherwise: with
  the default, every small PyTorch CPU operator waited 30-50 ms at its
  barrier on a machine whose cores other processes also use (measured on the
  2-core benchmark machine); on an idle machine the policy makes no
  measurable difference.
  """
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # Read when libgomp loads.
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, None
  tests_dir = os.path.join(REPO, 'tests')
  if tests_dir not in sys.path:
    sys.path.insert(0, tests_dir)
  import torch_resnext  # pylint: disable=g-import-not-at-top
  return torch, torch_resnext


def _max_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB.


def cpu_peak_tflops() -> Tuple[float, str]:
  """An estimate of this CPU's float32 peak: cores x clock x FLOPs per cycle, and how."""
  cores = os.cpu_count() or 1
  flags, ghz = set(), 0.0
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags') and not flags:
          flags = set(line.split(':', 1)[1].split())
        elif line.startswith('cpu MHz') and not ghz:
          ghz = float(line.split(':', 1)[1]) / 1e3
  except OSError:
    pass
  ghz = ghz or 2.0
  # Two FMA units of 16 (AVX-512) or 8 (AVX2) float32 lanes, 2 FLOPs per FMA.
  per_cycle, isa = ((64, 'AVX-512 FMA') if 'avx512f' in flags else
                    (32, 'AVX2 FMA') if {'avx2', 'fma'} <= flags else (8, 'SSE'))
  peak = cores * ghz * per_cycle / 1e3
  return peak, (f'estimate: {cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({isa}, '
                'float32)')


# ------------------------------------------------------------------------------
# JAX.
# ------------------------------------------------------------------------------


def _compiled_bytes(compiled) -> Optional[Dict[str, int]]:
  """The compiled program's memory: arguments + outputs + temporaries - aliased."""
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError, AttributeError):
    return None
  if stats is None:
    return None
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
           + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  return {'total': int(total), 'temp': int(stats.temp_size_in_bytes)}


def _flops(stage) -> Optional[float]:
  """`cost_analysis()['flops']` of a lowered or compiled program, None where unknown."""
  cost = stage.cost_analysis()
  if isinstance(cost, (list, tuple)):    # Older JAX: one dict per device program.
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def _jax_programs(model, tx, learning_rate_fn, labels, mesh,
                  make_explainer: Callable) -> Dict[str, Any]:
  """{variant: jitted function}, the smallest memory first (so the process-wide
  device peak tracks each variant)."""
  programs = {'forward': jax.jit(lambda v, x: model.apply(v, x, train=False))}
  for layers in LAYER_SETS:
    programs[f'explain_{layers}'] = make_explainer(model, 'gradcam', layers, 'mean')
  programs['train'] = train.make_train_step(model, tx, learning_rate_fn, labels, mesh)
  return programs


def model_flops(arguments: Dict[str, Tuple], model, tx, learning_rate_fn, labels,
                mesh) -> Dict[str, Optional[float]]:
  """FLOPs per call of each variant: XLA's cost analysis of it with `lax` convolutions.

  The variants are traced anew with `conv_impl='xla'` and lowered, not
  compiled: the count is the network's convolutions and everything else as
  written, whichever implementation runs. (The fast CPU path's own programs
  would under-count: XLA's cost analysis counts a loop's body once.)
  """
  with conv.use_impl('xla'):
    # make_explainer's cache would return the already traced explainers.
    programs = _jax_programs(model, tx, learning_rate_fn, labels, mesh,
                             explain.make_explainer.__wrapped__)
    return {name: _flops(jitted.lower(*arguments[name])) for name, jitted in programs.items()}


def _device_peak_bytes(device) -> Optional[int]:
  stats = device.memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def _compile(jitted, *args) -> Tuple[Any, float]:
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def _run_jax(compiled, args: Tuple, steps: int, warmup: int, batch: int, device,
             carry: Optional[Callable[[Any], Tuple]] = None) -> Dict[str, Any]:
  """Times `compiled(*args)`; `carry(result)` gives the next call's arguments (donated state)."""
  args = [args]
  rss_before = _max_rss_bytes()

  def call():
    result = compiled(*args[0])
    if carry is not None:
      args[0] = carry(result)
    return result

  seconds = time_calls(call, steps, warmup, jax.block_until_ready)
  return {
      'clips_per_s': batch * steps / sum(seconds),
      'seconds_per_step': float(np.median(seconds)),
      'device_peak_bytes': _device_peak_bytes(device),
      'rss_growth_bytes': _max_rss_bytes() - rss_before if device.platform == 'cpu' else None,
  }


def network_options(args) -> Dict[str, Any]:
  """The architecture flags, as keyword arguments of both networks."""
  return dict(stem_kernel=args.stem_kernel, max_pool=args.max_pool,
              temporal_strides=args.temporal_strides)


def jax_config(args) -> ml_collections.ConfigDict:
  """The project config of the benchmarked network, clip and batch."""
  config = defaults.base_config()
  config.model.update(preset=args.preset, num_classes=args.num_classes, dtype=args.dtype,
                      **network_options(args))
  config.data.update(num_frames=args.frames, crop_size=args.size)
  config.train.batch_size = args.batch
  return config


def jax_setup(args) -> Dict[str, Any]:
  """What the JAX variants run: {'programs': {variant: jitted}, 'arguments': {variant:
  args}, 'carry': {variant: next call's args from a result, or None}, 'flops': ...}.

  The training step donates its state, so `carry['train']` hands the new state
  to the next call.
  """
  config = jax_config(args)
  model = train.create_model(config)
  mesh = parallel.make_mesh(1)
  learning_rate_fn = train.create_learning_rate_fn(config)
  params_shapes = jax.eval_shape(
      functools.partial(models.init_variables, model, clip_shape=train.clip_shape(config)),
      jax.random.key(0))['params']
  tx = train.create_optimizer(config, params_shapes, learning_rate_fn)
  labels = train.trainable_labels(params_shapes, config.train.freeze_until)
  state = parallel.replicate(train.create_train_state(config, model, jax.random.key(0), tx), mesh)

  rng = np.random.default_rng(0)
  clips = rng.normal(size=(args.batch, args.frames, args.size, args.size, 3)).astype(np.float32)
  batch = parallel.shard_batch({
      'video': clips,
      'label': rng.integers(0, args.num_classes, args.batch).astype(np.int32),
      'mask': np.ones(args.batch, bool)}, mesh)
  video = batch['video']
  variables = jax.tree.map(jnp.copy, state.variables)   # The training step donates the state.

  arguments = {'forward': (variables, video), 'train': (state, batch),
               **{f'explain_{layers}': (variables, video, None) for layers in LAYER_SETS}}
  programs = _jax_programs(model, tx, learning_rate_fn, labels, mesh, explain.make_explainer)
  carry = {name: (lambda result: (result[0], batch)) if name == 'train' else None
           for name in programs}
  return {'programs': programs, 'arguments': arguments, 'carry': carry,
          'flops': functools.partial(model_flops, arguments, model, tx, learning_rate_fn,
                                     labels, mesh),
          'variables': variables, 'video': video}


def benchmark_jax(args, device) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
  """The JAX variants ({name: figures}) and the explanation's memory growth."""
  setup = jax_setup(args)
  programs, arguments = setup['programs'], setup['arguments']
  flops = setup['flops']()
  results = {}
  for name, jitted in programs.items():
    compiled, compile_s = _compile(jitted, *arguments[name])
    figures = _run_jax(compiled, arguments[name], args.steps, args.warmup, args.batch, device,
                       setup['carry'][name])
    figures.update(compile_s=compile_s, flops_per_step=flops[name],
                   compiled_bytes=_compiled_bytes(compiled))
    results[name] = figures
    _print_progress('jax', name, figures)
    del compiled
  memory = {}
  if args.memory_scaling:
    memory = explanation_memory_growth(
        {layers: programs[f'explain_{layers}'] for layers in LAYER_SETS},
        {layers: results[f'explain_{layers}']['compiled_bytes'] for layers in LAYER_SETS},
        setup['variables'], setup['video'])
  return results, memory


def explanation_memory_growth(explainers: Dict[str, Any], footprints: Dict[str, Any],
                              variables, video) -> Dict[str, Any]:
  """Compiled footprints of the explanation: `blocks` vs `stages`, batch 2b vs b.

  Args:
    explainers: {layer set: jitted explainer}.
    footprints: {layer set: `_compiled_bytes` at the batch of `video`}.
    variables: the model's variables.
    video: the benchmark's batch; the explainers are compiled (not run) at twice it.
  """
  double = jax.ShapeDtypeStruct((2 * video.shape[0], *video.shape[1:]), video.dtype,
                                sharding=video.sharding)
  footprint = {}
  for layers in LAYER_SETS:
    footprint[layers, 1] = footprints[layers]
    footprint[layers, 2] = _compiled_bytes(
        _compile(explainers[layers], variables, double, None)[0])
  if any(value is None for value in footprint.values()):
    return {'error': 'memory_analysis() is not available on this backend'}
  growth = {f'{layers}_{"2b" if factor == 2 else "b"}_bytes': footprint[layers, factor]['total']
            for layers, factor in footprint}
  growth.update({f'{layers}_{"2b" if factor == 2 else "b"}_temp_bytes':
                 footprint[layers, factor]['temp'] for layers, factor in footprint})
  growth['blocks_over_stages'] = footprint['blocks', 1]['total'] / footprint['stages', 1]['total']
  for layers in LAYER_SETS:
    growth[f'{layers}_2b_over_b'] = footprint[layers, 2]['total'] / footprint[layers, 1]['total']
  growth['target_blocks_over_stages_max'] = 1.5
  return growth


# ------------------------------------------------------------------------------
# PyTorch.
# ------------------------------------------------------------------------------


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


def _tap_modules(net, layers: Sequence[str]) -> Dict[str, Any]:
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
                                    **network_options(args)).to(
        self.device, memory_format=self.memory_format)
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn((args.batch, 3, args.frames, args.size, args.size), generator=generator)
    self.clips = clips.to(self.device, memory_format=self.memory_format)
    self.labels = torch.randint(0, args.num_classes, (args.batch,), generator=generator).to(
        self.device)
    self.size = (args.frames, args.size, args.size)
    self.layers = {layers: explain.resolve_layers(
        models.create(args.preset, num_classes=args.num_classes), layers)
        for layers in LAYER_SETS}
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
                     for name, module in _tap_modules(self.net, names).items())
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
    rss_before = _max_rss_bytes()
    start = time.perf_counter()
    self.sync(fn())
    first_call_s = time.perf_counter() - start
    seconds = time_calls(fn, args.steps, max(args.warmup - 1, 0), self.sync)
    return {
        'clips_per_s': args.batch * args.steps / sum(seconds),
        'seconds_per_step': float(np.median(seconds)),
        'first_call_s': first_call_s,
        'device_peak_bytes': (int(torch.cuda.max_memory_allocated(self.device))
                              if self.device.type == 'cuda' else None),
        'rss_growth_bytes': _max_rss_bytes() - rss_before if self.device.type == 'cpu' else None,
    }


def benchmark_torch(torch, torch_resnext, args) -> Dict[str, Dict[str, Any]]:
  """The PyTorch variants: {name: figures}, or {name: {'error': ...}} where one failed."""
  torch.manual_seed(0)
  runner = TorchBench(torch, torch_resnext, args)
  variants = [('forward', runner.forward_fn)]
  for layers in LAYER_SETS:
    variants += [(f'explain_hooks_{layers}', functools.partial(runner.explain_hooks_fn, layers)),
                 (f'explain_autograd_{layers}',
                  functools.partial(runner.explain_autograd_fn, layers))]
    if args.torch_compile:
      variants.append((f'explain_compiled_{layers}',
                       functools.partial(runner.explain_autograd_fn, layers, compiled=True)))
  variants.append(('train', runner.train_step_fn))
  results = {}
  for name, make in variants:
    try:
      results[name] = runner.measure(name, make())
    except Exception as e:  # pylint: disable=broad-except  (reported, e.g. torch.compile)
      if not name.startswith('explain_compiled'):
        raise
      results[name] = {'error': f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'}
    _print_progress('torch', name, results[name])
  return results


# ------------------------------------------------------------------------------
# Report.
# ------------------------------------------------------------------------------


def _print_progress(framework, name, figures):
  if 'error' in figures:
    print(f'  {framework} {name}: failed ({figures["error"]})', file=sys.stderr, flush=True)
  else:
    print(f'  {framework} {name}: {figures["clips_per_s"]:.2f} clips/s', file=sys.stderr,
          flush=True)


def add_flop_rates(results: Dict[str, Any], peak_tflops: float) -> None:
  """Achieved TFLOP/s and fraction of the peak, from the JAX programs' FLOP counts."""
  jax_results = results['jax']
  for framework, variants in (('jax', jax_results), ('torch', results.get('torch') or {})):
    for name, figures in variants.items():
      if 'error' in figures:
        continue
      jax_name = name if framework == 'jax' else _matching_jax_variant(name)
      flops = jax_results.get(jax_name, {}).get('flops_per_step')
      if flops:
        figures['tflops_per_s'] = flops * figures['clips_per_s'] / results['config']['batch'] / 1e12
        figures['peak_fraction'] = figures['tflops_per_s'] / peak_tflops
      else:
        figures['tflops_per_s'] = figures['peak_fraction'] = None


def _matching_jax_variant(torch_name: str) -> str:
  for jax_name, torch_variant in COMPARISONS:
    if torch_variant == torch_name:
      return jax_name
  return torch_name


def ratios(results: Dict[str, Any]) -> Dict[str, float]:
  """JAX clips/s over PyTorch clips/s for every comparable pair that ran."""
  out = {}
  torch_results = results.get('torch') or {}
  for jax_name, torch_name in COMPARISONS:
    jax_figures, torch_figures = results['jax'].get(jax_name), torch_results.get(torch_name)
    if jax_figures and torch_figures and 'error' not in torch_figures:
      out[f'{jax_name} / torch {torch_name}'] = (jax_figures['clips_per_s']
                                                 / torch_figures['clips_per_s'])
  return out


def _fmt_bytes(value) -> str:
  if value is None:
    return 'n/a'
  return f'{value / 2**20:.0f} MiB' if abs(value) < 2**30 else f'{value / 2**30:.2f} GiB'


def _fmt(value, spec) -> str:
  return 'n/a' if value is None else format(value, spec)


def format_report(results: Dict[str, Any]) -> str:
  config = results['config']
  stem = 'x'.join(str(k) for k in config['stem_kernel'])
  time_strides = ','.join(str(s) for s in config['temporal_strides'])
  lines = [f'{config["preset"]} (stem {stem}{"" if config["max_pool"] else ", no max pool"}, '
           f'time strides {time_strides}) '
           f'{config["frames"]}x{config["size"]}x{config["size"]} '
           f'batch {config["batch"]} {config["dtype"]} on {config["device_kind"]} '
           f'(conv_impl={config["conv_impl"]} -> {config["conv_impl_resolved"]}), '
           f'{config["steps"]} timed steps; peak {config["peak_tflops"]:.3g} TFLOP/s '
           f'({config["peak_source"]}); huge pages: {config["huge_pages"]}', '']
  header = (f'{"variant":<32}{"clips/s":>10}{"ms/step":>10}{"compile s":>11}{"TFLOP/s":>9}'
            f'{"% peak":>8}{"compiled":>11}{"dev peak":>11}{"RSS grow":>11}')
  lines += [header, '-' * len(header)]
  for framework in ('jax', 'torch'):
    for name, figures in (results.get(framework) or {}).items():
      label = f'{framework} {name}'
      if 'error' in figures:
        lines.append(f'{label:<32}failed: {figures["error"][:80]}')
        continue
      compile_s = figures.get('compile_s', figures.get('first_call_s'))
      fraction = figures.get('peak_fraction')
      compiled = (figures.get('compiled_bytes') or {}).get('total')
      lines.append(
          f'{label:<32}{figures["clips_per_s"]:>10.2f}{1e3 * figures["seconds_per_step"]:>10.1f}'
          f'{_fmt(compile_s, ".1f"):>11}{_fmt(figures.get("tflops_per_s"), ".3f"):>9}'
          f'{_fmt(None if fraction is None else 100 * fraction, ".1f"):>8}'
          f'{_fmt_bytes(compiled):>11}{_fmt_bytes(figures.get("device_peak_bytes")):>11}'
          f'{_fmt_bytes(figures.get("rss_growth_bytes")):>11}')
  lines.append('(torch "compile s" is the first call; PyTorch TFLOP/s use the FLOPs of the '
               'matching JAX program)')
  if results.get('ratios'):
    lines += ['', 'JAX / PyTorch (clips/s; > 1: JAX faster):']
    lines += [f'  {name:<52}{value:>8.2f}' for name, value in results['ratios'].items()]
  memory = results.get('explanation_memory') or {}
  if 'error' in memory:
    lines += ['', f'Explanation memory growth: {memory["error"]}']
  elif memory:
    lines += ['', 'Explanation memory (compiled footprint, total / temporaries):']
    for key in ('stages_b', 'blocks_b', 'stages_2b', 'blocks_2b'):
      lines.append(f'  {key:<12}{_fmt_bytes(memory[key + "_bytes"]):>11}'
                   f'{_fmt_bytes(memory[key + "_temp_bytes"]):>11}')
    lines.append(f'  blocks / stages {memory["blocks_over_stages"]:.2f} (target <= 1.5); '
                 f'2b / b: stages {memory["stages_2b_over_b"]:.2f}, '
                 f'blocks {memory["blocks_2b_over_b"]:.2f}')
  return '\n'.join(lines)


# ------------------------------------------------------------------------------
# Main.
# ------------------------------------------------------------------------------


def _integers(check: Callable[[Tuple[int, ...]], None], form: str):
  """An argparse type: comma-separated integers that pass `check` (a ValueError otherwise)."""

  def parse(text: str) -> Tuple[int, ...]:
    try:
      values = tuple(int(v) for v in text.split(','))
      check(values)
    except ValueError as error:
      raise argparse.ArgumentTypeError(f'{text!r}: {error} Write it as "{form}".')
    return values

  return parse


def argument_parser(description: str = __doc__.splitlines()[0]) -> argparse.ArgumentParser:
  """The network, clip, device and comparison flags (other scripts add theirs)."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--preset', default='resnext101', choices=sorted(models.PRESETS))
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=112)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--dtype', default='bfloat16', choices=sorted(train.DTYPES))
  parser.add_argument('--device', default='gpu', choices=('gpu', 'cpu'))
  parser.add_argument('--steps', type=int, default=10, help='timed calls per variant')
  parser.add_argument('--warmup', type=int, default=1, help='untimed calls before timing')
  parser.add_argument('--num_classes', type=int, default=101)
  parser.add_argument('--stem_kernel', default=(7, 7, 7),
                      type=_integers(models.check_stem_kernel, 'kT,kH,kW'),
                      help='conv1 kernel "kT,kH,kW" (configs/demo.py: 3,3,3)')
  parser.add_argument('--max_pool', default=True, action=argparse.BooleanOptionalAction,
                      help='the max pool after conv1 (configs/demo.py: --no-max_pool)')
  parser.add_argument('--temporal_strides', default=models.STAGE_STRIDES,
                      type=_integers(lambda strides: models.check_temporal_strides(
                          strides, len(models.STAGE_NAMES)), 's1,s2,s3,s4'),
                      help='time stride of layer1..layer4 (configs/demo.py: 1,1,1,1)')
  parser.add_argument('--conv_impl', default='auto', choices=conv.IMPLS)
  parser.add_argument('--peak_tflops', type=float, default=None,
                      help='device peak for the FLOP/s fraction (default: H200 figures on '
                           'GPU, an estimate on CPU)')
  parser.add_argument('--notorch', action='store_true', help='JAX figures only')
  parser.add_argument('--torch_compile', default=True, action=argparse.BooleanOptionalAction,
                      help='also run the torch.compile explanation variant')
  parser.add_argument('--torch_channels_last', default='auto', choices=('auto', 'on', 'off'),
                      help='channels_last_3d layout for PyTorch (auto: on GPU only)')
  parser.add_argument('--memory_scaling', default=True, action=argparse.BooleanOptionalAction,
                      help='compile the explanation at batch 2b for the memory growth')
  parser.add_argument('--out', default='', help='write the results as JSON here')
  return parser


def parse_args(argv=None, parser: Optional[argparse.ArgumentParser] = None) -> argparse.Namespace:
  """`argument_parser()`'s (or `parser`'s) flags from `argv`, checked."""
  parser = parser or argument_parser()
  args = parser.parse_args(argv)
  if min(args.steps, args.batch, args.frames, args.size) < 1 or args.warmup < 0:
    parser.error('--steps, --batch, --frames and --size must be >= 1, --warmup >= 0.')
  return args


def select_device(name: str):
  """The first JAX device of the platform --device names (set before JAX starts)."""
  platform_name = {'gpu': 'cuda', 'cpu': 'cpu'}[name]
  jax.config.update('jax_platforms', platform_name)   # No effect once JAX has started.
  if jax.default_backend() != {'cuda': 'gpu'}.get(platform_name, platform_name):
    raise ValueError(f'--device={name}, but JAX already runs on {jax.default_backend()}; run '
                     'bench.py in a fresh process.')
  return jax.devices()[0]


def _versions(torch) -> Dict[str, str]:
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  versions = {'python': platform.python_version(), 'jax': jax.__version__,
              'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
              'numpy': np.__version__}
  if torch is not None:
    versions['torch'] = torch.__version__
    versions['torch_threads'] = str(torch.get_num_threads())
  return versions


def main(argv=None) -> Dict[str, Any]:
  """Runs every variant, prints the report, writes --out; returns the results."""
  args = parse_args(argv)
  device = select_device(args.device)
  with conv.use_impl(args.conv_impl):   # Read when each program is traced.
    return _benchmark(args, device)


def _benchmark(args: argparse.Namespace, device) -> Dict[str, Any]:
  """`main` once the device and the convolution implementation are set."""
  torch, torch_resnext = (None, None) if args.notorch else import_torch()
  if args.peak_tflops:
    peak, source = args.peak_tflops, '--peak_tflops'
  elif args.device == 'gpu':
    peak, source = GPU_PEAK_TFLOPS[args.dtype], f'H200 dense {args.dtype}'
  else:
    peak, source = cpu_peak_tflops()
  results = {'config': {
      **vars(args),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'device_kind': device.device_kind, 'cpu_count': os.cpu_count(),
      'machine': platform.platform(),
      'conv_impl_resolved': conv.resolve_impl(),
      'huge_pages': hugepages.status(),
      'peak_tflops': peak, 'peak_source': source,
      'versions': _versions(torch), 'torch_available': torch is not None}}
  results['jax'], results['explanation_memory'] = benchmark_jax(args, device)
  if torch is not None:
    results['torch'] = benchmark_torch(torch, torch_resnext, args)
  add_flop_rates(results, peak)
  results['ratios'] = ratios(results)
  print(format_report(results), flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=1, default=str)
  return results


if __name__ == '__main__':
  hugepages.restart_with_huge_pages()   # Faster XLA:CPU calls; see gla_jax/hugepages.py.
  main()
