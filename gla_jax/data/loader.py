"""Training and evaluation batches for jit: sources read in parallel by grain, prefetched.

Batch format (a dict of numpy arrays, the same for every source and split but
'frame_index', in evaluation batches only):
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
  frame_index  int32 [B, T]             evaluation batches only: each frame's index
                                        in its video (a loop-padded last clip
                                        repeats frames), -1 on padding rows
T = `num_frames`, S = `crop_size`. With `process_count` P > 1 each process gets
its B / P rows of the global batch. The rows of training step s are a function
of (seed, s) only (epoch permutations from (seed, epoch), augmentation from
(seed, s, row)), so a run resumes exactly and does not depend on `workers`.
Element k of a process's grain stream is row k mod (B / P) of step
k // (B / P); a stream starts at its first step's elements, and
`TrainBatches.state()` (grain's iterator state, JSON) is saved with each
checkpoint: a resumed run restores it when the stream's structure matches,
and otherwise positions a new stream at the checkpoint's step, which yields
the same batches. Unreadable videos: `bad_data`. Design notes: docs/design.md.
"""
import concurrent.futures
import math
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from absl import flags
from absl import logging
import cv2
import grain
import ml_collections
import numpy as np

from gla_jax.data import bad_data
from gla_jax.data import read_tasks
from gla_jax.data import sampling
from gla_jax.data import sources

Batch = Dict[str, np.ndarray]
# The order of the videos in a training epoch (seed, epoch, size) -> int [size].
epoch_permutation = read_tasks.epoch_permutation



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


def _empty_batch(rows: int, transform: sampling.ClipTransform, has_boxes: bool,
                 frame_index: bool = False) -> Batch:
  size, frames = transform.crop_size, transform.num_frames
  batch = dict(video=np.zeros((rows, frames, size, size, 3), np.uint8),
               label=np.zeros(rows, np.int32),
               video_index=np.full(rows, -1, np.int32),
               mask=np.zeros(rows, bool))
  if frame_index:
    batch['frame_index'] = np.full((rows, frames), -1, np.int32)
  if has_boxes:
    batch.update(boxes=np.full((rows, frames, 4), -1, np.float32),
                 present=np.zeros((rows, frames), bool))
  return batch


def _fill_row(batch: Batch, row: int, example: sampling.Example, video_index: int) -> None:
  batch['video'][row] = example['video']
  batch['label'][row] = example['label']
  batch['video_index'][row] = video_index
  batch['mask'][row] = True
  if 'frame_index' in batch:
    batch['frame_index'][row] = example['frame_index']
  if 'boxes' in batch:
    batch['boxes'][row] = example['boxes']
    batch['present'][row] = example['present']


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


# Version of the saved stream state (`TrainBatches.state`).
_STATE_FORMAT = 1


class TrainBatches:
  """The training batches of `train_batches`: an iterator with a checkpointable state.

  Attributes:
    restored: whether the stream continues a saved grain state (False: it
      was positioned at its first step).
  """

  def __init__(self, stream: grain.IterDataset, origin_step: int, structure: Dict[str, Any],
               grain_state: Optional[Dict[str, Any]]):
    self._origin_step, self._structure = origin_step, structure
    self._iterator = iter(stream)
    self.restored = grain_state is not None
    if grain_state is not None:
      self._iterator.set_state(grain_state)
    self._closed = False

  def __iter__(self) -> 'TrainBatches':
    return self

  def __next__(self) -> Batch:
    if self._closed:
      raise StopIteration
    try:
      return next(self._iterator)
    except BaseException:
      self.close()     # As a generator would: an error ends the stream.
      raise

  def state(self) -> Dict[str, Any]:
    """JSON: grain's iterator state after the batches taken, and the stream's structure."""
    return {'format': _STATE_FORMAT, 'origin_step': self._origin_step,
            'structure': self._structure, 'grain': self._iterator.get_state()}

  def close(self) -> None:
    """Stops grain's threads or worker processes (idempotent)."""
    if not self._closed:
      self._closed = True
      self._iterator.close()


def _stream_structure(data_config: ml_collections.ConfigDict, rows: int) -> Dict[str, Any]:
  """What a saved grain state's meaning depends on: rows per step and the worker layout."""
  workers = int(data_config.workers)
  return {'rows': rows, 'workers': workers,
          'worker_type': str(data_config.worker_type) if workers else 'inline'}


def train_batches(data_config: ml_collections.ConfigDict, batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  health: Optional[bad_data.DataHealth] = None,
                  state: Optional[Dict[str, Any]] = None) -> TrainBatches:
  """Endless training batches; batch k of the iterator is step start_step + k.

  Args:
    data_config: the `config.data` section.
    batch_size: GLOBAL batch size (all processes together).
    seed: data seed (video order and augmentation). `data.random_labels_seed`
      >= 0 replaces every label by a fixed random one (`read_tasks.random_labels`).
    start_step: first step to produce: resuming at the checkpoint's step
      continues the exact sequence of an uninterrupted run.
    process_index, process_count: this process reads rows
      [p * B / P, (p + 1) * B / P) of every global batch.
    health: receives the unreadable videos and the epoch reports (module
      docstring); None keeps them internal (warnings and the limit still apply).
    state: a `TrainBatches.state()` taken after step start_step - 1 (saved
      with the checkpoint): restored when its stream structure (rows per
      process, workers, worker type) is this one's; otherwise (or None) the
      stream is positioned at start_step, which gives the same batches.

  Returns:
    A `TrainBatches` iterator of batches (module docstring) of
    batch_size / process_count rows; mask all True. `video_index` is the video
    each row was read from (a replacement's index where a video was unreadable).

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
  structure = _stream_structure(data_config, len(rows))
  origin_step, grain_state = start_step, None
  if state is not None:
    if state.get('format') == _STATE_FORMAT and state.get('structure') == structure:
      origin_step, grain_state = int(state['origin_step']), state['grain']
      logging.info('Training data resumes from its saved grain state (step %d).', start_step)
    else:
      logging.info('The saved training data state (%s) does not fit this stream (%s): '
                   'positioning the stream at step %d instead.', state.get('structure'),
                   structure, start_step)
  next_step = [start_step]

  def assemble(elements: Sequence[Tuple[int, int, read_tasks.Outcome]]) -> Batch:
    if elements[0][0] != next_step[0]:
      raise RuntimeError(f'The training stream is at step {elements[0][0]}, not at step '
                         f'{next_step[0]}: its saved grain state does not belong to this '
                         'checkpoint. Delete the checkpoint\'s data_state to resume by step.')
    next_step[0] += 1
    batch = _empty_batch(len(rows), transform, source.has_boxes)
    for local, (step, row, outcome) in enumerate(elements):
      health.record(outcome.failures, skipped=1, epoch=(step * batch_size + row) // size)
      if outcome.value is None:
        raise health.no_readable_video()
      _fill_row(batch, local, outcome.value, outcome.video_index)
    health.end_epochs((step + 1) * batch_size // size)
    return batch

  # Adebayo et al.'s data randomisation test: every training video's label a fixed random one.
  labels_seed = int(data_config.get('random_labels_seed', -1))
  labels = (read_tasks.random_labels(labels_seed, size, len(source.class_names))
            if labels_seed >= 0 else None)
  # Element k of the (endless) stream is row k mod R of step k // R.
  examples = grain.MapDataset.range(origin_step * len(rows), sys.maxsize).map(
      read_tasks.TrainRead(source, transform, policy, seed, batch_size, rows, labels))
  buffer = (int(data_config.prefetch) + 1) * len(rows)
  stream = _read_in_parallel(examples, data_config, buffer)
  return TrainBatches(stream.batch(len(rows), batch_fn=assemble), origin_step, structure,
                      grain_state)


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
    batch = _empty_batch(len(rows), transform, source.has_boxes, frame_index=True)
    for video, locals_, outcome in read_groups:
      # The clips of an unreadable video stay padding rows (mask False).
      health.record(outcome.failures, skipped=len(locals_))
      for local, example in zip(locals_, outcome.value or ()):
        _fill_row(batch, local, example, video)
    return batch

  plans = grain.MapDataset.source([batch_groups(b) for b in range(num_batches)])
  stream = _read_in_parallel(plans.map(read_tasks.EvalRead(source, transform, policy)), data_config,
                             int(data_config.prefetch) + 1)
  yield from _iterate(stream.map(assemble))
  if health.skipped:
    logging.warning('Evaluation of %r left out %d clips of %d unreadable videos: %s.', split,
                    health.skipped, len(health.unreadable), ', '.join(health.unreadable))
