"""Tests of gla_jax.data.sources: the folder source (split files, classes, annotations) and TFDS."""
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gla_jax import defaults
from gla_jax.data import loader
from gla_jax.data import sampling
from gla_jax.data import sources
from gla_jax.data import synthetic
from gla_jax.data import synthetic_settings
from gla_jax.data import video_io
from tests.data import decoding
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
    assert set(batch) == small_data.EVAL_KEYS_WITH_BOXES
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


def test_folder_source_load_decodes_the_window_not_the_frames_before_it(tmp_path):
  pytest.importorskip('av')
  _, train_root, val_root = _export(tmp_path, size_train=2, size_val=1)
  config = small_data.config(source='folder', root=train_root, eval_root=val_root,
                             train_split_file='trainlist01.txt', eval_split_file='testlist01.txt',
                             num_frames=4, crop_size=40)
  source = sources.create_source(config, 'train')
  window = np.arange(8, 12)                         # the last 4 of 12 MJPG frames
  reference = video_io.read_video(source.path(0))[window]
  with decoding.counting_decoded_frames() as count:
    np.testing.assert_array_equal(source.load(0, window)['video'], reference)
  assert count[0] == 4, count[0]                    # sequential decoding took 12


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
# TFDS: small datasets prepared here with TFDS itself (TensorFlow is a test
# dependency), read as the runtime reads them (requirements.txt: no TensorFlow).
# ------------------------------------------------------------------------------

# ucf101_1 keeps UCF101's 320x240 frames; here they are 32x24 (same aspect ratio).
UCF_FRAME_SHAPE = (24, 32, 3)
UCF_VIDEOS = {'train': [(0, 5), (57, 7), (100, 9)], 'test': [(3, 6), (99, 8)]}  # (label, frames)
TINY_CLASSES = ['a', 'b', 'c']


def _flat_colour(label, t):
  """The colour of frame t of the video of `label` (flat frames survive JPEG almost exactly)."""
  return np.array([20 + (37 * label) % 200, 20 + (53 * t) % 200, 20 + (11 * label + 29 * t) % 200],
                  np.uint8)


def _ucf101_video(label, num_frames, shape=UCF_FRAME_SHAPE):
  return np.stack([np.broadcast_to(_flat_colour(label, t), shape) for t in range(num_frames)])


def _tiny_videos():
  rng = np.random.default_rng(0)
  return {'train': [rng.integers(0, 256, (n, 20, 24, 3), dtype=np.uint8) for n in (10, 6)],
          'test': [rng.integers(0, 256, (n, 20, 24, 3), dtype=np.uint8) for n in (9, 5)]}


def _prepare(tfds, data_dir):
  """Prepares, in ArrayRecord format: ucf101/ucf101_1 and ucf101/ucf101_1_256 with
  TFDS's own UCF101 builder (its features, labels and configs) on made-up videos,
  and 'tiny_videos' (PNG frames, classes a, b, c) for exact pixel checks."""
  from tensorflow_datasets.video import ucf101  # pylint: disable=g-import-not-at-top

  def generate(videos):
    # TFDS 4.9.10 on Python 3.11 finds a builder's code with importlib_resources,
    # which it does not install: builders defined here say they have no code path.
    return dict(code_path=None, __module__=__name__,
                _split_generators=lambda self, dl_manager: {
                    split: self._generate_examples(split) for split in videos},
                _generate_examples=lambda self, split: (
                    (f'{split}_{i}', example) for i, example in enumerate(videos[split])))

  ucf_videos = {split: [dict(video=_ucf101_video(label, n), label=label) for label, n in entries]
                for split, entries in UCF_VIDEOS.items()}
  square = {split: [dict(video=_ucf101_video(label, 3, (256, 256, 3)), label=label)
                    for label, _ in entries[:2]] for split, entries in UCF_VIDEOS.items()}
  tiny = {split: [dict(video=v, label=i % 3) for i, v in enumerate(vs)]
          for split, vs in _tiny_videos().items()}
  with tfds.core.registered.skip_registration():
    fake_ucf101 = type('FakeUcf101', (ucf101.Ucf101,), dict(name='ucf101', **generate(ucf_videos)))
    fake_square = type('FakeUcf101Square', (ucf101.Ucf101,),
                       dict(name='ucf101', **generate(square)))

    def tiny_info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(dict(
          video=tfds.features.Video((None, 20, 24, 3), encoding_format='png'),
          label=tfds.features.ClassLabel(names=TINY_CLASSES))))

    tiny_builder = type('TinyVideos', (tfds.core.GeneratorBasedBuilder,), dict(
        name='tiny_videos', VERSION=tfds.core.Version('1.0.0'), disable_shuffling=True,
        _info=tiny_info, **generate(tiny)))
  for builder in (fake_ucf101(config='ucf101_1', data_dir=data_dir, file_format='array_record'),
                  fake_square(config='ucf101_1_256', data_dir=data_dir,
                              file_format='array_record'),
                  tiny_builder(data_dir=data_dir, file_format='array_record')):
    builder.download_and_prepare()
  return data_dir


@pytest.fixture(scope='module')
def tfds_data_dir(tmp_path_factory):
  pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  return _prepare(tfds, str(tmp_path_factory.mktemp('tensorflow_datasets')))


def test_tfds_default_name_keeps_the_frames():
  """`ucf101` alone is TFDS's first config, ucf101_1_256 (frames resized to 256x256 squares);
  the default names ucf101_1, which keeps the 320x240 frames (TFDS resolves the names)."""
  pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  from configs import ucf101 as ucf101_config  # pylint: disable=g-import-not-at-top
  squashed = tfds.builder('ucf101')
  assert squashed.builder_config.name == 'ucf101_1_256'
  assert squashed.info.features['video'].shape == (None, 256, 256, 3)
  for name in (defaults.data_config().tfds_name, ucf101_config.get_config('tfds').data.tfds_name):
    assert name == 'ucf101/ucf101_1'
    kept = tfds.builder(name)
    assert kept.builder_config.name == 'ucf101_1' and kept.builder_config.split_number == 1
    assert kept.info.features['video'].shape == (None, None, None, 3)


# Run in a fresh interpreter where TensorFlow cannot be found, as in an environment
# installed from requirements.txt: `import tensorflow` raises ImportError and
# importlib.util.find_spec('tensorflow') is None. (sys.modules['tensorflow'] = None
# would not do: etils takes a 'tensorflow' key in sys.modules for TensorFlow loaded.)
_READ_WITHOUT_TENSORFLOW = r"""
import importlib.machinery, importlib.util, json, sys

class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name == 'tensorflow' or name.startswith('tensorflow.'):
      return None
    return super().find_spec(name, path, target)

sys.meta_path[:] = [PathFinderWithoutTensorFlow if finder is importlib.machinery.PathFinder
                    else finder for finder in sys.meta_path]
try:
  import tensorflow
  raise SystemExit('tensorflow imported')
except ImportError:
  pass
import numpy as np
from gla_jax import defaults
from gla_jax.data import sources

data_config = defaults.data_config()
data_config.update(dict(source='tfds', tfds_name=sys.argv[1], tfds_data_dir=sys.argv[2]))
report = {}
for split in ('train', 'eval'):
  source = sources.create_source(data_config, split)
  videos = []
  for index in range(len(source)):
    count = source.num_frames(index)
    example = source.load(index, np.arange(count))
    videos.append(dict(num_frames=count, label=example['label'], shape=example['video'].shape,
                       dtype=str(example['video'].dtype),
                       colours=example['video'].reshape(count, -1, 3).mean(1).tolist()))
  report[split] = dict(class_names=source.class_names, videos=videos)
report['tensorflow_modules'] = [m for m in sys.modules if m.split('.')[0] == 'tensorflow']
report['tensorflow_found'] = importlib.util.find_spec('tensorflow') is not None
print('REPORT', json.dumps(report))
"""


def _read_without_tensorflow(name, data_dir):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run([sys.executable, '-c', _READ_WITHOUT_TENSORFLOW, name, data_dir],
                          cwd=repo, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=repo))
  assert result.returncode == 0, result.stderr[-6000:]
  line = [line for line in result.stdout.splitlines() if line.startswith('REPORT ')][-1]
  return json.loads(line[len('REPORT '):])


def test_tfds_source_reads_prepared_ucf101_without_tensorflow(tfds_data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  report = _read_without_tensorflow('ucf101/ucf101_1', tfds_data_dir)
  assert report['tensorflow_modules'] == [] and not report['tensorflow_found']
  names = tfds.builder('ucf101').info.features['label'].names
  assert len(names) == 101 and names[0] == 'ApplyEyeMakeup'
  for split, tfds_split in (('train', 'train'), ('eval', 'test')):
    assert report[split]['class_names'] == names
    videos = report[split]['videos']
    # The same examples in the same order as TFDS's own reader (with TensorFlow).
    reference = tfds.data_source('ucf101/ucf101_1', split=tfds_split, data_dir=tfds_data_dir)
    assert [v['label'] for v in videos] == [int(example['label']) for example in reference]
    assert sorted((v['label'], v['num_frames']) for v in videos) == UCF_VIDEOS[tfds_split]
    for video in videos:
      # Undistorted: the frames keep their 32x24 size (H, W = 24, 32).
      assert video['shape'] == [video['num_frames'], *UCF_FRAME_SHAPE] and video['dtype'] == 'uint8'
      expected = [_flat_colour(video['label'], t) for t in range(video['num_frames'])]
      np.testing.assert_allclose(video['colours'], expected, atol=3)


def test_tfds_source_warns_when_frames_were_resized_to_squares(tfds_data_dir, caplog,
                                                              monkeypatch):
  monkeypatch.setattr(sources, '_WARNED_SQUARE', set(), raising=False)   # Warned once a dataset.
  caplog.set_level(logging.WARNING)
  config = small_data.config(source='tfds', tfds_name='ucf101', tfds_data_dir=tfds_data_dir)
  source = sources.create_source(config, 'train')   # `ucf101` alone is ucf101/ucf101_1_256.
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any('256x256' in message and 'ucf101/ucf101_1_256' in message
             and "'ucf101/ucf101_1'" in message for message in warnings), warnings
  assert source.load(0, np.arange(2))['video'].shape == (2, 256, 256, 3)
  caplog.clear()
  config = small_data.config(source='tfds', tfds_name='ucf101/ucf101_1',
                             tfds_data_dir=tfds_data_dir)
  kept = sources.create_source(config, 'train')
  assert kept.load(0, np.arange(2))['video'].shape[1:] == UCF_FRAME_SHAPE
  assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_tfds_source_batches_are_exact(tfds_data_dir):
  videos = _tiny_videos()
  config = small_data.config(source='tfds', tfds_name='tiny_videos', tfds_data_dir=tfds_data_dir,
                             num_frames=4, crop_size=20, mean=(0.0, 0.0, 0.0))
  source = sources.create_source(config, 'train')
  assert source.class_names == TINY_CLASSES and len(source) == 2
  assert [source.num_frames(i) for i in range(2)] == [10, 6]
  batch = next(loader.train_batches(config, batch_size=4, seed=0))
  assert set(batch) == small_data.KEYS_WITHOUT_BOXES and batch['video'].shape == (4, 4, 20, 20, 3)
  batches = list(loader.eval_batches(config, 'eval', batch_size=4))
  video_index = np.concatenate([b['video_index'] for b in batches])
  # Hara's starts range(1, n, 4) (1-based): 9 frames -> 0, 4; 5 frames -> 0. No clip starts
  # at the last frame (frame 8 of video 0, frame 4 of video 1, loop-padded to 4 frames).
  np.testing.assert_array_equal(video_index, [0, 0, 1, -1])
  clips = np.concatenate([b['video'] for b in batches])
  # The centre 20x20 of 20x24 frames (PNG: exact).
  np.testing.assert_array_equal(clips[1], videos['test'][0][4:8, :, 2:22])
  np.testing.assert_array_equal(clips[2], videos['test'][1][0:4, :, 2:22])
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches]), [0, 0, 1, 0])


def test_tfds_source_counts_frames_without_decoding_them(tfds_data_dir, monkeypatch):
  config = small_data.config(source='tfds', tfds_name='tiny_videos', tfds_data_dir=tfds_data_dir)
  source = sources.create_source(config, 'train')

  def no_decoding(*args, **kwargs):
    raise AssertionError('a frame was decoded to count the frames')

  monkeypatch.setattr(sources.cv2, 'imdecode', no_decoding)
  assert [source.num_frames(i) for i in range(2)] == [10, 6]   # the encoded frames


def test_tfds_source_errors_say_how_to_prepare(tfds_data_dir, tmp_path):
  def source(**overrides):
    return sources.create_source(small_data.config(source='tfds', **overrides), 'train')

  with pytest.raises(FileNotFoundError, match=r'config.data.tfds_name.*--file_format=array_record'):
    source(tfds_name='ucf101/ucf101_2', tfds_data_dir=tfds_data_dir)
  with pytest.raises(ValueError, match=r'config.data.tfds_train_split=.validation.*train'):
    source(tfds_name='tiny_videos', tfds_data_dir=tfds_data_dir, tfds_train_split='validation')
  # A copy in TFRecord format (TFDS's default) has no random access.
  copy = tmp_path / 'tiny_videos'
  shutil.copytree(os.path.join(tfds_data_dir, 'tiny_videos'), copy)
  info_path = copy / '1.0.0' / 'dataset_info.json'
  info = json.loads(info_path.read_text())
  info['fileFormat'] = 'tfrecord'
  info_path.write_text(json.dumps(info))
  with pytest.raises(ValueError, match='convert_format'):
    source(tfds_name='tiny_videos', tfds_data_dir=str(tmp_path))
