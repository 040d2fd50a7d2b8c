r"""JAX against PyTorch on the same network, in one run: training step, explanation, forward.

  python -m benchmarks.bench --preset=resnext101 --frames=16 --size=112 --batch=32 \
      --dtype=bfloat16 --device=gpu --steps=20 --out=/tmp/bench.json
  # configs/demo.py's network on CPU (Hara's architecture is the default):
  python -m benchmarks.bench --preset=tiny --frames=8 --size=32 --batch=16 \
      --dtype=float32 --device=cpu --steps=3 --stem_kernel=3,3,3 --no-max_pool \
      --temporal_strides=1,1,1,1

Variants, on one device with the same preset, clip and batch: JAX `train`
(`train_step.make_train_step`, on uint8 clips it normalises), `explain_stages` / `explain_blocks`
(`explain.make_explainer`, Grad-CAM of the argmax score) and `forward`;
PyTorch (`tests/torch_resnext.py`, see `benchmarks.torch_side`) `train`,
`explain_hooks` (forward hooks and one `backward()`), `explain_autograd`
(`torch.autograd.grad` of the taps only), `explain_compiled` (the same, block
by block `torch.compile`d; a failure is reported) and `forward`. On GPU
PyTorch runs under bfloat16 autocast when --dtype=bfloat16, channels_last_3d
unless --torch_channels_last=off.

Reported per variant: clips/s (warm-up excluded), JAX compile time, achieved
FLOP/s (XLA's cost analysis of the JAX program with `lax` convolutions; the
PyTorch variants are credited with the matching JAX program's FLOPs) as a
fraction of --peak_tflops (H200 dense: bfloat16 989, float32 67; on CPU an
estimate), the compiled footprint, the device's peak memory and on CPU the
growth of max RSS; then JAX / PyTorch clips/s and the explanation's memory
growth (`blocks` over `stages`, batch 2b over b, compiled, not run). --out
writes every figure as JSON. Results: docs/results.md.
"""
import argparse
import datetime
import functools
import os
import platform
import sys
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import numpy as np

from benchmarks import harness
from benchmarks import torch_side
from gla_jax import hugepages
from gla_jax.models import conv

LAYER_SETS = harness.LAYER_SETS
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
# JAX.
# ------------------------------------------------------------------------------


def _run_jax(compiled, args: Tuple, steps: int, warmup: int, batch: int, device,
             carry: Optional[Callable[[Any], Tuple]] = None) -> Dict[str, Any]:
  """Times `compiled(*args)`; `carry(result)` gives the next call's arguments (donated state)."""
  args = [args]
  rss_before = harness.max_rss_bytes()

  def call():
    result = compiled(*args[0])
    if carry is not None:
      args[0] = carry(result)
    return result

  seconds = harness.time_calls(call, steps, warmup, jax.block_until_ready)
  return {
      'clips_per_s': batch * steps / sum(seconds),
      'seconds_per_step': float(np.median(seconds)),
      'device_peak_bytes': harness.device_peak_bytes(device),
      'rss_growth_bytes': (harness.max_rss_bytes() - rss_before
                           if device.platform == 'cpu' else None),
  }


def benchmark_jax(args, device) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
  """The JAX variants ({name: figures}) and the explanation's memory growth."""
  setup = harness.jax_setup(args)
  programs, arguments = setup['programs'], setup['arguments']
  flops = setup['flops']()
  results = {}
  for name, jitted in programs.items():
    compiled, compile_s = harness.compile_timed(jitted, *arguments[name])
    figures = _run_jax(compiled, arguments[name], args.steps, args.warmup, args.batch, device,
                       setup['carry'][name])
    figures.update(compile_s=compile_s, flops_per_step=flops[name],
                   compiled_bytes=harness.compiled_bytes(compiled))
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
    footprints: {layer set: `harness.compiled_bytes` at the batch of `video`}.
    variables: the model's variables.
    video: the benchmark's batch; the explainers are compiled (not run) at twice it.
  """
  double = jax.ShapeDtypeStruct((2 * video.shape[0], *video.shape[1:]), video.dtype,
                                sharding=video.sharding)
  footprint = {}
  for layers in LAYER_SETS:
    footprint[layers, 1] = footprints[layers]
    footprint[layers, 2] = harness.compiled_bytes(
        harness.compile_timed(explainers[layers], variables, double, None)[0])
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


def benchmark_torch(torch, torch_resnext, args) -> Dict[str, Dict[str, Any]]:
  """The PyTorch variants: {name: figures}, or {name: {'error': ...}} where one failed."""
  torch.manual_seed(0)
  runner = torch_side.TorchBench(torch, torch_resnext, args)
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
          f'{harness.format_bytes(compiled):>11}'
          f'{harness.format_bytes(figures.get("device_peak_bytes")):>11}'
          f'{harness.format_bytes(figures.get("rss_growth_bytes")):>11}')
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
      lines.append(f'  {key:<12}{harness.format_bytes(memory[key + "_bytes"]):>11}'
                   f'{harness.format_bytes(memory[key + "_temp_bytes"]):>11}')
    lines.append(f'  blocks / stages {memory["blocks_over_stages"]:.2f} (target <= 1.5); '
                 f'2b / b: stages {memory["stages_2b_over_b"]:.2f}, '
                 f'blocks {memory["blocks_2b_over_b"]:.2f}')
  return '\n'.join(lines)


# ------------------------------------------------------------------------------
# Main.
# ------------------------------------------------------------------------------


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
  args = harness.parse_args(argv, harness.argument_parser(__doc__.splitlines()[0]))
  device = harness.select_device(args.device)
  with conv.use_impl(args.conv_impl):   # Read when each program is traced.
    return _benchmark(args, device)


def _benchmark(args: argparse.Namespace, device) -> Dict[str, Any]:
  """`main` once the device and the convolution implementation are set."""
  torch, torch_resnext = (None, None) if args.notorch else harness.import_torch()
  if args.peak_tflops:
    peak, source = args.peak_tflops, '--peak_tflops'
  elif args.device == 'gpu':
    peak, source = GPU_PEAK_TFLOPS[args.dtype], f'H200 dense {args.dtype}'
  else:
    peak, source = harness.cpu_peak_tflops()
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
  return harness.print_and_save(results, format_report(results), args.out)


if __name__ == '__main__':
  hugepages.restart_with_huge_pages()   # Faster XLA:CPU calls; see gla_jax/hugepages.py.
  main()
