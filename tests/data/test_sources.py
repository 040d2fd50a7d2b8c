"""Tests of gla_jax.data.sources: the folder source (split files, classes, annotations) and TFDS."""
import os
import sys
import types

import cv2
import numpy as np
import pytest

from gla_jax.data import loader
from gla_jax.data import sampling
from gla_jax.data import sources
from gla_jax.data import synthetic
from gla_jax.data import synthetic_settings
from gla_jax.data import video_io
from tests.data import small_data


def _export(tmp_path, size_train=8, size_val=4):
  generator = synthetic_settings.SyntheticConfig(num_frames=12, height=40, width=48, seed=1)
  train_root, val_root = str(tmp_path / 'train'), str(tmp_path / 'val')
  synthetic.export_video_folder(train_root, generator, 'train', size=size_train)
  synthetic.export_video_folder(val_root, generator, 'val', size=size_val)
  return generator, train_root, val_root


def test_folder_source_reads_the_exported_videos(tmp_path):
  generator, train_root, val_root = _export(tmp_path)
  config = small_data.config(source='folder', root=train_root, eval_root=val_root,
                             train_split_file='trainlist01.txt', eval_split_file='testlist01.txt',
                             num_frames=12, crop_size=40, mean=(0.0, 0.0, 0.0))
  source = sources.create_source(config, 'eval')
  assert source.class_names == list(synthetic_settings.CLASS_NAMES) and len(source) == 4
  dataset = synthetic.SyntheticDataset(generator, 'val', 4)
  batches = list(loader.eval_batches(config, 'eval', batch_size=3))
  assert len(batches) == 2
  for batch in batches:
    assert set(batch) == small_data.KEYS_WITH_BOXES
    for row in np.nonzero(batch['mask'])[0]:
      item = dataset[int(batch['video_index'][row])]
      assert batch['label'][row] == item['label']
      # Centre 40x40 square of the 48x40 frames, at its own size.
      expected = item['video'][:, :, 4:44].astype(np.float32)
      assert np.abs(batch['video'][row] - expected).mean() < 8
      expected_boxes, _ = sampling.transform_boxes(
          item['boxes'], item['present'], 4, 0, 40, 40, flip=False)
      np.testing.assert_array_equal(batch['boxes'][row], expected_boxes)
  train = next(loader.train_batches(config, batch_size=4, seed=0))
  assert set(train) == small_data.KEYS_WITH_BOXES and train['video'].shape == (4, 12, 40, 40, 3)


def test_folder_source_split_files_and_class_index(tmp_path):
  _, train_root, _ = _export(tmp_path)
  entries = open(os.path.join(train_root, 'trainlist01.txt')).read().split('\n')[:3]
  (tmp_path / 'mylist.txt').write_text('\n'.join(entries) + '\n')
  config = small_data.config(source='folder', root=train_root,
                             train_split_file=str(tmp_path / 'mylist.txt'))
  source = sources.create_source(config, 'train')
  assert source.paths == [line.split()[0] for line in entries]
  batch = next(loader.train_batches(config, batch_size=6, seed=0))
  assert set(batch['video_index']) <= {0, 1, 2}
  # Test lists carry no label: it comes from the class folder.
  (tmp_path / 'testlist.txt').write_text(''.join(e.split()[0] + '\n' for e in entries))
  with config.unlocked():
    config.eval_split_file = str(tmp_path / 'testlist.txt')
  assert sources.create_source(config, 'eval').labels == source.labels
  # Without annotations (as UCF101): the class order comes from classInd.txt,
  # and there are no boxes.
  os.remove(os.path.join(train_root, 'annotations.json'))
  source = sources.create_source(config, 'train')
  assert source.class_names == list(synthetic_settings.CLASS_NAMES) and not source.has_boxes
  batch = next(loader.train_batches(config, batch_size=2, seed=0))
  assert set(batch) == small_data.KEYS_WITHOUT_BOXES
  # A label that contradicts the class order is reported.
  path, label = entries[0].split()
  (tmp_path / 'bad.txt').write_text(f'{path} {int(label) % 8 + 1}\n')
  with config.unlocked():
    config.train_split_file = str(tmp_path / 'bad.txt')
  with pytest.raises(ValueError, match='class order'):
    sources.create_source(config, 'train')


def test_folder_source_without_metadata_sorts_folders(tmp_path):
  video, _ = small_data.rectangle_video(num_frames=5)
  for name in ('b_class', 'a_class'):
    video_io.write_video(str(tmp_path / name / 'v.avi'), video)
  config = small_data.config(source='folder', root=str(tmp_path), num_frames=4)
  source = sources.create_source(config, 'train')
  assert source.class_names == ['a_class', 'b_class']
  assert source.labels == [0, 1] and source.num_frames(0) == 5


def test_source_errors(tmp_path):
  with pytest.raises(ValueError, match='Unknown data.source'):
    sources.create_source(small_data.config(source='nope'), 'train')
  with pytest.raises(ValueError, match='Unknown split'):
    sources.create_source(small_data.config(), 'test')
  with pytest.raises(ValueError, match='data.root'):
    sources.create_source(small_data.config(source='folder'), 'train')
  with pytest.raises(FileNotFoundError, match='Split file'):
    sources.create_source(small_data.config(source='folder', root=str(tmp_path),
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
  config = small_data.config(source='tfds', tfds_data_dir='/data/tfds', num_frames=4, crop_size=20,
                             mean=(0.0, 0.0, 0.0))
  source = sources.create_source(config, 'train')
  assert source.class_names == ['a', 'b', 'c'] and len(source) == 2
  assert calls[-1] == dict(name='ucf101', split='train', data_dir='/data/tfds', download=False)
  batch = next(loader.train_batches(config, batch_size=4, seed=0))
  assert set(batch) == small_data.KEYS_WITHOUT_BOXES and batch['video'].shape == (4, 4, 20, 20, 3)
  batches = list(loader.eval_batches(config, 'eval', batch_size=4))
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
    sources.create_source(small_data.config(source='tfds'), 'train')


def test_tfds_source_with_tfds_mock_data():
  pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  config = small_data.config(source='tfds', tfds_data_dir='/nonexistent/tfds', num_frames=16,
                             crop_size=32)
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    source = sources.create_source(config, 'eval')
    assert len(source) == 3 and len(source.class_names) == 101
    decoded = tfds.data_source('ucf101', split='test', data_dir='/nonexistent/tfds')
    batch = next(loader.train_batches(config, batch_size=2, seed=0))
    assert (set(batch) == small_data.KEYS_WITHOUT_BOXES
            and batch['video'].shape == (2, 16, 32, 32, 3))
    batches = list(loader.eval_batches(config, 'eval', batch_size=4))
  counts = [len(decoded[i]['video']) for i in range(3)]
  video_index = np.concatenate([b['video_index'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  expected = np.repeat(np.arange(3), [-(-n // 16) for n in counts])
  np.testing.assert_array_equal(video_index[mask], expected)
  labels = np.concatenate([b['label'] for b in batches])[mask]
  np.testing.assert_array_equal(labels, [int(decoded[i]['label']) for i in expected])
