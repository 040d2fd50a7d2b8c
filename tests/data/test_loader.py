"""Tests of gla_jax.data.loader: batch format, determinism, sharding, eval coverage, boxes."""
import json
import multiprocessing
import time

import numpy as np
import pytest

from gla_jax import validation
from gla_jax.data import bad_data
from gla_jax.data import loader
from gla_jax.data import read_tasks
from gla_jax.data import sampling
from gla_jax.data import sources
from gla_jax.data import video_io
from tests.data import small_data


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)




def test_synthetic_train_batch_format():
  config = small_data.config()
  batch = next(loader.train_batches(config, batch_size=4, seed=0))
  assert set(batch) == small_data.KEYS_WITH_BOXES
  assert batch['video'].shape == (4, 8, 32, 32, 3) and batch['video'].dtype == np.uint8
  assert batch['label'].dtype == np.int32 and batch['video_index'].dtype == np.int32
  assert batch['mask'].dtype == bool and batch['mask'].all()
  assert batch['boxes'].shape == (4, 8, 4) and batch['boxes'].dtype == np.float32
  assert batch['present'].shape == (4, 8) and batch['present'].dtype == bool
  dataset = sources.create_source(config, 'train').dataset
  for label, index in zip(batch['label'], batch['video_index']):
    assert label == dataset[int(index)]['label']
  # Boxes lie inside the clip where present and are -1 elsewhere.
  boxes, present = batch['boxes'], batch['present']
  assert np.all(boxes[~present] == -1)
  assert np.all((boxes[present] >= 0) & (boxes[present] <= 32))


def test_identity_sampling_returns_the_generated_frames():
  # Crop = whole frame at its size, all frames, no flip: the clip is the video.
  config = small_data.config(num_frames=12, crop_size=40, train_scales=(1.0,), flip=False,
                             mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
  with config.unlocked():
    config.synthetic.update(dict(height=40, width=40))
  batch = next(loader.train_batches(config, batch_size=3, seed=1))
  dataset = sources.create_source(config, 'train').dataset
  for row in range(3):
    item = dataset[int(batch['video_index'][row])]
    np.testing.assert_array_equal(batch['video'][row], item['video'])
    np.testing.assert_array_equal(batch['boxes'][row], item['boxes'])
    np.testing.assert_array_equal(batch['present'][row], item['present'])


def test_train_resume_and_worker_independence():
  config = small_data.config()
  reference = _take(loader.train_batches(config, batch_size=4, seed=3), 5)
  resumed = _take(loader.train_batches(config, batch_size=4, seed=3, start_step=3), 2)
  _assert_batches_equal(resumed[0], reference[3])
  _assert_batches_equal(resumed[1], reference[4])
  with config.unlocked():
    config.workers = 0
    config.prefetch = 0
  inline = _take(loader.train_batches(config, batch_size=4, seed=3), 5)
  for a, b in zip(inline, reference):
    _assert_batches_equal(a, b)
  other_seed = next(loader.train_batches(config, batch_size=4, seed=4))
  assert not np.array_equal(other_seed['video'], reference[0]['video'])


def test_process_workers_match_threads():
  config = small_data.config(worker_type='process', workers=2)
  with_processes = _take(loader.train_batches(config, batch_size=4, seed=5), 2)
  with config.unlocked():
    config.worker_type = 'thread'
  with_threads = _take(loader.train_batches(config, batch_size=4, seed=5), 2)
  for a, b in zip(with_processes, with_threads):
    _assert_batches_equal(a, b)


def test_process_workers_evaluate_like_inline_reading():
  config = small_data.config(worker_type='process', workers=2)
  with_processes = list(loader.eval_batches(config, 'eval', batch_size=4))
  with config.unlocked():
    config.workers = 0
  inline = list(loader.eval_batches(config, 'eval', batch_size=4))
  assert len(with_processes) == len(inline) > 1
  for a, b in zip(with_processes, inline):
    _assert_batches_equal(a, b)


def test_closing_the_batches_stops_the_process_workers():
  """Workers stop at once, also with 300 KB clips (8 x 112 x 112, read at their size).

  Before, a flipped clip (a negative-stride view) went through a pipe, not
  shared memory, and a worker that had put one there could not exit: close()
  waited for grain's 25 s kill timeout (a race, so this failed about every
  other run; `test_clips_leave_the_workers_contiguous` fails every time).
  """
  config = small_data.config(worker_type='process', workers=2, crop_size=112)
  with config.unlocked():
    config.synthetic.update(dict(height=112, width=112))
  before = set(multiprocessing.active_children())
  batches = loader.train_batches(config, batch_size=4, seed=0)
  _take(batches, 2)
  assert len(set(multiprocessing.active_children()) - before) == 2
  time.sleep(0.5)           # The workers fill their buffers and wait to put the next clip.
  start = time.monotonic()
  batches.close()
  assert time.monotonic() - start < 10
  deadline = time.monotonic() + 30
  while set(multiprocessing.active_children()) - before and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not set(multiprocessing.active_children()) - before


def test_clips_leave_the_workers_contiguous():
  """Every array of a task's example is C-contiguous (grain sends those through shared memory)."""
  config = small_data.config()
  source = sources.create_source(config, 'train')
  read = read_tasks.TrainRead(source, sampling.ClipTransform(config), bad_data.ReadPolicy(0, 1),
                              seed=0, batch_size=8, rows=range(8))
  examples = [read(k)[2].value for k in range(8)]
  assert all(example['video'].flags.c_contiguous and example['boxes'].flags.c_contiguous
             for example in examples)


@pytest.mark.parametrize('saved_with', [dict(workers=2), dict(workers=0, prefetch=0)])
def test_resuming_from_the_saved_stream_state(saved_with):
  """The stream restored from its grain state yields the batches of one positioned by step.

  A state saved under other workers (here inline reading) is not restored: the
  stream is positioned at the step instead, with the same batches.
  """
  config = small_data.config()
  reference = _take(loader.train_batches(config, batch_size=4, seed=3), 5)
  saving = loader.train_batches(small_data.config(**saved_with), batch_size=4, seed=3)
  _take(saving, 3)
  state = json.loads(json.dumps(saving.state()))   # As the checkpoint stores it.
  saving.close()
  resumed = loader.train_batches(config, batch_size=4, seed=3, start_step=3, state=state)
  assert resumed.restored == (saved_with['workers'] == config.workers)
  for got, want in zip(_take(resumed, 2), reference[3:]):
    _assert_batches_equal(got, want)
  resumed.close()
  if resumed.restored:     # A state of another step is refused at the first batch.
    with pytest.raises(RuntimeError, match='at step 3, not at step 2'):
      next(loader.train_batches(config, batch_size=4, seed=3, start_step=2, state=state))


def test_epochs_are_permutations():
  config = small_data.config()
  with config.unlocked():
    config.synthetic.train_size = 6
  batches = _take(loader.train_batches(config, batch_size=3, seed=0), 4)
  epoch0 = np.concatenate([b['video_index'] for b in batches[:2]])
  epoch1 = np.concatenate([b['video_index'] for b in batches[2:]])
  assert sorted(epoch0) == list(range(6)) and sorted(epoch1) == list(range(6))
  assert not np.array_equal(epoch0, epoch1)
  np.testing.assert_array_equal(epoch0, loader.epoch_permutation(0, 0, 6))


def test_process_sharding_train_and_eval():
  config = small_data.config()
  full = _take(loader.train_batches(config, batch_size=4, seed=7, start_step=2), 2)
  parts = [_take(loader.train_batches(config, batch_size=4, seed=7, start_step=2,
                                      process_index=p, process_count=2), 2)
           for p in range(2)]
  for step in range(2):
    for key in full[step]:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]), full[step][key])
  full_eval = list(loader.eval_batches(config, 'eval', batch_size=4))
  eval_parts = [list(loader.eval_batches(config, 'eval', batch_size=4, process_index=p,
                                         process_count=2)) for p in range(2)]
  assert len(eval_parts[0]) == len(eval_parts[1]) == len(full_eval)
  for b, batch in enumerate(full_eval):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([eval_parts[0][b][key], eval_parts[1][b][key]]), batch[key])
  with pytest.raises(ValueError, match='multiple'):
    next(loader.train_batches(config, batch_size=5, seed=0, process_count=2))


def test_eval_covers_every_clip_once():
  # 20-frame videos, 8-frame clips: starts 0, 8, 16; the last is frames
  # 16..19 loop-padded to 16..19, 16..19.
  config = small_data.config(train_scales=(0.5,))  # eval must ignore the training crop
  with config.unlocked():
    config.synthetic.update(dict(num_frames=20, height=32, width=32, val_size=3))
  batches = list(loader.eval_batches(config, 'eval', batch_size=4))
  assert len(batches) == 3 == loader.num_eval_batches(config, 'eval', 4)
  video_index = np.concatenate([b['video_index'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(video_index, [0, 0, 0, 1, 1, 1, 2, 2, 2, -1, -1, -1])
  np.testing.assert_array_equal(mask, [True] * 9 + [False] * 3)
  videos = np.concatenate([b['video'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert np.all(videos[~mask] == 0) and np.all(labels[~mask] == 0)
  dataset = sources.create_source(config, 'eval').dataset
  frames = [np.arange(0, 8), np.arange(8, 16), np.array([16, 17, 18, 19] * 2)]
  for row in range(9):
    item = dataset[row // 3]
    indices = frames[row % 3]
    assert labels[row] == item['label']
    np.testing.assert_array_equal(videos[row], item['video'][indices])
    boxes = np.concatenate([b['boxes'] for b in batches])[row]
    np.testing.assert_array_equal(boxes, item['boxes'][indices])
  # Each frame's index in its video, as read; -1 on padding rows.
  frame_index = np.concatenate([b['frame_index'] for b in batches])
  np.testing.assert_array_equal(frame_index, np.concatenate([np.stack(frames * 3), -np.ones(
      (3, 8), int)]))


def test_eval_frame_index_names_the_frames_read():
  """With a frame stride the loop-padded last clip repeats its video's frames."""
  config = small_data.config(frame_stride=2)
  with config.unlocked():
    config.synthetic.update(dict(num_frames=20, height=32, width=32, val_size=2))
  batches = list(loader.eval_batches(config, 'eval', batch_size=3))
  dataset = sources.create_source(config, 'eval').dataset
  rows = [(int(b['video_index'][r]), b['frame_index'][r], b['video'][r])
          for b in batches for r in np.nonzero(b['mask'])[0]]
  # 8 frames every other one: starts 0 and 16 of 20, the second loop-padded.
  np.testing.assert_array_equal([frames for _, frames, _ in rows[:2]],
                                [np.arange(0, 16, 2), [16, 18] * 4])
  for video, frames, pixels in rows:
    np.testing.assert_array_equal(pixels, dataset[video]['video'][frames])


@pytest.mark.parametrize('annotated_scale', [1, 2])
def test_boxes_follow_the_pixels(tmp_path, annotated_scale):
  """Crop + resize + flip move the boxes exactly as they move the pixels.

  With annotated_scale 2 the annotations describe a video twice the size of
  the file (a re-encoded copy): the boxes must be rescaled to the file.
  """
  video, boxes = small_data.rectangle_video()
  root = tmp_path / 'videos'
  video_io.write_video(str(root / 'box' / 'clip.mkv'), video, codec='FFV1')
  (root / 'annotations.json').write_text(json.dumps(dict(classes=['box'], videos=[dict(
      path='box/clip.mkv', label=0, num_frames=10, height=48 * annotated_scale,
      width=64 * annotated_scale, segments=[[0, 10]],
      boxes=[[v * annotated_scale for v in box] for box in boxes])])))
  config = small_data.config(source='folder', root=str(root), num_frames=4, crop_size=24,
                             train_scales=(1.0, 0.707, 0.5))
  batches = _take(loader.train_batches(config, batch_size=8, seed=0), 3)
  checked = 0
  for batch in batches:
    for row in range(8):
      for t in range(4):
        ys, xs = np.nonzero(batch['video'][row, t, :, :, 0] > 127)
        if not batch['present'][row, t]:
          assert len(xs) == 0
          np.testing.assert_array_equal(batch['boxes'][row, t], -1)
          continue
        checked += 1
        pixel_box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_allclose(batch['boxes'][row, t], pixel_box, atol=1.0)
  assert checked > 20


def _eval_rows(batches):
  """(video_index, first frame value, label) of the real rows (mask True) of eval batches."""
  mask = np.concatenate([b['mask'] for b in batches])
  video = np.concatenate([b['video'] for b in batches])[mask]
  return (np.concatenate([b['video_index'] for b in batches])[mask], video[:, :, 0, 0, 0],
          np.concatenate([b['label'] for b in batches])[mask])


def test_eval_subset_is_whole_videos_across_classes_and_padding_is_by_mask(monkeypatch):
  # 8 classes x 4 videos in class order, 1-3 clips each; video 13 (mid-split) fails to load.
  source = small_data.ClassSortedSource(unreadable={13})
  monkeypatch.setattr(sources, 'create_source', lambda config, split: source)
  config = small_data.config(crop_size=16, max_bad_fraction=0.1, mean=(0.0,) * 3,
                             std=(1.0,) * 3)
  every = small_data.ClassSortedSource().clips()                   # video 13's clips too
  real = source.clips()

  def check(batches, clips):
    video_index, first_pixel, labels = _eval_rows(batches)
    np.testing.assert_array_equal(video_index, [video for video, _ in clips])
    np.testing.assert_array_equal(labels, [video // 4 for video, _ in clips])
    # Each row's frames are its clip's: grey 16 * video + start + t.
    np.testing.assert_array_equal(
        first_pixel, [(16 * video + start + np.arange(8)) % 256 for video, start in clips])

  # The whole split: every real clip once, the unreadable video's rows masked out.
  whole = list(loader.eval_batches(config, 'eval', batch_size=8))
  check(whole, real)
  assert not np.concatenate([b['mask'] for b in whole])[-1]        # padding at the end too

  # A capped evaluation: a seeded subset of whole videos, spread over the classes.
  subset = loader.eval_clips(source, config, max_clips=16, seed=3)
  assert len(subset) <= 16
  chosen = sorted(set(subset[:, 0].tolist()))
  np.testing.assert_array_equal(subset, [clip for clip in every if clip[0] in chosen])
  per_class = np.bincount(source.labels[chosen], minlength=8)
  assert per_class.max() - per_class.min() <= 1 and (per_class > 0).sum() >= 5
  first_clips = [video for video, _ in every[:16]]
  assert len(set(source.labels[first_clips])) <= 3                 # what "the first N" saw
  np.testing.assert_array_equal(loader.eval_clips(source, config, max_clips=16, seed=3), subset)
  assert not np.array_equal(loader.eval_clips(source, config, max_clips=16, seed=4), subset)
  batches = list(loader.eval_batches(config, 'eval', 8, max_clips=16, seed=3))
  assert len(batches) == loader.num_eval_batches(config, 'eval', 8, max_clips=16, seed=3) == \
      -(-len(subset) // 8)
  check(batches, [tuple(clip) for clip in subset.tolist() if clip[0] != 13])


def test_eval_clips_leave_out_what_another_process_could_not_read(monkeypatch):
  """`agree` says video 5 failed elsewhere: no clip of it here either, and it is counted."""
  source = small_data.ClassSortedSource()
  monkeypatch.setattr(sources, 'create_source', lambda config, split: source)
  config = small_data.config(crop_size=16, max_bad_fraction=0.1)
  every = source.clips()
  seen = []

  def agree(failed):       # What parallel.any_process returns when another process failed on 5.
    seen.append(failed.copy())
    return failed | (np.arange(len(failed)) == 5)

  clips = loader.eval_clips(source, config, max_clips=0, agree=agree)
  np.testing.assert_array_equal(clips, [clip for clip in every if clip[0] != 5])
  assert len(seen) == 1 and not seen[0].any() and len(seen[0]) == len(source)
  batches = list(loader.eval_batches(config, 'eval', 8, agree=agree))
  assert len(batches) == loader.num_eval_batches(config, 'eval', 8, agree=agree) == \
      -(-len(clips) // 8)
  video_index = np.concatenate([b['video_index'][b['mask']] for b in batches])
  np.testing.assert_array_equal(video_index, clips[:, 0])


def test_random_labels_replace_training_labels_only():
  """Adebayo et al.'s data randomisation: a fixed random label per training video."""
  config = small_data.config(workers=0, random_labels_seed=5)
  true_config = small_data.config(workers=0)
  dataset = sources.create_source(config, 'train').dataset
  expected = read_tasks.random_labels(5, len(dataset), len(dataset.class_names))
  batches = _take(loader.train_batches(config, batch_size=5, seed=1), 4)   # 2 epochs of 10.
  true_batches = _take(loader.train_batches(true_config, batch_size=5, seed=1), 4)
  video_index = np.concatenate([b['video_index'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  true_labels = np.array([dataset[int(v)]['label'] for v in video_index])
  np.testing.assert_array_equal(labels, expected[video_index])   # The same in both epochs.
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in true_batches]), true_labels)
  assert (labels != true_labels).sum() >= 3
  for random_batch, true_batch in zip(batches, true_batches):   # Only the labels change.
    np.testing.assert_array_equal(random_batch['video'], true_batch['video'])
  resumed = next(loader.train_batches(config, batch_size=5, seed=1, start_step=3))
  np.testing.assert_array_equal(resumed['label'], batches[3]['label'])
  evaluated = next(loader.eval_batches(config, 'eval', 5))
  truth = next(loader.eval_batches(true_config, 'eval', 5))
  np.testing.assert_array_equal(evaluated['label'], truth['label'])


def test_random_labels_are_balanced_seeded_and_checked():
  labels = read_tasks.random_labels(0, 20, 8)
  assert labels.dtype == np.int32 and sorted(np.bincount(labels, minlength=8)) == [2] * 4 + [3] * 4
  np.testing.assert_array_equal(labels, read_tasks.random_labels(0, 20, 8))
  assert not np.array_equal(labels, read_tasks.random_labels(1, 20, 8))
  with pytest.raises(ValueError, match='random_labels_seed'):
    read_tasks.random_labels(-1, 20, 8)
  with pytest.raises(ValueError, match=r'config.data.random_labels_seed=-2.*-1 = the true'):
    validation.validate_data(small_data.config(random_labels_seed=-2))
