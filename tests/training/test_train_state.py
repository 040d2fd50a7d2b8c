"""Fine-tuning from a converted checkpoint: the sources agree, frozen stages stay (tiny config)."""
import jax
import numpy as np
import pytest

from configs import tiny
from gla_jax import models
from gla_jax import parallel
from gla_jax import weights
from gla_jax.models import building
from gla_jax.training import checkpoints
from gla_jax.training import train_state
from tests import torch_resnext
from tests.training import runs


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """A published-layout tiny checkpoint with a 5-class head, and its conversion."""
  directory = tmp_path_factory.mktemp('finetune')
  net = torch_resnext.randomize_(torch_resnext.create('tiny', num_classes=5), seed=3)
  torch_resnext.save_published_checkpoint(net, directory / 'kinetics.pth', arch='resnext-tiny')
  weights.convert_checkpoint(directory / 'kinetics.pth', models.create('tiny', num_classes=5),
                             directory / 'converted')
  return directory


def test_fine_tuning_trains_only_the_unfrozen_stages(converted):
  config = tiny.get_config()
  config.train.update(init_checkpoint=str(converted / 'converted'), drop_head=True,
                      freeze_until='layer2', num_steps=2, learning_rate=0.01)
  model = building.create_model(config)
  # On the host: the training step donates (and so deletes) the device state it is given.
  start = jax.device_get(train_state.create_train_state(config, model, jax.random.key(0)))
  loaded, _ = weights.load_variables(converted / 'converted')
  for module in ('stem_conv', 'layer3_0'):
    for (path, a), (_, b) in zip(runs.leaves(loaded['params'][module]),
                                 runs.leaves(start.params[module])):
      np.testing.assert_array_equal(b, a, err_msg=runs.path_name(path))
  assert start.params['fc']['kernel'].shape == (1024, 8)            # the new head

  _, end = runs.run_steps(config, 2, parallel.make_mesh(4), state=start)
  for module in start.params:
    for (path, a), (_, b) in zip(runs.leaves(start.params[module]),
                                 runs.leaves(end.params[module])):
      if module in ('stem_conv', 'stem_bn', 'layer1_0', 'layer2_0'):
        np.testing.assert_array_equal(b, a, err_msg=f'{module}/{runs.path_name(path)} is frozen')
      else:
        assert not np.array_equal(b, a), f'{module}/{runs.path_name(path)} did not train'
  # Hara's choice, kept: frozen stages still update their BatchNorm statistics.
  assert not np.array_equal(start.batch_stats['stem_bn']['mean'],
                            end.batch_stats['stem_bn']['mean'])


def test_init_checkpoint_sources_agree(converted, tmp_path):
  config = tiny.get_config()
  model = building.create_model(config)
  config.train.update(init_checkpoint=str(converted / 'converted'), drop_head=True)
  from_dir = weights.initial_variables(config, model, jax.random.key(1))
  config.train.init_checkpoint = str(converted / 'kinetics.pth')     # converted on the fly
  from_pth = weights.initial_variables(config, model, jax.random.key(1))
  # A training workdir holding the same weights.
  with checkpoints.TrainCheckpointManager(tmp_path / 'checkpoints') as manager:
    manager.save(7, {'params': from_dir['params'], 'batch_stats': from_dir['batch_stats']},
                 {'step': 7})
  config.train.init_checkpoint = str(tmp_path)
  from_workdir = weights.initial_variables(config, model, jax.random.key(1))
  for other in (from_pth, from_workdir):
    for (path, a), (_, b) in zip(runs.leaves(from_dir), runs.leaves(other)):
      if 'fc' not in runs.path_name(path):
        np.testing.assert_array_equal(b, a, err_msg=runs.path_name(path))

  config.train.update(init_checkpoint=str(converted / 'converted'), drop_head=False)
  with pytest.raises(ValueError, match='drop_head=True'):
    weights.initial_variables(config, model, jax.random.key(1))
  config.train.init_checkpoint = str(tmp_path / 'nothing')
  with pytest.raises(FileNotFoundError, match='init_checkpoint'):
    weights.initial_variables(config, model, jax.random.key(1))
