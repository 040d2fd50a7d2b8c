r"""Each explanation method against the PyTorch tool doing the same work, in one run.

  # configs/demo.py's network on CPU:
  python -m benchmarks.methods_bench --preset=tiny --frames=8 --size=32 --batch=8 \
      --dtype=float32 --device=cpu --steps=2 --stem_kernel=3,3,3 --no-max_pool \
      --temporal_strides=1,1,1,1
  # The GPU check (benchmarks/gpu_check.sh): ResNeXt-101, 16x112x112, batch 8, bfloat16.
  python -m benchmarks.methods_bench --preset=resnext101 --frames=16 --size=112 --batch=8 \
      --dtype=bfloat16 --device=gpu --steps=3
  # Memory only (compiled, not run): does Score-CAM of ResNeXt-101 at batch 8 fit 16 GB?
  python -m benchmarks.methods_bench --preset=resnext101 --frames=16 --size=112 --batch=8 \
      --dtype=bfloat16 --device=cpu --memory_only --methods=scorecam:layer4

Pairs, each explaining the argmax class of the same random clips (random weights: the work
does not depend on them): `saliency`, `integrated_gradients` (--ig_steps, the trapezoid rule),
`smoothgrad` (--smooth_samples) and `occlusion` (--occlusion_patch, --occlusion_stride) of
`explain.attribute` against captum's Saliency, IntegratedGradients(method='riemann_trapezoid'),
NoiseTunnel(Saliency) and Occlusion; `scorecam:<layer>` and `ablationcam:<layer>` of
`explain.explain` against the same algorithms written in PyTorch (`benchmarks.torch_methods`),
--chunk_size channels, steps, samples or windows per batched pass on both sides; the gradient
CAMs `<method>:<layer>` against pytorch-grad-cam's class for it on 5-D activations (a crash is
reported). Per method: clips/s of each side (warm-up excluded), their ratio, the JAX program's
compiled footprint (XLA's memory analysis, total and temporaries), compile time, and the
device's peak memory (GPU) or the growth of max RSS (CPU). Results: docs/results.md.
"""
import argparse
import datetime
import functools
import platform
import sys
from typing import Any, Callable, Dict, Tuple

import jax
import numpy as np

from benchmarks import harness
from gla_jax import explain
from gla_jax import models
from gla_jax.explain import attribution
from gla_jax.models import building
from gla_jax.models import conv

ATTRIBUTIONS = attribution.ATTRIBUTION_METHODS
DEFAULT_METHODS = ('saliency', 'integrated_gradients', 'smoothgrad', 'occlusion',
                   'scorecam:layer4', 'ablationcam:layer4', 'gradcam:layer4', 'hirescam:layer4',
                   'gradcam_elementwise:layer4', 'xgradcam:layer4', 'eigencam:layer4')
# A 16 GB accelerator: the bound the issue sets for Score-CAM of ResNeXt-101 at batch 8.
MEMORY_BUDGET_BYTES = 16 * 2**30


def _methods(text: str) -> Tuple[str, ...]:
  names = tuple(name.strip() for name in text.split(',') if name.strip())
  for name in names:
    method, _, layer = name.partition(':')
    if method not in ATTRIBUTIONS and not layer:
      raise argparse.ArgumentTypeError(f'{name!r}: a CAM needs its layer, e.g. {method}:layer4.')
    if method not in ATTRIBUTIONS and method not in explain.METHODS:
      raise argparse.ArgumentTypeError(
          f'{name!r}: unknown method; use one of {ATTRIBUTIONS} or <cam>:<layer> with <cam> in '
          f'{explain.METHODS}.')
  return names


def _triple(text: str) -> Tuple[int, int, int]:
  values = tuple(int(v) for v in text.split(','))
  if len(values) != 3 or min(values) < 1:
    raise argparse.ArgumentTypeError(f'{text!r}: write three positive integers "t,h,w".')
  return values


def argument_parser() -> argparse.ArgumentParser:
  parser = harness.argument_parser(__doc__.splitlines()[0])
  parser.set_defaults(batch=8)
  parser.add_argument('--methods', type=_methods, default=DEFAULT_METHODS,
                      help='comma-separated: attributions by name, CAMs as <method>:<layer>')
  parser.add_argument('--ig_steps', type=int, default=32)
  parser.add_argument('--smooth_samples', type=int, default=16)
  parser.add_argument('--noise_std', type=float, default=0.15)
  parser.add_argument('--occlusion_patch', type=_triple, default=(4, 16, 16))
  parser.add_argument('--occlusion_stride', type=_triple, default=(4, 16, 16))
  parser.add_argument('--chunk_size', type=int, default=8,
                      help='channels, steps, samples or windows per batched pass (both sides)')
  parser.add_argument('--memory_only', action='store_true',
                      help='compile the JAX programs and report their footprint; run nothing')
  return parser


# ------------------------------------------------------------------------------
# JAX.
# ------------------------------------------------------------------------------


def _jax_program(model, args, name: str) -> Tuple[Callable, Callable[[Any, Any], Tuple]]:
  """(jitted function, its arguments from (variables, video)) for one method."""
  method, _, layer = name.partition(':')
  if method in ATTRIBUTIONS:
    patch = stride = None
    if method == 'occlusion':
      patch, stride = attribution.check_window(args.occlusion_patch, args.occlusion_stride,
                                               (args.frames, args.size, args.size))
    jitted = attribution.make_attributor(
        model, method, args.smooth_samples if method == 'smoothgrad' else 0, patch, stride,
        args.chunk_size)
    steps = jax.numpy.int32(args.ig_steps if method == 'integrated_gradients' else 0)
    zero = jax.numpy.zeros((), jax.numpy.float32)
    return jitted, lambda v, x: (v, x, None, zero, steps, jax.numpy.float32(args.noise_std),
                                 jax.random.key(0), None)
  jitted = explain.make_explainer(model, method, (layer,), 'mean', chunk_size=args.chunk_size)
  return jitted, lambda v, x: (v, x, None)


def benchmark_jax(args, device, model, variables, video) -> Dict[str, Dict[str, Any]]:
  results = {}
  for name in args.methods:
    jitted, arguments = _jax_program(model, args, name)
    call_args = arguments(variables, video)
    compiled, compile_s = harness.compile_timed(jitted, *call_args)
    figures = {'compile_s': compile_s, 'compiled_bytes': harness.compiled_bytes(compiled)}
    if not args.memory_only:
      rss_before = harness.max_rss_bytes()
      seconds = harness.time_calls(functools.partial(compiled, *call_args), args.steps,
                                   args.warmup, jax.block_until_ready)
      figures.update(clips_per_s=args.batch * args.steps / sum(seconds),
                     seconds_per_step=float(np.median(seconds)),
                     device_peak_bytes=harness.device_peak_bytes(device),
                     rss_growth_bytes=(harness.max_rss_bytes() - rss_before
                                       if device.platform == 'cpu' else None))
    results[name] = figures
    _print_progress('jax', name, figures)
    del compiled
  return results


# ------------------------------------------------------------------------------
# PyTorch.
# ------------------------------------------------------------------------------


def benchmark_torch(torch, torch_resnext, args) -> Dict[str, Dict[str, Any]]:
  """{method: figures of its PyTorch peer}, or {'error': ...} where the peer failed."""
  from benchmarks import torch_methods  # pylint: disable=g-import-not-at-top  (needs torch)
  from benchmarks import torch_side  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  runner = torch_side.TorchBench(torch, torch_resnext, args)
  results = {}
  for name, make in torch_methods.peers(runner, args).items():
    try:
      results[name] = runner.measure(name, make())
    except Exception as e:  # pylint: disable=broad-except  (reported: a peer that crashes on 3-D)
      results[name] = {'error': f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'}
    _print_progress('torch', name, results[name])
  return results


# ------------------------------------------------------------------------------
# Report.
# ------------------------------------------------------------------------------


def _print_progress(framework: str, name: str, figures: Dict[str, Any]) -> None:
  if 'error' in figures:
    text = f'failed ({figures["error"]})'
  elif 'clips_per_s' in figures:
    text = f'{figures["clips_per_s"]:.2f} clips/s'
  else:
    text = f'compiled {harness.format_bytes((figures["compiled_bytes"] or {}).get("total"))}'
  print(f'  {framework} {name}: {text}', file=sys.stderr, flush=True)



def format_report(results: Dict[str, Any]) -> str:
  config = results['config']
  lines = [f'{config["preset"]} {config["frames"]}x{config["size"]}x{config["size"]} batch '
           f'{config["batch"]} {config["dtype"]} on {config["device_kind"]}; chunk '
           f'{config["chunk_size"]}, IG steps {config["ig_steps"]}, SmoothGrad samples '
           f'{config["smooth_samples"]}, occlusion patch {config["occlusion_patch"]} stride '
           f'{config["occlusion_stride"]}; {config["steps"]} timed calls', '']
  header = (f'{"method":<28}{"JAX clips/s":>12}{"peer clips/s":>13}{"JAX/peer":>9}'
            f'{"compiled":>11}{"temp":>11}{"compile s":>10}{"JAX peak":>11}{"peer peak":>11}')
  lines += [header, '-' * len(header)]
  for name, ours in results['jax'].items():
    peer = (results.get('torch') or {}).get(name, {})
    compiled = ours.get('compiled_bytes') or {}
    ratio = results['ratios'].get(name)
    peak_key = 'device_peak_bytes' if config['device'] == 'gpu' else 'rss_growth_bytes'
    lines.append(
        f'{name:<28}{_number(ours.get("clips_per_s")):>12}'
        f'{("failed" if "error" in peer else _number(peer.get("clips_per_s"))):>13}'
        f'{_number(ratio):>9}{harness.format_bytes(compiled.get("total")):>11}'
        f'{harness.format_bytes(compiled.get("temp")):>11}{ours["compile_s"]:>10.1f}'
        f'{harness.format_bytes(ours.get(peak_key)):>11}'
        f'{harness.format_bytes(peer.get(peak_key)):>11}')
  failures = [f'  {name}: {figures["error"]}' for name, figures in
              (results.get('torch') or {}).items() if 'error' in figures]
  if failures:
    lines += ['', 'PyTorch peers that failed:', *failures]
  fits = results.get('memory_budget')
  if fits:
    lines += ['', 'Within a 16 GB accelerator (compiled footprint): ' + ', '.join(
        f'{name} {"yes" if ok else "NO"}' for name, ok in fits.items())]
  peak = 'device peak' if config['device'] == 'gpu' else 'growth of max RSS'
  lines.append(f'(peaks: {peak}; JAX/peer > 1: JAX faster)')
  return '\n'.join(lines)


def _number(value) -> str:
  return 'n/a' if value is None else f'{value:.2f}'


# ------------------------------------------------------------------------------
# Main.
# ------------------------------------------------------------------------------


def main(argv=None) -> Dict[str, Any]:
  """Runs every method on both sides, prints the report, writes --out; returns the results."""
  args = harness.parse_args(argv, argument_parser())
  if min(args.ig_steps - 1, args.smooth_samples, args.chunk_size) < 1:
    raise SystemExit('--ig_steps must be >= 2, --smooth_samples and --chunk_size >= 1.')
  device = harness.select_device(args.device)
  with conv.use_impl(args.conv_impl):   # Read when each program is traced.
    return _benchmark(args, device)


def _benchmark(args: argparse.Namespace, device) -> Dict[str, Any]:
  config = harness.jax_config(args)
  model = building.create_model(config)
  variables = models.init_variables(model, jax.random.key(0),
                                    clip_shape=building.clip_shape(config))
  video = jax.device_put(np.random.default_rng(0).standard_normal(
      (args.batch, args.frames, args.size, args.size, 3)).astype(np.float32), device)
  results = {'config': {
      **vars(args), 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'device_kind': device.device_kind, 'machine': platform.platform()}}
  results['jax'] = benchmark_jax(args, device, model, variables, video)
  torch, torch_resnext = (None, None) if (args.notorch or args.memory_only) else (
      harness.import_torch())
  if torch is not None:
    results['torch'] = benchmark_torch(torch, torch_resnext, args)
  results['ratios'] = {
      name: figures['clips_per_s'] / peer['clips_per_s']
      for name, figures in results['jax'].items()
      for peer in [(results.get('torch') or {}).get(name, {})]
      if 'clips_per_s' in figures and 'clips_per_s' in peer}
  results['memory_budget'] = {
      name: figures['compiled_bytes']['total'] <= MEMORY_BUDGET_BYTES
      for name, figures in results['jax'].items()
      if name.startswith('scorecam') and figures.get('compiled_bytes')}
  return harness.print_and_save(results, format_report(results), args.out)


if __name__ == '__main__':
  main()
