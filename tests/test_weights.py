"""Tests of gla_jax/weights.py: one resolver of weights, its order, its errors."""
import json
import os

import jax
import numpy as np
import pytest

from configs import tiny
from gla_jax import class_names
from gla_jax import jobs
from gla_jax import models
from gla_jax import weights
from gla_jax.data import synthetic_settings
from gla_jax.models import building
from gla_jax.models import convert
from gla_jax.training import checkpoints
from gla_jax.training import evaluate
from gla_jax.training import loop
from tests import torch_resnext
# The tiny PyTorch reference network and its conversion, shared with the conversion tests.
from tests.models.test_convert import NUM_CLASSES, assert_trees_equal  # noqa: F401
from tests.models.test_convert import tiny_model, tiny_state, tiny_torch  # noqa: F401


def _variables(seed):
  config = tiny.get_config()
  return models.init_variables(building.create_model(config), jax.random.key(seed),
                               building.clip_shape(config))


def _random_variables(model, seed):
  """Random `{'params', 'batch_stats'}` of `model`'s shapes (traced, not compiled: fast)."""
  shapes = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0),
                                                       (1, 8, 16, 16, 3)))
  rng = np.random.default_rng(seed)
  return {'params': jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype),
                                 shapes['params']),
          'batch_stats': jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes['batch_stats'])}


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
  """Three sets of tiny weights: converted in the workdir, elsewhere, and a training step."""
  root = tmp_path_factory.mktemp('weights')
  converted, init, trained = _variables(1), _variables(2), _variables(3)
  weights.save_variables(root / 'work' / weights.CONVERTED_DIR, converted, {'preset': 'tiny'})
  weights.save_variables(root / 'pretrained', init, {'preset': 'tiny'})
  with checkpoints.TrainCheckpointManager(root / 'trained' / checkpoints.CHECKPOINTS_DIR) as m:
    m.save(5, trained, {'step': 5})
  return root, dict(converted=converted, init=init, trained=trained)


def _config(**train):
  config = tiny.get_config()
  config.train.update(**train)
  return config


def test_order_training_checkpoint_then_init_checkpoint_then_converted(sources, tmp_path):
  root, want = sources
  work = str(root / 'work')
  found = weights.for_config(_config(), work)
  assert found.kind == 'converted' and _same(found.variables, want['converted'])
  found = weights.for_config(_config(init_checkpoint=str(root / 'pretrained')), work)
  assert found.path == str(root / 'pretrained') and _same(found.variables, want['init'])
  assert found.kind == 'converted'
  # A training workdir named as the init checkpoint is labelled as one.
  found = weights.for_config(_config(init_checkpoint=str(root / 'trained')), str(tmp_path))
  assert found.kind == 'training' and _same(found.variables, want['trained'])
  # A workdir with a training checkpoint uses it, whatever else there is.
  trained = str(root / 'trained')
  weights.save_variables(os.path.join(trained, weights.CONVERTED_DIR), want['converted'])
  found = weights.for_config(_config(init_checkpoint=str(root / 'pretrained')), trained)
  assert (found.kind, found.step) == ('training', 5) and _same(found.variables, want['trained'])


def test_relative_init_checkpoint_is_found_in_the_workdir_by_every_mode(sources, tmp_path,
                                                                        monkeypatch):
  """`init_checkpoint='converted'` (configs/ucf101.py) means `<workdir>/converted` for eval too.

  Before the resolver, `--mode=eval` looked for it in the current directory.
  """
  root, want = sources
  monkeypatch.chdir(tmp_path)
  config = _config(init_checkpoint=weights.CONVERTED_DIR)
  found = weights.for_config(config, str(root / 'work'))
  assert found.path == str(root / 'work' / weights.CONVERTED_DIR)
  assert _same(found.variables, want['converted'])


def test_eval_mode_finds_a_relative_init_checkpoint_in_the_workdir(tmp_path, monkeypatch):
  """Also: --checkpoint reaches the same weights (the same results), which name the classes."""
  work = tmp_path / 'run'
  names = [f'{name} (converted)' for name in synthetic_settings.CLASS_NAMES]
  weights.save_variables(work / weights.CONVERTED_DIR, _variables(1),
                         {'preset': 'tiny', 'num_classes': 8, 'class_names': names})
  (tmp_path / 'elsewhere').mkdir()
  monkeypatch.chdir(tmp_path / 'elsewhere')
  config = _config(init_checkpoint=weights.CONVERTED_DIR)
  with config.unlocked():
    config.eval.max_batches = 1
  result = evaluate.evaluate(config, str(work))
  assert result['num_clips'] > 0 and 0 <= result['clip_accuracy'] <= 1
  other = tmp_path / 'other'
  plain = _config()   # No init_checkpoint: only --checkpoint names the weights.
  with plain.unlocked():
    plain.eval.max_batches = 1
  flagged = evaluate.evaluate(plain, str(other), checkpoint=str(work / weights.CONVERTED_DIR))
  assert evaluate.scalar_metrics(flagged) == evaluate.scalar_metrics(result)
  for workdir in (work, other):
    written = json.load(open(evaluate.results_path(str(workdir), config.eval.split)))
    assert written['class_names'] == names, workdir


def test_no_weights_lists_every_place_looked(tmp_path):
  config = _config(init_checkpoint='missing_dir')
  with pytest.raises(FileNotFoundError) as error:
    weights.for_config(config, str(tmp_path))
  message = str(error.value)
  for place in (os.path.join(str(tmp_path), checkpoints.CHECKPOINTS_DIR),
                "config.train.init_checkpoint='missing_dir'",
                os.path.join(str(tmp_path), weights.CONVERTED_DIR), '--mode=convert'):
    assert place in message, message


def test_read_names_what_a_path_must_be(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'neither a PyTorch .pth file, nor a converted '
                     r'directory .*nor a training workdir'):
    weights.read(tmp_path)


# ---------------------------------------------------------------------------
# The converted-directory format and convert_checkpoint.


def test_save_load_roundtrip(tmp_path, tiny_state, tiny_model):
  variables = convert.torch_to_flax(tiny_state, tiny_model)
  metadata = {'preset': 'tiny', 'num_classes': NUM_CLASSES, 'source': 'test'}
  directory = weights.save_variables(tmp_path / 'ckpt', variables, metadata)
  loaded, loaded_metadata = weights.load_variables(directory)
  assert loaded_metadata == metadata
  assert_trees_equal(loaded, variables)


def test_save_replaces_only_after_success(tmp_path):
  directory = tmp_path / 'ckpt'
  weights.save_variables(directory, {'params': {'w': np.ones(3, np.float32)}}, {'v': 1})
  weights.save_variables(directory, {'params': {'w': np.full(3, 2.0, np.float32)}}, {'v': 2})
  loaded, metadata = weights.load_variables(directory)
  assert metadata == {'v': 2} and np.all(loaded['params']['w'] == 2.0)
  # A save that fails (here: an object Orbax cannot write) keeps the old checkpoint.
  with pytest.raises(Exception):
    weights.save_variables(directory, {'params': {'w': object()}}, {'v': 3})
  with pytest.raises(TypeError):
    weights.save_variables(directory, {'params': {'w': np.zeros(3)}}, {'v': object()})
  loaded, metadata = weights.load_variables(directory)
  assert metadata == {'v': 2} and np.all(loaded['params']['w'] == 2.0)
  assert sorted(os.listdir(tmp_path)) == ['ckpt']   # No staging or backup left behind.


def test_load_variables_names_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a variables checkpoint'):
    weights.load_variables(tmp_path / 'nothing')


def test_convert_checkpoint_end_to_end(tmp_path, tiny_torch, tiny_state):
  path = tmp_path / 'resnext-tiny-kinetics.pth'
  torch_resnext.save_published_checkpoint(tiny_torch, path, arch='resnext-tiny', epoch=42,
                                          num_batches_tracked=False)
  model = models.create('tiny', num_classes=7)
  metadata = weights.convert_checkpoint(path, model, tmp_path / 'converted', drop_head=True)
  loaded, loaded_metadata = weights.load_variables(tmp_path / 'converted')
  assert loaded_metadata == metadata
  assert metadata['preset'] == 'tiny' and metadata['num_classes'] == 7
  assert metadata['source'] == str(path) and metadata['drop_head'] is True
  assert metadata['source_arch'] == 'resnext-tiny' and metadata['source_epoch'] == 42
  assert_trees_equal(loaded, convert.torch_to_flax(tiny_state, model, drop_head=True))


def test_variables_checkpoint_round_trip(tmp_path):
  variables = {'params': {'fc': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)}},
               'batch_stats': {'bn': {'var': np.ones(3, np.float32)}}}
  weights.save_variables(tmp_path / 'converted', variables, {'preset': 'tiny'})
  loaded, metadata = weights.load_variables(tmp_path / 'converted')
  assert metadata == {'preset': 'tiny'}
  np.testing.assert_array_equal(loaded['params']['fc']['kernel'], variables['params']['fc']['kernel'])
  assert json.load(open(tmp_path / 'converted' / weights.METADATA_FILE)) == metadata


# ---------------------------------------------------------------------------
# Class names travel with weights; --checkpoint.


def test_conversion_stores_class_names_and_config(tmp_path, tiny_torch, tiny_model):
  path = tmp_path / 'resnext-tiny-kinetics.pth'
  torch_resnext.save_published_checkpoint(tiny_torch, path, arch='resnext-tiny')
  config = tiny.get_config()
  config.model.num_classes = NUM_CLASSES   # 400: the Kinetics-400 list is shipped.
  kinetics = class_names.shipped(NUM_CLASSES)
  metadata = weights.convert_checkpoint(path, tiny_model, tmp_path / 'kinetics', config=config)
  found = weights.read(tmp_path / 'kinetics')
  assert found.class_names == metadata['class_names'] == kinetics
  assert found.class_names[0] == 'abseiling' and found.metadata['config'] == json.loads(
      json.dumps(config.to_dict()))
  # On the fly from the .pth file: the same names.
  assert weights.read(path, tiny_model).class_names == kinetics
  # A names file (--class_names) wins; a fresh head (--drop_head) takes the data's names.
  names_file = tmp_path / 'names.txt'
  names_file.write_text('\n'.join(f'action {k}' for k in range(NUM_CLASSES)))
  jobs.convert(config, str(tmp_path / 'named'), str(path), class_names_file=str(names_file))
  assert weights.read(tmp_path / 'named' / weights.CONVERTED_DIR).class_names[399] == 'action 399'
  names_file.write_text('walk\nrun\n')
  with pytest.raises(ValueError, match=r'--class_names=.*names.txt has 2 class names but the '
                                       r'model has 400 classes'):
    jobs.convert(config, str(tmp_path / 'bad'), str(path), class_names_file=str(names_file))
  small = tiny.get_config()   # 8 classes: the synthetic data's.
  jobs.convert(small, str(tmp_path / 'fresh'), str(path), drop_head=True)
  fresh = weights.read(tmp_path / 'fresh' / weights.CONVERTED_DIR)
  assert fresh.class_names == list(synthetic_settings.CLASS_NAMES)


def test_training_checkpoints_carry_names_and_checkpoint_names_a_missing_path(tmp_path):
  config = _config()
  names = [name.upper() for name in synthetic_settings.CLASS_NAMES]
  trained = tmp_path / 'trained'
  with checkpoints.TrainCheckpointManager(trained / checkpoints.CHECKPOINTS_DIR) as manager:
    manager.save(5, _random_variables(building.create_model(config), seed=3),
                 loop.checkpoint_metadata(config, 5, names))
  found = weights.for_config(config, str(tmp_path / 'elsewhere'), checkpoint=str(trained))
  assert (found.kind, found.step, found.class_names) == ('training', 5, names)
  assert _same(found.variables, weights.read(trained).variables)
  # Names of another count than the classifier's are not recorded.
  assert loop.checkpoint_metadata(config, 5, names[:3])['class_names'] is None
  with pytest.raises(FileNotFoundError, match=r'--checkpoint=.*nowhere: no such file or '
                                              r'directory; give a training workdir'):
    weights.for_config(config, str(tmp_path), checkpoint=str(tmp_path / 'nowhere'))


def test_weights_of_another_model_are_refused_with_what_they_are(tmp_path):
  five = _random_variables(models.create('tiny', num_classes=5), seed=0)
  weights.save_variables(tmp_path / 'five', five, {'preset': 'tiny', 'num_classes': 5})
  with pytest.raises(ValueError, match=r"(?s)do not fit the model of the config \('tiny', 8 "
                                       r"classes\).*with another shape: params/fc/bias \(5,\) "
                                       r"vs \(8,\).*They are of a 'tiny' model with 5 classes"):
    weights.for_config(_config(), str(tmp_path / 'work'), checkpoint=str(tmp_path / 'five'))
