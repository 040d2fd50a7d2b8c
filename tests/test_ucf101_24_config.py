"""configs/ucf101_24.py: its files from a pyannot.pkl-like pickle, and the folder source on them."""
import pickle

import numpy as np
import pytest

from configs import ucf101_24
from gla_jax import validation
from gla_jax.data import annotations
from gla_jax.data import sources
from gla_jax.data import video_io

# Two of the 24 classes, a training and a test video each (labels: indices into CLASSES).
VIDEOS = {'Biking/v_Biking_g01_c01': 2, 'Biking/v_Biking_g08_c02': 2,
          'Diving/v_Diving_g02_c01': 5, 'Diving/v_Diving_g09_c03': 5}


def _pyannot():
  """pyannot.pkl's form: numf, tubes with 0-based sf, exclusive ef and 1-based (x, y, w, h)."""
  return {name: dict(numf=6, label=label, annotations=[
      dict(label=label, sf=1, ef=5, boxes=np.array([[3, 5, 8, 6]] * 4))])
          for name, label in VIDEOS.items()}


def _files(tmp_path):
  root, lists = tmp_path / 'UCF-101', tmp_path / 'ucfTrainTestlist'
  for name in VIDEOS:
    video_io.write_video(str(root / f'{name}.avi'), np.full((6, 240, 320, 3), 128, np.uint8))
  lists.mkdir()
  # UCF101's lists: 1-based labels of the 101 classes in training, other classes' videos too.
  (lists / 'trainlist01.txt').write_text(
      'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nBiking/v_Biking_g08_c02.avi 11\n'
      'Diving/v_Diving_g09_c03.avi 26\n')
  (lists / 'testlist01.txt').write_text(
      'Biking/v_Biking_g01_c01.avi\nDiving/v_Diving_g02_c01.avi\nYoYo/v_YoYo_g01_c01.avi\n')
  pyannot = tmp_path / 'pyannot.pkl'
  with open(pyannot, 'wb') as f:
    pickle.dump(_pyannot(), f, protocol=2)                    # Python 2's protocol, as released
  return root, lists, pyannot


def test_config_is_locked_and_valid(tmp_path):
  config = ucf101_24.get_config()
  assert config.model.num_classes == 24 == len(ucf101_24.CLASSES)
  assert config.data.source == 'folder' and config.localize.max_clips == 960
  with pytest.raises(AttributeError):
    config.data.anotations = 'x'                             # locked
  config.data.root = str(tmp_path)
  validation.validate(config, num_devices=8)
  assert 'python -m configs.ucf101_24 --pyannot=' in ucf101_24.__doc__
  assert 'main.py --config=configs/ucf101_24.py' in ucf101_24.__doc__


def test_prepared_files_feed_the_folder_source(tmp_path, capsys):
  root, lists, pyannot = _files(tmp_path)
  ucf101_24.main([f'--pyannot={pyannot}', f'--lists={lists}', f'--out={root}'])   # the command
  paths = dict(line.split(': ') for line in capsys.readouterr().out.splitlines())
  assert paths['test'] == str(root / 'ucf101_24_testlist01.txt')
  assert (root / 'ucf101_24_trainlist01.txt').read_text() == (
      'Biking/v_Biking_g08_c02.avi\nDiving/v_Diving_g09_c03.avi\n')   # the annotated ones only
  data = annotations.load(paths['annotations'])
  assert data['classes'] == list(ucf101_24.CLASSES) and len(data['videos']) == 4
  config = ucf101_24.get_config()
  config.data.root = str(root)
  source = sources.create_source(config.data, 'eval')
  assert source.has_boxes and len(source) == 2
  assert [source.label(i) for i in range(2)] == [2, 5]       # Biking, Diving of the 24
  example = source.load(0, np.arange(6))
  # Frames 1-4 have the tube's box: (3, 5, 8, 6) 1-based -> [2, 4, 10, 10), x1/y1 exclusive.
  np.testing.assert_array_equal(example['present'], [0, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(example['boxes'][1], [2, 4, 10, 10])
  assert example['video'].shape == (6, 240, 320, 3)           # UCF101's frame size
  assert [source.label(i) for i in range(2)] == [
      sources.create_source(config.data, 'train').label(i) for i in range(2)]


def test_prepare_refuses_labels_out_of_the_class_order(tmp_path):
  root, lists, pyannot = _files(tmp_path)
  wrong = _pyannot()
  for record in wrong.values():                 # Diving's label given to Biking and back
    record['label'] = 7 - record['label']
    record['annotations'][0]['label'] = record['label']
  with open(pyannot, 'wb') as f:
    pickle.dump(wrong, f)
  with pytest.raises(ValueError, match=r"has label 5 \(Diving\) but lies in 'Biking'"):
    ucf101_24.prepare_files(str(pyannot), str(lists), str(root))
  with pytest.raises(ValueError, match='lists none of the 4 videos'):
    (lists / 'testlist01.txt').write_text('YoYo/v_YoYo_g01_c01.avi\n')
    ucf101_24.prepare_files(str(pyannot), str(lists), str(root))
