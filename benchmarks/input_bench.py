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

Real scale (`--real_scale`, or `--only_real_scale`): 10-second 320 x 240
videos at 25 fps (250 frames, `video_decode_bench`'s textured frames) in
several codecs, read by the folder source through the loader (random 16-frame
windows, crop and resize to 112) with 2 threads and 2 processes, and the
frames decoded per clip (counted in the thread run: about 16 plus the distance
back to the window's keyframe where the reader seeks; about 150 when it
decodes from frame 0).

Run: python -m benchmarks.input_bench [--batches 20] [--batch_size 8] [--real_scale]
"""
import argparse
import os
import tempfile
import time

from benchmarks import video_decode_bench
from gla_jax import defaults
from gla_jax.data import loader
from gla_jax.data import synthetic
from gla_jax.data import synthetic_settings
from gla_jax.data import video_io
from tests.data import decoding

# Real-scale codecs: FourCC and container.
REAL_SCALE_CODECS = (('MJPG', '.avi'), ('mp4v', '.mp4'), ('XVID', '.avi'), ('FFV1', '.mkv'))


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


def _real_scale(args) -> None:
  """Folder clips/s of 10 s 320 x 240 videos per codec, 2 threads and 2 processes."""
  bench = video_decode_bench
  print(f'real scale: {args.real_scale_videos} videos per codec of {bench.FPS * bench.SECONDS} '
        f'frames {bench.WIDTH}x{bench.HEIGHT}; PyAV '
        f'{"present" if video_io.av is not None else "MISSING (no seek)"}', flush=True)
  print(f'{"codec":<12} {"2 threads clips/s":>17} {"2 processes clips/s":>19} '
        f'{"frames decoded/clip":>19}', flush=True)
  with tempfile.TemporaryDirectory() as root:
    for k in range(args.real_scale_videos):
      frames = bench._frames(bench.FPS * bench.SECONDS, seed=k)  # pylint: disable=protected-access
      for codec, extension in REAL_SCALE_CODECS:
        video_io.write_video(os.path.join(root, codec, f'class_{k % 2}', f'{k}{extension}'),
                             frames, fps=bench.FPS, codec=codec)
    for codec, extension in REAL_SCALE_CODECS:
      config = defaults.data_config()
      config.source, config.root = 'folder', os.path.join(root, codec)
      rates = {}
      for worker_type in ('thread', 'process'):
        config.workers, config.worker_type = 2, worker_type
        rates[worker_type] = _rate(loader.train_batches(config, args.batch_size, seed=0),
                                   args.real_scale_batches, args.batch_size)
      # Frames decoded per clip, read inline (no prefetch: every decoded frame is counted).
      config.workers, config.prefetch = 0, 0
      batches = loader.train_batches(config, args.batch_size, seed=0)
      next(batches)      # The first read of a file also indexes its frames.
      with decoding.counting_decoded_frames() as counter:
        for _ in range(args.real_scale_batches):
          next(batches)
      batches.close()
      frames_per_clip = counter[0] / (args.real_scale_batches * args.batch_size)
      print(f'{codec + extension:<12} {rates["thread"]:17.1f} {rates["process"]:19.1f} '
            f'{frames_per_clip:19.1f}', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batches', type=int, default=20, help='timed batches per setting')
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--workers', type=int, nargs='+', default=[1, 2])
  parser.add_argument('--folder_videos', type=int, default=32)
  parser.add_argument('--real_scale', action='store_true',
                      help='also the real-scale folder benchmark (module docstring)')
  parser.add_argument('--only_real_scale', action='store_true',
                      help='only the real-scale folder benchmark')
  parser.add_argument('--real_scale_videos', type=int, default=4, help='videos per codec')
  parser.add_argument('--real_scale_batches', type=int, default=8)
  args = parser.parse_args()
  if args.only_real_scale:
    _real_scale(args)
    return
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
  if args.real_scale:
    _real_scale(args)


if __name__ == '__main__':
  main()
