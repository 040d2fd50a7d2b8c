"""Throughput of the input pipeline: clips per second by source, workers and worker type.

Measures `train_batches` (random window, multi-scale corner crop, resize,
flip; uint8 clips, normalised later on the device) for
  synthetic  clips rendered on the fly at 16 x 112 x 112 (generator frames =
             clip frames), and
  folder     MJPG .avi files exported by the synthetic generator (48 frames of
             160 x 120, so every clip decodes, crops and resizes),
with 1 and 2 workers, threads and processes, plus one evaluation pass of the
folder source. "per core" divides by min(workers, CPU cores): how much of a
core one worker turns into clips.

Run: python -m benchmarks.input_bench [--batches 20] [--batch_size 8]
"""
import argparse
import os
import tempfile
import time

from gla_jax import defaults
from gla_jax.data import loader
from gla_jax.data import synthetic
from gla_jax.data import synthetic_settings


def _rate(batches, num_batches, batch_size):
  """Clips per second once the pipeline is warm (the first batch starts the pool)."""
  next(batches)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(batches)
  elapsed = time.perf_counter() - start
  batches.close()
  return num_batches * batch_size / elapsed


def _report(name, worker_type, workers, rate):
  cores = os.cpu_count() or 1
  per_core = rate / max(1, min(workers, cores))
  print(f'{name:<12} {worker_type:<8} workers={workers}  {rate:8.1f} clips/s  '
        f'{per_core:8.1f} clips/s per core', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batches', type=int, default=20, help='timed batches per setting')
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--workers', type=int, nargs='+', default=[1, 2])
  parser.add_argument('--folder_videos', type=int, default=32)
  args = parser.parse_args()
  print(f'{os.cpu_count()} CPU cores; {args.batches} batches of {args.batch_size} '
        '16x112x112 clips per setting', flush=True)

  config = defaults.data_config()
  config.synthetic.train_size = 4096
  for worker_type in ('thread', 'process'):
    for workers in args.workers:
      config.workers, config.worker_type = workers, worker_type
      rate = _rate(loader.train_batches(config, args.batch_size, seed=0),
                   args.batches, args.batch_size)
      _report('synthetic', worker_type, workers, rate)

  with tempfile.TemporaryDirectory() as root:
    generator = synthetic_settings.SyntheticConfig(num_frames=48, height=120, width=160)
    start = time.perf_counter()
    synthetic.export_video_folder(root, generator, 'train', size=args.folder_videos)
    print(f'exported {args.folder_videos} MJPG videos (48 x 120 x 160) in '
          f'{time.perf_counter() - start:.1f} s', flush=True)
    config = defaults.data_config()
    config.source, config.root = 'folder', root
    for worker_type in ('thread', 'process'):
      for workers in args.workers:
        config.workers, config.worker_type = workers, worker_type
        rate = _rate(loader.train_batches(config, args.batch_size, seed=0),
                     args.batches, args.batch_size)
        _report('folder', worker_type, workers, rate)
    config.worker_type = 'thread'
    for workers in args.workers:
      config.workers = workers
      start = time.perf_counter()
      clips = sum(int(batch['mask'].sum()) for batch in
                  loader.eval_batches(config, 'train', args.batch_size))
      _report('folder-eval', 'thread', workers, clips / (time.perf_counter() - start))


if __name__ == '__main__':
  main()
