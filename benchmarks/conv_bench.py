"""Per-layer convolution times: XLA, the fast CPU path and PyTorch, side by side.

For every distinct convolution of a preset at a clip size (input shape,
kernel, strides, padding, groups; `x N` counts its repeats in the network)
this times, on one device:
  fwd   the convolution;
  dx    the input gradient (the output cotangent given);
  dw    the kernel gradient;
for `conv.conv3d(impl='xla')` (`lax.conv_general_dilated` and XLA's own
gradients), `conv.conv3d(impl='fast')` (the CPU reformulations of
`gla_jax.conv`) and, when PyTorch imports, `torch.nn.functional.conv3d` and
`aten.convolution_backward` (what autograd runs) on NCDHW tensors. Times are
medians of `--repeats` calls after one warm-up call, in milliseconds; the
ratio columns are PyTorch time / JAX time (above 1: JAX is faster). The last
rows sum each column over the network, weighted by the repeat counts.

Run:
  python -m benchmarks.conv_bench --preset=resnext50 --frames=16 --size=64 --batch=2
  python -m benchmarks.conv_bench --preset=tiny --frames=8 --size=32 --batch=16 --impls=fast
"""
import argparse
import collections
import functools
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from gla_jax import models
from gla_jax.models import conv

PASSES = ('fwd', 'dx', 'dw')
JAX_IMPLS = ('xla', 'fast')

# One distinct convolution of the network.
Layer = collections.namedtuple(
    'Layer', 'name count x_shape kernel_shape strides padding groups')


def network_layers(preset: str, clip_shape) -> list:
  """The distinct convolutions of `preset` on `clip_shape` [B, T, H, W, 3], in network order.

  Traced abstractly (`jax.eval_shape`), reading every `models.Conv3D` call
  with `flax.linen.intercept_methods`, so the list follows the model code.
  """
  calls = []

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, models.Conv3D) and context.method_name == '__call__':
      x = args[0]
      in_per_group = x.shape[-1] // module.feature_group_count
      calls.append(('.'.join(module.scope.path),
                    (tuple(x.shape), (*module.kernel_size, in_per_group, module.features),
                     tuple(module.strides), tuple((p, p) for p in module.padding),
                     module.feature_group_count)))
    return next_fun(*args, **kwargs)

  model = models.create(preset, num_classes=10)
  with nn.intercept_methods(record):
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                   jax.ShapeDtypeStruct(clip_shape, jnp.float32))
  counts = collections.Counter(signature for _, signature in calls)
  layers, seen = [], set()
  for name, signature in calls:
    if signature not in seen:
      seen.add(signature)
      layers.append(Layer(name, counts[signature], *signature))
  return layers


def _jax_passes(layer: Layer, impl: str, dtype):
  """{pass: (jitted function, arguments)} of one layer with `impl`."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=layer.x_shape), dtype)
  kernel = jnp.asarray(rng.normal(size=layer.kernel_shape) * 0.1, dtype)

  def forward(x, kernel):
    return conv.conv3d(x, kernel, layer.strides, layer.padding, layer.groups, impl=impl)

  y_shape = jax.eval_shape(forward, x, kernel).shape
  gy = jnp.asarray(rng.normal(size=y_shape), dtype)
  dx = lambda x, kernel, gy: jax.vjp(lambda x: forward(x, kernel), x)[1](gy)[0]
  dw = lambda x, kernel, gy: jax.vjp(lambda k: forward(x, k), kernel)[1](gy)[0]
  return {'fwd': (jax.jit(forward), (x, kernel)),
          'dx': (jax.jit(dx), (x, kernel, gy)),
          'dw': (jax.jit(dw), (x, kernel, gy))}


def _torch_passes(torch, layer: Layer, dtype: str):
  """{pass: (function, arguments)} of one layer in PyTorch (NCDHW)."""
  torch_dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[dtype]
  generator = torch.Generator().manual_seed(0)
  b, t, h, w, cin = layer.x_shape
  x = torch.randn((b, cin, t, h, w), generator=generator).to(torch_dtype)
  kt, kh, kw, cin_g, cout = layer.kernel_shape
  weight = (torch.randn((cout, cin_g, kt, kh, kw), generator=generator) * 0.1).to(torch_dtype)
  padding = [lo for lo, _ in layer.padding]
  forward = functools.partial(torch.nn.functional.conv3d, stride=layer.strides,
                              padding=padding, groups=layer.groups)
  with torch.no_grad():
    gy = torch.randn(forward(x, weight).shape, generator=generator).to(torch_dtype)

  def backward(mask):
    return lambda x, weight, gy: torch.ops.aten.convolution_backward(
        gy, x, weight, None, layer.strides, padding, [1, 1, 1], False, [0, 0, 0],
        layer.groups, mask)

  return {'fwd': (forward, (x, weight)),
          'dx': (backward([True, False, False]), (x, weight, gy)),
          'dw': (backward([False, True, False]), (x, weight, gy))}


def _median_ms(fn, args, repeats, sync):
  return 1e3 * float(np.median(harness.time_calls(lambda: fn(*args), repeats, 1, sync)))


def measure(layers, impls, dtype: str, repeats: int, torch=None):
  """{(layer index, impl, pass): milliseconds}; impl 'torch' when `torch` is given."""
  times = {}
  for index, layer in enumerate(layers):
    for impl in impls:
      for name, (fn, args) in _jax_passes(layer, impl, jnp.dtype(dtype)).items():
        times[index, impl, name] = _median_ms(fn, args, repeats, jax.block_until_ready)
    if torch is not None:
      with torch.no_grad():
        for name, (fn, args) in _torch_passes(torch, layer, dtype).items():
          times[index, 'torch', name] = _median_ms(fn, args, repeats, lambda _: None)
    print(f'  measured {layer.name}', file=sys.stderr, flush=True)
  return times


def format_table(layers, impls, times) -> str:
  """The table: one row per layer and a weighted total, times and PyTorch/JAX ratios."""
  columns = [*impls, *(['torch'] if any(key[1] == 'torch' for key in times) else [])]
  ratios = [impl for impl in impls if 'torch' in columns]
  header = f'{"layer":<24}{"x":>3} {"input":<18}{"kernel":<16}{"s":<6}{"g":>3} {"pass":<4}'
  header += ''.join(f'{c + " ms":>11}' for c in columns)
  header += ''.join(f'{"torch/" + impl:>12}' for impl in ratios)
  lines = [header, '-' * len(header)]
  totals = collections.defaultdict(float)
  for index, layer in enumerate(layers):
    for pass_name in PASSES:
      row_times = {c: times[index, c, pass_name] for c in columns}
      for c, value in row_times.items():
        totals[c, pass_name] += value * layer.count
      shape = 'x'.join(map(str, layer.x_shape[1:]))
      kernel = 'x'.join(map(str, layer.kernel_shape))
      strides = ''.join(map(str, layer.strides))
      line = (f'{layer.name:<24.24}{layer.count:>3} {shape:<18}{kernel:<16}{strides:<6}'
              f'{layer.groups:>3} {pass_name:<4}')
      line += ''.join(f'{row_times[c]:>11.2f}' for c in columns)
      line += ''.join(f'{row_times["torch"] / row_times[impl]:>12.2f}' for impl in ratios)
      lines.append(line)
  lines.append('-' * len(header))
  for pass_name in (*PASSES, 'all'):
    passes = PASSES if pass_name == 'all' else (pass_name,)
    total = {c: sum(totals[c, p] for p in passes) for c in columns}
    line = f'{"network total":<24}{"":>3} {"":<18}{"":<16}{"":<6}{"":>3} {pass_name:<4}'
    line += ''.join(f'{total[c]:>11.1f}' for c in columns)
    line += ''.join(f'{total["torch"] / total[impl]:>12.2f}' for impl in ratios)
    lines.append(line)
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='resnext50', choices=sorted(models.PRESETS))
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--repeats', type=int, default=5, help='timed calls per measurement')
  parser.add_argument('--impls', nargs='+', default=list(JAX_IMPLS), choices=JAX_IMPLS)
  parser.add_argument('--notorch', action='store_true', help='skip PyTorch')
  parser.add_argument('--layers', default='', help='only layers whose name contains this')
  args = parser.parse_args(argv)

  clip_shape = (args.batch, args.frames, args.size, args.size, 3)
  layers = [layer for layer in network_layers(args.preset, clip_shape)
            if args.layers in layer.name]
  torch = None if args.notorch else harness.import_torch()[0]
  print(f'{args.preset} on {clip_shape} {args.dtype}, {jax.devices()[0].device_kind}, '
        f'{len(layers)} distinct convolutions; median of {args.repeats} calls'
        + (f'; PyTorch {torch.__version__} with {torch.get_num_threads()} threads'
           if torch is not None else '; no PyTorch'), flush=True)
  times = measure(layers, args.impls, args.dtype, args.repeats, torch)
  print(format_table(layers, args.impls, times))
  return times


if __name__ == '__main__':
  main()
