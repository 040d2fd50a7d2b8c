"""Annotation files: roundtrip, validation errors, UCF101-24 conversion."""
import copy
import json
import pickle

import numpy as np
import pytest

from gla_jax.data import annotations
from gla_jax.data import synthetic
from gla_jax.data import synthetic_settings


def _annotations():
  return dict(classes=['jump', 'run'], videos=[
      dict(path='jump/a.avi', label=0, num_frames=4, height=20, width=30,
           segments=[[1, 3]], boxes=[None, [2, 3, 12, 15], [4, 5, 30, 20], None]),
      dict(path='run/b.avi', label=1, num_frames=2),          # labels only
  ])


def test_roundtrip_with_numpy_values(tmp_path):
  data = _annotations()
  data['videos'][0]['label'] = np.int64(0)
  data['videos'][0]['boxes'][1] = np.array([2, 3, 12, 15], np.int32)
  data['videos'][0]['boxes'][2] = [np.float32(4.5), 5, 30, 20]
  path = str(tmp_path / 'sub' / 'annotations.json')
  annotations.save(data, path)
  loaded = annotations.load(path)
  expected = _annotations()
  expected['videos'][0]['boxes'][2] = [4.5, 5, 30, 20]
  assert loaded == expected
  boxes, present = annotations.ground_truth(loaded['videos'][0])
  np.testing.assert_array_equal(boxes, [[-1] * 4, [2, 3, 12, 15], [4.5, 5, 30, 20], [-1] * 4])
  np.testing.assert_array_equal(present, [False, True, True, False])
  boxes, present = annotations.ground_truth(loaded['videos'][1])
  assert boxes.shape == (2, 4) and not present.any()


def test_synthetic_export_is_valid(tmp_path):
  config = synthetic_settings.SyntheticConfig.default(num_frames=4, height=32, width=32)
  written = synthetic.export_video_folder(str(tmp_path), config, size=2)
  loaded = annotations.load(str(tmp_path / 'annotations.json'))
  assert loaded['videos'] == json.loads(json.dumps(written['videos']))
  clip = synthetic.generate_clip(config, 1)
  boxes, present = annotations.ground_truth(loaded['videos'][1])
  np.testing.assert_array_equal(boxes, clip.boxes)
  np.testing.assert_array_equal(present, clip.present)


def _error(data):
  with pytest.raises(ValueError) as info:
    annotations.validate(data)
  return str(info.value)


def test_box_outside_the_frame_names_video_frame_and_fix():
  data = _annotations()
  data['videos'][0]['boxes'][2] = [4, 5, 31, 20]
  message = _error(data)
  assert "'jump/a.avi', frame 2" in message
  assert '30 x 20' in message and 'clip it to [0, width] x [0, height]' in message
  data['videos'][0]['boxes'][2] = [-1, 5, 10, 20]
  assert 'outside' in _error(data)


def test_other_validation_errors():
  data = _annotations()
  data['videos'][0]['segments'] = [[2, 5]]
  assert 'segment 0 [2, 5] is out of range' in _error(data)
  data = _annotations()
  data['videos'][0]['boxes'] = data['videos'][0]['boxes'][:3]
  assert '3 boxes for num_frames=4' in _error(data)
  data = _annotations()
  data['videos'][0]['boxes'][1] = [2, 3, 10, 2]                # (x, y, w, h) by mistake
  assert 'not x, y, w, h' in _error(data)
  data = _annotations()
  data['videos'][1]['label'] = 2
  assert 'label 2 is not an index' in _error(data)
  data = _annotations()
  data['videos'].append(copy.deepcopy(data['videos'][1]))
  assert "'run/b.avi' appears more than once" in _error(data)
  data = _annotations()
  del data['videos'][0]['num_frames']
  assert 'missing "num_frames"' in _error(data)
  assert '"classes" must be' in _error(dict(videos=[]))
  # Every problem is listed at once.
  data = _annotations()
  data['videos'][0]['segments'] = [[0, 9]]
  data['videos'][0]['boxes'][1] = [0, 0, 99, 99]
  assert '2 problem(s)' in _error(data)


def test_load_reports_the_file(tmp_path):
  path = tmp_path / 'bad.json'
  path.write_text('{"classes": ["a"], "videos": [{"path": "x", "label": 0, "num_frames": 0}]}')
  with pytest.raises(ValueError, match='(?s)bad.json.*num_frames 0'):
    annotations.load(str(path))
  assert annotations.load(str(path), check=False)['classes'] == ['a']
  path.write_text('not json')
  with pytest.raises(ValueError, match='not valid JSON'):
    annotations.load(str(path))


# --- UCF101-24 ------------------------------------------------------------------

def _ucf_dict():
  """Two videos: overlapping tubes in one, disjoint tubes in the other.

  Boxes are (x, y, w, h) in 1-based pixels, as in pyannot.pkl.
  """
  return {
      'Run/v_Run_g01_c01': dict(numf=10, label=1, annotations=[
          dict(label=1, sf=2, ef=6, boxes=np.array([[11, 21, 10, 20]] * 4)),
          dict(label=1, sf=4, ef=8, boxes=np.array([[31, 11, 5, 5]] * 4)),
      ]),
      'Jump/v_Jump_g02_c01': dict(numf=6, annotations=[
          dict(label=0, sf=0, ef=2, boxes=np.array([[1, 1, 4, 4], [315, 230, 10, 20]])),
          dict(label=0, sf=4, ef=6, boxes=np.array([[5, 5, 2, 2]] * 2)),
      ]),
  }


def test_from_ucf101_24_merges_tubes():
  data = annotations.from_ucf101_24(_ucf_dict(), ['Jump', 'Run'])
  assert data['classes'] == ['Jump', 'Run']
  jump, run = data['videos']                        # sorted by name
  assert run['path'] == 'Run/v_Run_g01_c01.avi'
  assert run['label'] == 1 and run['num_frames'] == 10
  assert (run['height'], run['width']) == (240, 320)
  assert run['segments'] == [[2, 8]]               # union of [2, 6) and [4, 8)
  tube1, tube2, both = [10, 20, 20, 40], [30, 10, 35, 15], [10, 10, 35, 40]
  assert run['boxes'] == [None, None, tube1, tube1, both, both, tube2, tube2, None, None]
  assert jump['label'] == 0
  assert jump['segments'] == [[0, 2], [4, 6]]
  # The second box runs past the 320 x 240 frame: clipped to it.
  assert jump['boxes'] == [[0, 0, 4, 4], [314, 229, 320, 240], None, None, [4, 4, 6, 6],
                           [4, 4, 6, 6]]


def test_from_ucf101_24_options():
  data = annotations.from_ucf101_24(_ucf_dict(), ['Jump', 'Run'], videos=['Run/v_Run_g01_c01'],
                                    path_format='{name}', box_offset=0, frame_offset=1)
  (run,) = data['videos']
  assert run['path'] == 'Run/v_Run_g01_c01'
  assert run['segments'] == [[1, 7]]
  assert run['boxes'][1] == [11, 21, 21, 41]
  with pytest.raises(ValueError, match='outside the frame|lies outside'):
    annotations.from_ucf101_24(_ucf_dict(), ['Jump', 'Run'], clip_boxes=False)


def test_from_ucf101_24_errors():
  names = ['Jump', 'Run']
  bad = _ucf_dict()
  bad['Run/v_Run_g01_c01']['annotations'][1]['ef'] = 11
  with pytest.raises(ValueError, match='tube 1: frames \\[4, 11\\).*frame_offset'):
    annotations.from_ucf101_24(bad, names)
  bad = _ucf_dict()
  bad['Run/v_Run_g01_c01']['annotations'][0]['boxes'] = np.zeros((3, 4))
  with pytest.raises(ValueError, match='3 boxes for frames'):
    annotations.from_ucf101_24(bad, names)
  bad = _ucf_dict()
  bad['Run/v_Run_g01_c01']['annotations'][0]['label'] = 0
  with pytest.raises(ValueError, match=r'labels \[0, 1\]'):
    annotations.from_ucf101_24(bad, names)
  with pytest.raises(ValueError, match='not in the UCF101-24 annotations'):
    annotations.from_ucf101_24(_ucf_dict(), names, videos=['Run/v_Run_g09_c01'])
  with pytest.raises(ValueError, match='label 1 is not an index'):
    annotations.from_ucf101_24(_ucf_dict(), ['Jump'])


def test_ucf101_24_pickle(tmp_path):
  path = tmp_path / 'pyannot.pkl'
  with open(path, 'wb') as f:
    pickle.dump(_ucf_dict(), f, protocol=2)
  loaded = annotations.load_ucf101_24_pickle(str(path))
  assert annotations.from_ucf101_24(loaded, ['Jump', 'Run']) == annotations.from_ucf101_24(
      _ucf_dict(), ['Jump', 'Run'])
