"""Tests of gla_jax/class_names.py: the shipped lists, names files, the count check."""
import pytest

from gla_jax import class_names


@pytest.mark.parametrize('count, first, last, some', [
    # UCF101 in classInd.txt's order: Hammering (35) before HammerThrow (36).
    (101, 'ApplyEyeMakeup', 'YoYo', {34: 'Hammering', 35: 'HammerThrow', 46: 'JumpingJack',
                                     47: 'JumpRope', 79: 'SkateBoarding'}),
    (51, 'brush_hair', 'wave', {13: 'fencing', 14: 'flic_flac', 45: 'sword_exercise'}),
    (400, 'abseiling', 'zumba', {5: 'archery', 209: 'passing American football (not in game)',
                                 399: 'zumba'}),
])
def test_shipped_lists(count, first, last, some):
  names = class_names.shipped(count)
  assert len(names) == count and len(set(names)) == count
  assert names[0] == first and names[-1] == last
  for index, name in some.items():
    assert names[index] == name, index
  assert all(name == name.strip() and name for name in names)


def test_hmdb51_and_kinetics_are_sorted_and_ucf101_is_classind_order():
  for count in (51, 400):
    assert class_names.shipped(count) == sorted(class_names.shipped(count))
  ucf = class_names.shipped(101)
  # classInd.txt sorts without regard to case; a plain sort would swap these.
  assert ucf == sorted(ucf, key=str.lower) != sorted(ucf)
  assert class_names.shipped(7) is None


def test_names_files(tmp_path):
  path = tmp_path / 'names.txt'
  path.write_text('walk\n\n  run \njump\n')
  assert class_names.read_file(str(path)) == ['walk', 'run', 'jump']
  # UCF101's classInd.txt: '<index> <name>' lines.
  path.write_text('1 ApplyEyeMakeup\n2 Apply Lipstick\n')
  assert class_names.read_file(str(path)) == ['ApplyEyeMakeup', 'Apply Lipstick']
  path.write_text('walk\nrun\nwalk\n')
  with pytest.raises(ValueError, match=r"names 'walk' more than once"):
    class_names.read_file(str(path))
  path.write_text('\n \n')
  with pytest.raises(ValueError, match='holds no class name; write one name per line'):
    class_names.read_file(str(path))
  with pytest.raises(FileNotFoundError, match=r'--class_names=.*missing.txt: no such file'):
    class_names.read_file(str(tmp_path / 'missing.txt'))


def test_a_count_mismatch_names_both_counts_and_the_fix():
  with pytest.raises(ValueError, match=r'--class_names=n.txt has 3 class names but the model has '
                                       r'8 classes .*--config.model.num_classes=3'):
    class_names.check_count(['a', 'b', 'c'], 8, '--class_names=n.txt')
  assert class_names.check_count(('a', 'b'), 2, 'x') == ['a', 'b']


def test_names_in_metadata():
  assert class_names.of_metadata({'class_names': ['a', 'b']}, 2) == ['a', 'b']
  assert class_names.of_metadata({'class_names': ['a', 'b']}, 3) is None
  assert class_names.of_metadata({'class_names': None}) is None
  assert class_names.of_metadata({}) is None
