"""Training and evaluation batches for jit: sources read in parallel by grain, prefetched.

Batch format (a dict of numpy arrays, the same for every source and split):
  video        uint8 [B, T, S, S, 3]    RGB after crop, resize and flip; the
                                        consumer normalises it on the device
                                        ((x - mean) / std), 4x fewer bytes to send
  label        int32 [B]                class index (0 on padding rows)
  video_index  int32 [B]                index of the source video the clip comes
                                        from (-1 on padding rows), for video-level
                                        accuracy (average the clip scores per video)
  mask         bool [B]                 False on padding rows: those that fill the
                                        last evaluation batch and an unreadable
                                        video's (anywhere); always True in training
  boxes        float32 [B, T, 4]        only where the source has ground truth:
                                        (x0, y0, x1, y1), x1/y1 exclusive, in pixels
                                        of the S x S clip after crop, resize and
                                        flip; -1 where absent
  present      bool [B, T]              with `boxes`: the actor is visible in the
                                        crop (False also where the crop cut it out)
T = `num_frames`, S = `crop_size`. With `process_count` P > 1 each process gets
its B / P rows of the global batch. The rows of training step s are a function
of (seed, s) only (epoch permutations from (seed, epoch), augmentation from
(seed, s, row)), so a run resumes exactly and does not depend on `workers`:
the grain stream's position (its iterator state `next_index`) is
(s - start_step) * B / P, so the checkpoint's step is the loader's state.
Unreadable videos: `bad_data`. Design notes: docs/design.md.
"""
import concurrent.futures
import functools
import math
import sys
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from absl import flags
from absl import logging
import cv2
import grain
import ml_collections
import numpy as np

from gla_jax.data import bad_data
from gla_jax.data import sampling
from gla_jax.data import sources

Batch = Dict[str, np.ndarray]

# SeedSequence words that keep the random streams of the pipeline apart.
_EPOCH_STREAM = 0
_EXAMPLE_STREAM = 1


# ------------------------------------------------------------------------------
# Tasks: what one worker builds (one training example, one video's eval clips).
# ------------------------------------------------------------------------------


class _Outcome(NamedTuple):
  """What a reading task returns.

  Attributes:
    value: an Example (training), the list of a video's clips (evaluation), or
      None when no video could be read.
    video_index: the video the value comes from (a replacement's index).
    failures: (video index, description, problem) of each video that failed.
  """
  value: Any
  video_index: int
  failures: Tuple[Tuple[int, str, str], ...]


def _train_example(source: sources.Source, transform: sampling.ClipTransform, video_index: int,
                   seed: int, step: int, row: int, policy: bad_data.ReadPolicy) -> _Outcome:
  """The clip of (step, row) from `video_index`, or from the next readable video after it.

  A replacement video gets the random draws the original would have had
  (the generator restarts from (seed, step, row)), so which example replaces
  which depends only on the files.
  """
  failures = []
  for offset in range(policy.attempts):
    candidate = (video_index + offset) % len(source)

    def read(candidate=candidate):
      rng = np.random.default_rng([seed, _EXAMPLE_STREAM, step, row])
      frame_indices = sampling.train_frame_indices(source.num_frames(candidate),
                                                   transform.num_frames, transform.stride, rng)
      return source.load(candidate, frame_indices), rng

    try:
      example, rng = bad_data.read_with_retries(source, candidate, read, policy.retries)
    except Exception as error:  # pylint: disable=broad-except
      failures.append((candidate, source.describe(candidate), bad_data.describe_error(error)))
      continue
    height, width = example['video'].shape[1:3]
    scale = transform.scales[int(rng.integers(len(transform.scales)))]
    x0, y0, side = sampling.corner_crop(height, width, scale, int(rng.integers(5)))
    flip = transform.flip and bool(rng.integers(2))
    return _Outcome(transform.finish(example, x0, y0, side, flip), candidate, tuple(failures))
  return _Outcome(None, video_index, tuple(failures))


def _eval_examples(source: sources.Source, transform: sampling.ClipTransform, video_index: int,
                   starts: Sequence[int], policy: bad_data.ReadPolicy) -> _Outcome:
  """Evaluation clips of one video at `starts`, decoding the video once (None if unreadable)."""

  def read():
    num_frames = source.num_frames(video_index)
    clips = [sampling.eval_frame_indices(num_frames, start, transform.num_frames, transform.stride)
             for start in starts]
    return source.load(video_index, np.concatenate(clips))

  try:
    example = bad_data.read_with_retries(source, video_index, read, policy.retries)
  except Exception as error:  # pylint: disable=broad-except
    return _Outcome(None, video_index,
                    ((video_index, source.describe(video_index), bad_data.describe_error(error)),))
  height, width = example['video'].shape[1:3]
  x0, y0, side = sampling.corner_crop(height, width, 1.0, 0)
  examples = []
  for k in range(len(starts)):
    rows = slice(k * transform.num_frames, (k + 1) * transform.num_frames)
    examples.append(transform.finish({key: (value[rows] if key != 'label' else value)
                                      for key, value in example.items()}, x0, y0, side, False))
  return _Outcome(examples, video_index, ())


# ------------------------------------------------------------------------------
# Reading in parallel (grain) and batches.
# ------------------------------------------------------------------------------


def _init_process_worker(worker_index: int, worker_count: int) -> None:
  del worker_index, worker_count
  # Each process parallelises over examples already: keep cv2 single-threaded.
  cv2.setNumThreads(1)


def _read_in_parallel(dataset: grain.MapDataset, data_config: ml_collections.ConfigDict,
                      buffer: int) -> grain.IterDataset:
  """`dataset`'s elements in order, read by `data.workers` threads or processes, `buffer` ahead.

  0 workers read inline, on the consumer's thread. Processes are grain's
  (spawned, each with its own copy of the source); element i goes to worker
  i mod workers, so the order, and every element, is the same for any count.
  """
  workers = int(data_config.workers)
  if workers and data_config.worker_type == 'process':
    # grain's workers read grain's absl flags, which the parent must have
    # parsed: a library caller (tests, notebooks) has not run absl.app.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    inline = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    return inline.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers,
                                     per_worker_buffer_size=max(1, -(-buffer // workers))),
        worker_init_fn=_init_process_worker)
  return dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=workers, prefetch_buffer_size=buffer if workers else 0))


def _iterate(dataset: grain.IterDataset) -> Iterator[Batch]:
  """Yields `dataset`'s elements; closing the generator stops grain's threads and workers."""
  iterator = iter(dataset)
  try:
    yield from iterator
  finally:
    iterator.close()


def _empty_batch(rows: int, transform: sampling.ClipTransform, has_boxes: bool) -> Batch:
  size, frames = transform.crop_size, transform.num_frames
  batch = dict(video=np.zeros((rows, frames, size, size, 3), np.uint8),
               label=np.zeros(rows, np.int32),
               video_index=np.full(rows, -1, np.int32),
               mask=np.zeros(rows, bool))
  if has_boxes:
    batch.update(boxes=np.full((rows, frames, 4), -1, np.float32),
                 present=np.zeros((rows, frames), bool))
  return batch


def _fill_row(batch: Batch, row: int, example: sampling.Example, video_index: int) -> None:
  batch['video'][row] = example['video']
  batch['label'][row] = example['label']
  batch['video_index'][row] = video_index
  batch['mask'][row] = True
  if 'boxes' in batch:
    batch['boxes'][row] = example['boxes']
    batch['present'][row] = example['present']


class _TrainRead:
  """Element k of this process's training stream: (step, row, outcome); picklable for workers."""

  def __init__(self, source, transform, policy, seed, start_step, batch_size, rows):
    self.source, self.transform, self.policy = source, transform, policy
    self.seed, self.start_step, self.batch_size, self.rows = seed, start_step, batch_size, rows

  def __call__(self, k: int) -> Tuple[int, int, _Outcome]:
    step, local = divmod(int(k), len(self.rows))
    step += self.start_step
    row = self.rows[local]
    epoch, offset = divmod(step * self.batch_size + row, len(self.source))
    video = int(epoch_permutation(self.seed, epoch, len(self.source))[offset])
    return step, row, _train_example(self.source, self.transform, video, self.seed, step, row,
                                     self.policy)


class _EvalRead:
  """One evaluation batch's groups (video, local rows, starts) -> [(video, rows, outcome)]."""

  def __init__(self, source, transform, policy):
    self.source, self.transform, self.policy = source, transform, policy

  def __call__(self, groups):
    return [(video, locals_, _eval_examples(self.source, self.transform, video, starts,
                                            self.policy))
            for video, locals_, starts in groups]


def _local_rows(batch_size: int, process_index: int, process_count: int) -> range:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index}, process_count={process_count}: need '
                     '0 <= process_index < process_count.')
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(f'Global batch size {batch_size} must be a positive multiple of the '
                     f'{process_count} processes; each process reads batch_size / '
                     'process_count rows.')
  rows = batch_size // process_count
  return range(process_index * rows, (process_index + 1) * rows)


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
  """The order of the `size` videos in training epoch `epoch` (read-only, cached)."""
  order = np.random.default_rng([seed, _EPOCH_STREAM, epoch]).permutation(size)
  order.flags.writeable = False
  return order


def train_batches(data_config: ml_collections.ConfigDict, batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  health: Optional[bad_data.DataHealth] = None) -> Iterator[Batch]:
  """Endless training batches; batch k of the iterator is step start_step + k.

  Args:
    data_config: the `config.data` section.
    batch_size: GLOBAL batch size (all processes together).
    seed: data seed (video order and augmentation).
    start_step: first step to produce: resuming at the checkpoint's step
      continues the exact sequence of an uninterrupted run.
    process_index, process_count: this process reads rows
      [p * B / P, (p + 1) * B / P) of every global batch.
    health: receives the unreadable videos and the epoch reports (module
      docstring); None keeps them internal (warnings and the limit still apply).

  Yields:
    Batches (module docstring) of batch_size / process_count rows; mask all
    True. `video_index` is the video each row was read from (a replacement's
    index where a video was unreadable).

  Raises:
    BadDataError: (from `next`) more unreadable videos than
      `data.max_bad_fraction` tolerates.
  """
  if start_step < 0:
    raise ValueError(f'start_step={start_step}: must be >= 0.')
  rows = _local_rows(batch_size, process_index, process_count)
  source = sources.create_source(data_config, 'train')
  transform = sampling.ClipTransform(data_config)
  size = len(source)
  health = health if health is not None else bad_data.DataHealth(
      'train', data_config.max_bad_fraction)
  health.attach(size, epochs_done=start_step * batch_size // size)
  policy = health.policy(int(data_config.retries))

  def assemble(elements: Sequence[Tuple[int, int, _Outcome]]) -> Batch:
    batch = _empty_batch(len(rows), transform, source.has_boxes)
    for local, (step, row, outcome) in enumerate(elements):
      health.record(outcome.failures, skipped=1, epoch=(step * batch_size + row) // size)
      if outcome.value is None:
        raise health.no_readable_video()
      _fill_row(batch, local, outcome.value, outcome.video_index)
    health.end_epochs((step + 1) * batch_size // size)
    return batch

  # Element k of the (endless) stream is row k mod R of step start_step + k // R.
  examples = grain.MapDataset.range(0, sys.maxsize).map(
      _TrainRead(source, transform, policy, seed, start_step, batch_size, rows))
  buffer = (int(data_config.prefetch) + 1) * len(rows)
  stream = _read_in_parallel(examples, data_config, buffer)
  yield from _iterate(stream.batch(len(rows), batch_fn=assemble))


# How the processes of a multi-host run agree on the videos some could not read:
# bool [N] (this process's failures) -> bool [N] (anyone's), e.g. parallel.any_process.
Agree = Callable[[np.ndarray], np.ndarray]


def eval_clips(source: sources.Source, data_config: ml_collections.ConfigDict,
               health: Optional[bad_data.DataHealth] = None, max_clips: int = 0,
               seed: int = 0, agree: Optional[Agree] = None) -> np.ndarray:
  """The evaluation clips of `source`: int64 [K, 2] (video index, first frame).

  Videos in index order, each video's clips in time order. With `max_clips`
  > 0 only the videos of `sampling.eval_video_subset` (whole videos
  round-robin over the classes, chosen by `seed`, at most `max_clips` clips
  unless one video has more); 0 = every video. A video whose frame count (or,
  for a subset, label) cannot be read has no clip; it goes to `health` (a new
  one, for its warnings and limit, when None). With `agree`, a video that any
  process could not read has no clip on every process, so all processes plan
  the same clips and batches (every process must call it).
  """
  clip_frames, stride = int(data_config.num_frames), int(data_config.frame_stride)
  if health is None:
    health = bad_data.DataHealth('eval', data_config.max_bad_fraction)
    health.attach(len(source))
  retries = int(data_config.retries)

  def frame_count(index: int) -> Tuple[int, int, Tuple[Tuple[int, str, str], ...]]:
    try:
      count = bad_data.read_with_retries(source, index, lambda: source.num_frames(index), retries)
      label = (bad_data.read_with_retries(source, index, lambda: source.label(index), retries)
               if max_clips else 0)
      return count, label, ()
    except Exception as error:  # pylint: disable=broad-except
      return 0, 0, ((index, source.describe(index), bad_data.describe_error(error)),)

  # Frame counts may need a header read (folder) or a record read (tfds) per
  # video: ask for them in parallel, they are I/O-bound.
  with concurrent.futures.ThreadPoolExecutor(max(1, int(data_config.workers))) as pool:
    counts = list(pool.map(frame_count, range(len(source))))
  if agree is not None:
    failed = np.array([bool(failures) for _, _, failures in counts], bool)
    for index in np.flatnonzero(np.asarray(agree(failed), bool) & ~failed):
      counts[index] = (0, 0, ((int(index), source.describe(int(index)),
                               'unreadable on another process'),))
  starts = []
  for count, _, failures in counts:
    health.record(failures, skipped=1)
    starts.append(() if failures else sampling.eval_clip_starts(count, clip_frames, stride))
  videos = sampling.eval_video_subset([label for _, label, _ in counts],
                                      [len(s) for s in starts], max_clips, seed)
  clips = [(int(video), int(start)) for video in videos for start in starts[video]]
  return np.array(clips, np.int64).reshape(-1, 2)


def num_eval_batches(data_config: ml_collections.ConfigDict, split: str, batch_size: int,
                     max_clips: int = 0, seed: int = 0, agree: Optional[Agree] = None) -> int:
  """How many batches `eval_batches` yields (the same on every process given `agree`)."""
  source = sources.create_source(data_config, split)
  return math.ceil(len(eval_clips(source, data_config, max_clips=max_clips, seed=seed,
                                  agree=agree)) / batch_size)


def eval_batches(data_config: ml_collections.ConfigDict, split: str, batch_size: int,
                 process_index: int = 0, process_count: int = 1, max_clips: int = 0,
                 seed: int = 0, agree: Optional[Agree] = None) -> Iterator[Batch]:
  """One pass over the evaluation clips of `split` (`eval_clips`: all, or a subset).

  Global batch b holds clips [b * B, (b + 1) * B) of `eval_clips` order
  (videos in order, clips in time order); the last one is padded with
  mask=False rows (zero video, label 0, video_index -1) so every batch has the
  same shape. Every process yields the same number of batches: with several
  processes pass `agree`, so a video whose frame count one process cannot
  read has no clip on any (`eval_clips`). The clips of a video that cannot be
  decoded are mask=False rows, wherever they fall, so consumers select rows by
  `mask` and the metrics cover the readable videos.

  Args:
    data_config: the `config.data` section.
    split: 'train' or 'eval'.
    batch_size: GLOBAL batch size.
    process_index, process_count: as in `train_batches`.
    max_clips, seed: a seeded subset of whole videos (`eval_clips`); 0 = all.
    agree: how the processes agree on unreadable videos (`eval_clips`).

  Yields:
    Batches (module docstring) of batch_size / process_count rows.
  """
  rows = _local_rows(batch_size, process_index, process_count)
  source = sources.create_source(data_config, split)
  transform = sampling.ClipTransform(data_config)
  health = bad_data.DataHealth(split, data_config.max_bad_fraction)
  health.attach(len(source))
  policy = health.policy(int(data_config.retries))
  clips = eval_clips(source, data_config, health, max_clips, seed, agree)
  num_batches = math.ceil(len(clips) / batch_size)

  def batch_groups(b: int) -> List[Tuple[int, List[int], List[int]]]:
    """This process's clips of batch b, in runs of one video (each decoded once per batch)."""
    groups = []
    for local, position in enumerate(range(b * batch_size + rows.start,
                                           b * batch_size + rows.stop)):
      if position >= len(clips):
        break
      video, start = (int(v) for v in clips[position])
      if groups and groups[-1][0] == video:
        groups[-1][1].append(local)
        groups[-1][2].append(start)
      else:
        groups.append((video, [local], [start]))
    return groups

  def assemble(read_groups) -> Batch:
    batch = _empty_batch(len(rows), transform, source.has_boxes)
    for video, locals_, outcome in read_groups:
      # The clips of an unreadable video stay padding rows (mask False).
      health.record(outcome.failures, skipped=len(locals_))
      for local, example in zip(locals_, outcome.value or ()):
        _fill_row(batch, local, example, video)
    return batch

  plans = grain.MapDataset.source([batch_groups(b) for b in range(num_batches)])
  stream = _read_in_parallel(plans.map(_EvalRead(source, transform, policy)), data_config,
                             int(data_config.prefetch) + 1)
  yield from _iterate(stream.map(assemble))
  if health.skipped:
    logging.warning('Evaluation of %r left out %d clips of %d unreadable videos: %s.', split,
                    health.skipped, len(health.unreadable), ', '.join(health.unreadable))
