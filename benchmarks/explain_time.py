"""Time of one explanation batch (global-local Grad-CAM over the stages), random weights.

  python -m benchmarks.explain_time --preset=tiny --batch=16 --frames=8 --size=32
  python -m benchmarks.explain_time --preset=resnext101 --batch=2 --frames=16 --size=112

Prints the first call (compilation included) and the best of `--repeats`
further calls, on the default JAX backend. For the side-by-side comparison
with PyTorch, see `benchmarks.bench`.
"""
import argparse
import time

import jax
import numpy as np

from gla_jax import explain
from gla_jax import models


def _timed(function) -> float:
  start = time.perf_counter()
  jax.block_until_ready(function().attention)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='tiny', choices=sorted(models.PRESETS))
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--layers', default='stages', choices=('stages', 'blocks'))
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  model = models.create(args.preset, num_classes=101)
  variables = models.init_variables(model, jax.random.key(0), (1, args.frames, args.size,
                                                               args.size, 3))
  video = np.random.default_rng(0).normal(
      size=(args.batch, args.frames, args.size, args.size, 3)).astype(np.float32)
  run = lambda: explain.explain(model, variables, video, layers=args.layers)
  first = _timed(run)
  best = min(_timed(run) for _ in range(args.repeats))
  print(f'{args.preset}, batch {args.batch} of {args.frames}x{args.size}x{args.size}, '
        f'layers={args.layers}, {jax.default_backend()}: first call {first:.1f} s '
        f'(compilation included), then {best:.2f} s per batch ({args.batch / best:.1f} clips/s)')


if __name__ == '__main__':
  main()
