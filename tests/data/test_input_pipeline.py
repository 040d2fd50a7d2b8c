"""Tests of gla_jax.input_pipeline: batch format, determinism, sharding, eval coverage, boxes."""
import json
import os
import sys
import types

import cv2
import numpy as np
import pytest

from gla_jax import defaults
from gla_jax.data import input_pipeline
from gla_jax.data import synthetic
from gla_jax.data import video_io

KEYS_WITH_BOXES = {'video', 'label', 'video_index', 'mask', 'boxes', 'present'}
KEYS_WITHOUT_BOXES = {'video', 'label', 'video_index', 'mask'}


def _config(**overrides):
  """A small synthetic config: 8-frame 32x32 clips from 12-frame 48x40 videos."""
  config = defaults.data_config()
  config.num_frames = 8
  config.crop_size = 32
  config.workers = 2
  config.prefetch = 1
  config.synthetic.update(dict(train_size=10, val_size=5, num_frames=12, height=40, width=48))
  config.update(overrides)
  config.lock()
  return config


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _normalised(frames, config):
  return (frames.astype(np.float32) - np.asarray(config.mean, np.float32)) / np.asarray(
      config.std, np.float32)


def test_default_config_lockable():
  config = defaults.data_config()
  assert config.source == 'synthetic'
  assert (config.num_frames, config.frame_stride, config.crop_size) == (16, 1, 112)
  assert tuple(config.train_scales) == (1.0, 0.841, 0.707, 0.595, 0.5)
  assert tuple(config.mean) == (114.7748, 107.7354, 99.4750)
  config.lock()
  config.num_frames = 8
  config.synthetic.height = 64
  with pytest.raises(AttributeError):
    config.no_such_key = 1


def test_synthetic_train_batch_format():
  config = _config()
  batch = next(input_pipeline.train_batches(config, batch_size=4, seed=0))
  assert set(batch) == KEYS_WITH_BOXES
  assert batch['video'].shape == (4, 8, 32, 32, 3) and batch['video'].dtype == np.float32
  assert batch['label'].dtype == np.int32 and batch['video_index'].dtype == np.int32
  assert batch['mask'].dtype == bool and batch['mask'].all()
  assert batch['boxes'].shape == (4, 8, 4) and batch['boxes'].dtype == np.float32
  assert batch['present'].shape == (4, 8) and batch['present'].dtype == bool
  dataset = input_pipeline.create_source(config, 'train').dataset
  for label, index in zip(batch['label'], batch['video_index']):
    assert label == dataset[int(index)]['label']
  # Boxes lie inside the clip where present and are -1 elsewhere.
  boxes, present = batch['boxes'], batch['present']
  assert np.all(boxes[~present] == -1)
  assert np.all((boxes[present] >= 0) & (boxes[present] <= 32))


def test_identity_sampling_returns_the_generated_frames():
  # Crop = whole frame at its size, all frames, no flip: the clip is the video.
  config = _config(num_frames=12, crop_size=40, train_scales=(1.0,), flip=False,
                   mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
  with config.unlocked():
    config.synthetic.update(dict(height=40, width=40))
  batch = next(input_pipeline.train_batches(config, batch_size=3, seed=1))
  dataset = input_pipeline.create_source(config, 'train').dataset
  for row in range(3):
    item = dataset[int(batch['video_index'][row])]
    np.testing.assert_allclose(batch['video'][row], _normalised(item['video'], config), rtol=1e-6)
    np.testing.assert_array_equal(batch['boxes'][row], item['boxes'])
    np.testing.assert_array_equal(batch['present'][row], item['present'])


def test_train_resume_and_worker_independence():
  config = _config()
  reference = _take(input_pipeline.train_batches(config, batch_size=4, seed=3), 5)
  resumed = _take(input_pipeline.train_batches(config, batch_size=4, seed=3, start_step=3), 2)
  _assert_batches_equal(resumed[0], reference[3])
  _assert_batches_equal(resumed[1], reference[4])
  with config.unlocked():
    config.workers = 0
    config.prefetch = 0
  inline = _take(input_pipeline.train_batches(config, batch_size=4, seed=3), 5)
  for a, b in zip(inline, reference):
    _assert_batches_equal(a, b)
  other_seed = next(input_pipeline.train_batches(config, batch_size=4, seed=4))
  assert not np.array_equal(other_seed['video'], reference[0]['video'])


def test_process_workers_match_threads():
  config = _config(worker_type='process', workers=2)
  with_processes = _take(input_pipeline.train_batches(config, batch_size=4, seed=5), 2)
  with config.unlocked():
    config.worker_type = 'thread'
  with_threads = _take(input_pipeline.train_batches(config, batch_size=4, seed=5), 2)
  for a, b in zip(with_processes, with_threads):
    _assert_batches_equal(a, b)


def test_epochs_are_permutations():
  config = _config()
  with config.unlocked():
    config.synthetic.train_size = 6
  batches = _take(input_pipeline.train_batches(config, batch_size=3, seed=0), 4)
  epoch0 = np.concatenate([b['video_index'] for b in batches[:2]])
  epoch1 = np.concatenate([b['video_index'] for b in batches[2:]])
  assert sorted(epoch0) == list(range(6)) and sorted(epoch1) == list(range(6))
  assert not np.array_equal(epoch0, epoch1)
  np.testing.assert_array_equal(epoch0, input_pipeline.epoch_permutation(0, 0, 6))


def test_process_sharding_train_and_eval():
  config = _config()
  full = _take(input_pipeline.train_batches(config, batch_size=4, seed=7, start_step=2), 2)
  parts = [_take(input_pipeline.train_batches(config, batch_size=4, seed=7, start_step=2,
                                              process_index=p, process_count=2), 2)
           for p in range(2)]
  for step in range(2):
    for key in full[step]:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]), full[step][key])
  full_eval = list(input_pipeline.eval_batches(config, 'eval', batch_size=4))
  eval_parts = [list(input_pipeline.eval_batches(config, 'eval', batch_size=4, process_index=p,
                                                 process_count=2)) for p in range(2)]
  assert len(eval_parts[0]) == len(eval_parts[1]) == len(full_eval)
  for b, batch in enumerate(full_eval):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([eval_parts[0][b][key], eval_parts[1][b][key]]), batch[key])
  with pytest.raises(ValueError, match='multiple'):
    next(input_pipeline.train_batches(config, batch_size=5, seed=0, process_count=2))


def test_eval_covers_every_clip_once():
  # 20-frame videos, 8-frame clips: starts 0, 8, 16; the last is frames
  # 16..19 loop-padded to 16..19, 16..19.
  config = _config(train_scales=(0.5,))  # eval must ignore the training crop
  with config.unlocked():
    config.synthetic.update(dict(num_frames=20, height=32, width=32, val_size=3))
  batches = list(input_pipeline.eval_batches(config, 'eval', batch_size=4))
  assert len(batches) == 3 == input_pipeline.num_eval_batches(config, 'eval', 4)
  video_index = np.concatenate([b['video_index'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(video_index, [0, 0, 0, 1, 1, 1, 2, 2, 2, -1, -1, -1])
  np.testing.assert_array_equal(mask, [True] * 9 + [False] * 3)
  videos = np.concatenate([b['video'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert np.all(videos[~mask] == 0) and np.all(labels[~mask] == 0)
  dataset = input_pipeline.create_source(config, 'eval').dataset
  frames = [np.arange(0, 8), np.arange(8, 16), np.array([16, 17, 18, 19] * 2)]
  for row in range(9):
    item = dataset[row // 3]
    indices = frames[row % 3]
    assert labels[row] == item['label']
    np.testing.assert_allclose(videos[row], _normalised(item['video'][indices], config))
    boxes = np.concatenate([b['boxes'] for b in batches])[row]
    np.testing.assert_array_equal(boxes, item['boxes'][indices])


def test_eval_frame_stride_and_short_videos():
  np.testing.assert_array_equal(input_pipeline.eval_clip_starts(20, 4, 2), [0, 8, 16])
  np.testing.assert_array_equal(input_pipeline.eval_frame_indices(20, 16, 4, 2), [16, 18, 16, 18])
  np.testing.assert_array_equal(input_pipeline.eval_clip_starts(3, 16, 1), [0])
  np.testing.assert_array_equal(input_pipeline.eval_frame_indices(3, 0, 5, 1), [0, 1, 2, 0, 1])
  rng = np.random.default_rng(0)
  for _ in range(50):
    indices = input_pipeline.train_frame_indices(30, 8, 3, rng)
    assert len(indices) == 8 and np.all(np.diff(indices) == 3)
    assert 0 <= indices[0] and indices[-1] < 30
  np.testing.assert_array_equal(input_pipeline.train_frame_indices(5, 4, 2, rng), [0, 2, 4, 0])


def test_corner_crop_positions():
  # 100 wide, 80 high, scale 0.5: side 40.
  assert input_pipeline.corner_crop(80, 100, 0.5, 0) == (30, 20, 40)
  assert input_pipeline.corner_crop(80, 100, 0.5, 1) == (0, 0, 40)
  assert input_pipeline.corner_crop(80, 100, 0.5, 2) == (60, 0, 40)
  assert input_pipeline.corner_crop(80, 100, 0.5, 3) == (0, 40, 40)
  assert input_pipeline.corner_crop(80, 100, 0.5, 4) == (60, 40, 40)


def test_transform_boxes_by_hand():
  boxes = np.array([[24, 20, 40, 30],    # inside the crop
                    [0, 0, 30, 20],      # partly outside: clipped
                    [70, 60, 90, 75],    # outside: absent
                    [-1, -1, -1, -1]],   # absent stays absent
                   np.float32)
  present = np.array([True, True, True, False])
  # Crop (x0=20, y0=10, side 40) resized to 20: scale 0.5.
  out, visible = input_pipeline.transform_boxes(boxes, present, 20, 10, 40, 20, flip=False)
  np.testing.assert_array_equal(visible, [True, True, False, False])
  np.testing.assert_allclose(out, [[2, 5, 10, 10], [0, 0, 5, 5], [-1] * 4, [-1] * 4])
  flipped, _ = input_pipeline.transform_boxes(boxes, present, 20, 10, 40, 20, flip=True)
  np.testing.assert_allclose(flipped, [[10, 5, 18, 10], [15, 0, 20, 5], [-1] * 4, [-1] * 4])


def _rectangle_video(num_frames=10, height=48, width=64):
  """A white rectangle moving on black, with its exact boxes (x1/y1 exclusive)."""
  video = np.zeros((num_frames, height, width, 3), np.uint8)
  boxes = []
  for t in range(num_frames):
    x0, y0 = 2 + 5 * t, 4 + 2 * t
    video[t, y0:y0 + 12, x0:x0 + 16] = 255
    boxes.append([x0, y0, x0 + 16, y0 + 12])
  return video, boxes


@pytest.mark.parametrize('annotated_scale', [1, 2])
def test_boxes_follow_the_pixels(tmp_path, annotated_scale):
  """Crop + resize + flip move the boxes exactly as they move the pixels.

  With annotated_scale 2 the annotations describe a video twice the size of
  the file (a re-encoded copy): the boxes must be rescaled to the file.
  """
  video, boxes = _rectangle_video()
  root = tmp_path / 'videos'
  video_io.write_video(str(root / 'box' / 'clip.mkv'), video, codec='FFV1')
  (root / 'annotations.json').write_text(json.dumps(dict(classes=['box'], videos=[dict(
      path='box/clip.mkv', label=0, num_frames=10, height=48 * annotated_scale,
      width=64 * annotated_scale, segments=[[0, 10]],
      boxes=[[v * annotated_scale for v in box] for box in boxes])])))
  config = _config(source='folder', root=str(root), num_frames=4, crop_size=24,
                   train_scales=(1.0, 0.707, 0.5))
  batches = _take(input_pipeline.train_batches(config, batch_size=8, seed=0), 3)
  checked = 0
  for batch in batches:
    for row in range(8):
      for t in range(4):
        ys, xs = np.nonzero(batch['video'][row, t, :, :, 0] + config.mean[0] > 127)
        if not batch['present'][row, t]:
          assert len(xs) == 0
          np.testing.assert_array_equal(batch['boxes'][row, t], -1)
          continue
        checked += 1
        pixel_box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_allclose(batch['boxes'][row, t], pixel_box, atol=1.0)
  assert checked > 20


def _export(tmp_path, size_train=8, size_val=4):
  generator = synthetic.SyntheticConfig(num_frames=12, height=40, width=48, seed=1)
  train_root, val_root = str(tmp_path / 'train'), str(tmp_path / 'val')
  synthetic.export_video_folder(train_root, generator, 'train', size=size_train)
  synthetic.export_video_folder(val_root, generator, 'val', size=size_val)
  return generator, train_root, val_root


def test_folder_source_reads_the_exported_videos(tmp_path):
  generator, train_root, val_root = _export(tmp_path)
  config = _config(source='folder', root=train_root, eval_root=val_root,
                   train_split_file='trainlist01.txt', eval_split_file='testlist01.txt',
                   num_frames=12, crop_size=40, mean=(0.0, 0.0, 0.0))
  source = input_pipeline.create_source(config, 'eval')
  assert source.class_names == list(synthetic.CLASS_NAMES) and len(source) == 4
  dataset = synthetic.SyntheticDataset(generator, 'val', 4)
  batches = list(input_pipeline.eval_batches(config, 'eval', batch_size=3))
  assert len(batches) == 2
  for batch in batches:
    assert set(batch) == KEYS_WITH_BOXES
    for row in np.nonzero(batch['mask'])[0]:
      item = dataset[int(batch['video_index'][row])]
      assert batch['label'][row] == item['label']
      # Centre 40x40 square of the 48x40 frames, at its own size.
      expected = item['video'][:, :, 4:44].astype(np.float32)
      assert np.abs(batch['video'][row] - expected).mean() < 8
      expected_boxes, _ = input_pipeline.transform_boxes(
          item['boxes'], item['present'], 4, 0, 40, 40, flip=False)
      np.testing.assert_array_equal(batch['boxes'][row], expected_boxes)
  train = next(input_pipeline.train_batches(config, batch_size=4, seed=0))
  assert set(train) == KEYS_WITH_BOXES and train['video'].shape == (4, 12, 40, 40, 3)


def test_folder_source_split_files_and_class_index(tmp_path):
  _, train_root, _ = _export(tmp_path)
  entries = open(os.path.join(train_root, 'trainlist01.txt')).read().split('\n')[:3]
  (tmp_path / 'mylist.txt').write_text('\n'.join(entries) + '\n')
  config = _config(source='folder', root=train_root,
                   train_split_file=str(tmp_path / 'mylist.txt'))
  source = input_pipeline.create_source(config, 'train')
  assert source.paths == [line.split()[0] for line in entries]
  batch = next(input_pipeline.train_batches(config, batch_size=6, seed=0))
  assert set(batch['video_index']) <= {0, 1, 2}
  # Test lists carry no label: it comes from the class folder.
  (tmp_path / 'testlist.txt').write_text(''.join(e.split()[0] + '\n' for e in entries))
  with config.unlocked():
    config.eval_split_file = str(tmp_path / 'testlist.txt')
  assert input_pipeline.create_source(config, 'eval').labels == source.labels
  # Without annotations (as UCF101): the class order comes from classInd.txt,
  # and there are no boxes.
  os.remove(os.path.join(train_root, 'annotations.json'))
  source = input_pipeline.create_source(config, 'train')
  assert source.class_names == list(synthetic.CLASS_NAMES) and not source.has_boxes
  batch = next(input_pipeline.train_batches(config, batch_size=2, seed=0))
  assert set(batch) == KEYS_WITHOUT_BOXES
  # A label that contradicts the class order is reported.
  path, label = entries[0].split()
  (tmp_path / 'bad.txt').write_text(f'{path} {int(label) % 8 + 1}\n')
  with config.unlocked():
    config.train_split_file = str(tmp_path / 'bad.txt')
  with pytest.raises(ValueError, match='class order'):
    input_pipeline.create_source(config, 'train')


def test_folder_source_without_metadata_sorts_folders(tmp_path):
  video, _ = _rectangle_video(num_frames=5)
  for name in ('b_class', 'a_class'):
    video_io.write_video(str(tmp_path / name / 'v.avi'), video)
  config = _config(source='folder', root=str(tmp_path), num_frames=4)
  source = input_pipeline.create_source(config, 'train')
  assert source.class_names == ['a_class', 'b_class']
  assert source.labels == [0, 1] and source.num_frames(0) == 5


def test_source_errors(tmp_path):
  with pytest.raises(ValueError, match='Unknown data.source'):
    input_pipeline.create_source(_config(source='nope'), 'train')
  with pytest.raises(ValueError, match='Unknown split'):
    input_pipeline.create_source(_config(), 'test')
  with pytest.raises(ValueError, match='data.root'):
    input_pipeline.create_source(_config(source='folder'), 'train')
  with pytest.raises(FileNotFoundError, match='Split file'):
    input_pipeline.create_source(_config(source='folder', root=str(tmp_path),
                                         train_split_file='missing.txt'), 'train')


# ------------------------------------------------------------------------------
# TFDS: a stand-in module (no TensorFlow needed), then TFDS's own mock_data.
# ------------------------------------------------------------------------------


def _fake_tfds(examples, class_names, fail=False):
  """A module with the parts of tensorflow_datasets that the source uses."""
  calls = []

  def data_source(name, split, data_dir, download, decoders):
    calls.append(dict(name=name, split=split, data_dir=data_dir, download=download))
    assert set(decoders) == {'video'}
    if fail:
      raise FileNotFoundError(f'{name} not prepared in {data_dir}')
    return examples[split]

  label = types.SimpleNamespace(names=class_names)
  info = types.SimpleNamespace(features={'label': label})
  module = types.ModuleType('tensorflow_datasets')
  module.data_source = data_source
  module.builder = lambda name, data_dir=None: types.SimpleNamespace(info=info)
  module.decode = types.SimpleNamespace(SkipDecoding=lambda: 'skip')
  return module, calls


def test_tfds_source_with_stand_in(monkeypatch):
  rng = np.random.default_rng(0)
  videos = {'train': [rng.integers(0, 256, (n, 20, 24, 3), dtype=np.uint8) for n in (10, 6)],
            'test': [rng.integers(0, 256, (n, 20, 24, 3), dtype=np.uint8) for n in (9, 5)]}

  def encode(frame):  # PNG: lossless, so the decoded clip is exact
    return cv2.imencode('.png', cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()

  examples = {split: [dict(video=[encode(f) for f in v], label=np.int64(i % 3))
                      for i, v in enumerate(vs)] for split, vs in videos.items()}
  module, calls = _fake_tfds(examples, ['a', 'b', 'c'])
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', module)
  config = _config(source='tfds', tfds_data_dir='/data/tfds', num_frames=4, crop_size=20,
                   mean=(0.0, 0.0, 0.0))
  source = input_pipeline.create_source(config, 'train')
  assert source.class_names == ['a', 'b', 'c'] and len(source) == 2
  assert calls[-1] == dict(name='ucf101', split='train', data_dir='/data/tfds', download=False)
  batch = next(input_pipeline.train_batches(config, batch_size=4, seed=0))
  assert set(batch) == KEYS_WITHOUT_BOXES and batch['video'].shape == (4, 4, 20, 20, 3)
  batches = list(input_pipeline.eval_batches(config, 'eval', batch_size=4))
  assert calls[-1]['split'] == 'test'
  video_index = np.concatenate([b['video_index'] for b in batches])
  np.testing.assert_array_equal(video_index, [0, 0, 0, 1, 1, -1, -1, -1])
  clips = np.concatenate([b['video'] for b in batches])
  # Clip 2 of video 0 is frame 8 only, loop-padded; centre 20x20 of 20x24 frames.
  np.testing.assert_array_equal(clips[1], videos['test'][0][4:8, :, 2:22])
  np.testing.assert_array_equal(clips[2], videos['test'][0][[8, 8, 8, 8], :, 2:22])
  np.testing.assert_array_equal(clips[4], videos['test'][1][[4, 4, 4, 4], :, 2:22])
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches]),
                                [0, 0, 0, 1, 1, 0, 0, 0])


def test_tfds_source_error_says_how_to_prepare(monkeypatch):
  module, _ = _fake_tfds({}, ['a'], fail=True)
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', module)
  with pytest.raises(RuntimeError, match='array_record'):
    input_pipeline.create_source(_config(source='tfds'), 'train')


def test_tfds_source_with_tfds_mock_data():
  pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  config = _config(source='tfds', tfds_data_dir='/nonexistent/tfds', num_frames=16,
                   crop_size=32)
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    source = input_pipeline.create_source(config, 'eval')
    assert len(source) == 3 and len(source.class_names) == 101
    decoded = tfds.data_source('ucf101', split='test', data_dir='/nonexistent/tfds')
    batch = next(input_pipeline.train_batches(config, batch_size=2, seed=0))
    assert set(batch) == KEYS_WITHOUT_BOXES and batch['video'].shape == (2, 16, 32, 32, 3)
    batches = list(input_pipeline.eval_batches(config, 'eval', batch_size=4))
  counts = [len(decoded[i]['video']) for i in range(3)]
  video_index = np.concatenate([b['video_index'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  expected = np.repeat(np.arange(3), [-(-n // 16) for n in counts])
  np.testing.assert_array_equal(video_index[mask], expected)
  labels = np.concatenate([b['label'] for b in batches])[mask]
  np.testing.assert_array_equal(labels, [int(decoded[i]['label']) for i in expected])
