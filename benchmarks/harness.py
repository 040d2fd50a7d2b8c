"""What the benchmark scripts share: flags, device, timing, the JAX programs, PyTorch import.

`argument_parser` / `parse_args` give the network, clip, device and
comparison flags of `benchmarks.bench` (other scripts add theirs);
`jax_setup` builds the JAX variants (training step, explainers, forward) as
`benchmarks.bench` times them; `time_calls` times any callable;
`import_torch` imports PyTorch and the test suite's reference network.
"""
import argparse
import functools
import json
import os
import resource
import time
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gla_jax import defaults
from gla_jax import explain
from gla_jax import models
from gla_jax import parallel
from gla_jax.models import building
from gla_jax.models import conv
from gla_jax.training import optimization
from gla_jax.training import train_state
from gla_jax.training import train_step

LAYER_SETS = ('stages', 'blocks')


# ------------------------------------------------------------------------------
# Timing and the machine.
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

  `torch_resnext` is the reference network of the test suite
  (`tests/torch_resnext.py`, imported as `from tests import torch_resnext`).

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
  from tests import torch_resnext  # pylint: disable=g-import-not-at-top  (needs torch)
  return torch, torch_resnext


def format_bytes(value) -> str:
  """MiB or GiB for a report; 'n/a' for None."""
  if value is None:
    return 'n/a'
  return f'{value / 2**20:.0f} MiB' if abs(value) < 2**30 else f'{value / 2**30:.2f} GiB'


def print_and_save(results: Dict[str, Any], report: str, out: str) -> Dict[str, Any]:
  """Prints a benchmark's report, writes its results as JSON to `out` (if given); returns them."""
  print(report, flush=True)
  if out:
    with open(out, 'w') as f:
      json.dump(results, f, indent=1, default=str)
  return results


def max_rss_bytes() -> int:
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


def select_device(name: str):
  """The first JAX device of the platform --device names (set before JAX starts)."""
  platform_name = {'gpu': 'cuda', 'cpu': 'cpu'}[name]
  jax.config.update('jax_platforms', platform_name)   # No effect once JAX has started.
  if jax.default_backend() != {'cuda': 'gpu'}.get(platform_name, platform_name):
    raise ValueError(f'--device={name}, but JAX already runs on {jax.default_backend()}; run '
                     'the benchmark in a fresh process.')
  return jax.devices()[0]


# ------------------------------------------------------------------------------
# Compiled JAX programs.
# ------------------------------------------------------------------------------


def compiled_bytes(compiled) -> Optional[Dict[str, int]]:
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


def program_flops(stage) -> Optional[float]:
  """`cost_analysis()['flops']` of a lowered or compiled program, None where unknown."""
  cost = stage.cost_analysis()
  if isinstance(cost, (list, tuple)):    # Older JAX: one dict per device program.
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def compile_timed(jitted, *args) -> Tuple[Any, float]:
  """`jitted` lowered and compiled for `args`, and the seconds that took."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def device_peak_bytes(device) -> Optional[int]:
  stats = device.memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


# ------------------------------------------------------------------------------
# The JAX variants.
# ------------------------------------------------------------------------------


def _jax_programs(model, tx, learning_rate_fn, labels, mesh, make_explainer: Callable, mean,
                  std) -> Dict[str, Any]:
  """{variant: jitted function}, the smallest memory first (so the process-wide
  device peak tracks each variant). The training step takes uint8 clips and
  normalises them (`mean`, `std`), as in training; the others normalised ones."""
  programs = {'forward': jax.jit(lambda v, x: model.apply(v, x, train=False))}
  for layers in LAYER_SETS:
    programs[f'explain_{layers}'] = make_explainer(model, 'gradcam', layers, 'mean')
  programs['train'] = train_step.make_train_step(model, tx, learning_rate_fn, labels, mesh,
                                                 mean=mean, std=std)
  return programs


def model_flops(arguments: Dict[str, Tuple], model, tx, learning_rate_fn, labels, mesh,
                mean, std) -> Dict[str, Optional[float]]:
  """FLOPs per call of each variant: XLA's cost analysis of it with `lax` convolutions.

  The variants are traced anew with `conv_impl='xla'` and lowered, not
  compiled: the count is the network's convolutions and everything else as
  written, whichever implementation runs. (The fast CPU path's own programs
  would under-count: XLA's cost analysis counts a loop's body once.)
  """
  with conv.use_impl('xla'):
    # make_explainer's cache would return the already traced explainers.
    programs = _jax_programs(model, tx, learning_rate_fn, labels, mesh,
                             explain.make_explainer.__wrapped__, mean, std)
    return {name: program_flops(jitted.lower(*arguments[name]))
            for name, jitted in programs.items()}


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
  model = building.create_model(config)
  mesh = parallel.make_mesh(1)
  learning_rate_fn = optimization.create_learning_rate_fn(config)
  params_shapes = jax.eval_shape(
      functools.partial(models.init_variables, model, clip_shape=building.clip_shape(config)),
      jax.random.key(0))['params']
  tx = optimization.create_optimizer(config, params_shapes, learning_rate_fn)
  labels = optimization.trainable_labels(params_shapes, config.train.freeze_until)
  state = parallel.replicate(train_state.create_train_state(config, model, jax.random.key(0), tx),
                            mesh)

  rng = np.random.default_rng(0)
  # uint8 clips as the loader gives them; the forward pass and the explainers
  # take them normalised on the device.
  clips = rng.integers(0, 256, (args.batch, args.frames, args.size, args.size, 3), np.uint8)
  batch = parallel.shard_batch({
      'video': clips,
      'label': rng.integers(0, args.num_classes, args.batch).astype(np.int32),
      'mask': np.ones(args.batch, bool)}, mesh)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  video = jax.jit(models.normalize_video, static_argnames=('mean', 'std'))(
      batch['video'], mean=mean, std=std)
  variables = jax.tree.map(jnp.copy, state.variables)   # The training step donates the state.

  arguments = {'forward': (variables, video), 'train': (state, batch),
               **{f'explain_{layers}': (variables, video, None) for layers in LAYER_SETS}}
  programs = _jax_programs(model, tx, learning_rate_fn, labels, mesh, explain.make_explainer,
                           mean, std)
  carry = {name: (lambda result: (result[0], batch)) if name == 'train' else None
           for name in programs}
  return {'programs': programs, 'arguments': arguments, 'carry': carry,
          'flops': functools.partial(model_flops, arguments, model, tx, learning_rate_fn,
                                     labels, mesh, mean, std),
          'variables': variables, 'video': video}


# ------------------------------------------------------------------------------
# Flags.
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


def argument_parser(description: str = 'JAX against PyTorch on the same network, in one run: '
                    'training step, explanation, forward.') -> argparse.ArgumentParser:
  """The network, clip, device and comparison flags (other scripts add theirs)."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--preset', default='resnext101', choices=sorted(models.PRESETS))
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=112)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--dtype', default='bfloat16', choices=sorted(building.DTYPES))
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
