"""Reading Hara's PyTorch checkpoints, converting them, and saving the result."""
import argparse
import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
import torch

from gla_jax import models
from gla_jax.models import convert
from tests import torch_resnext

NUM_CLASSES = 400


@pytest.fixture(scope='module')
def tiny_torch():
  return torch_resnext.randomize_(torch_resnext.create('tiny', num_classes=NUM_CLASSES), seed=0)


@pytest.fixture(scope='module')
def tiny_state(tiny_torch):
  """The reference state dict as numpy, without prefix and counters."""
  return {k: v.numpy() for k, v in tiny_torch.state_dict().items()
          if not k.endswith('num_batches_tracked')}


@pytest.fixture(scope='module')
def tiny_model():
  return models.create('tiny', num_classes=NUM_CLASSES)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def meta_state(name='tiny', **kwargs):
  """Zero-strided arrays with the keys and shapes of a PyTorch model: no weights allocated."""
  with torch.device('meta'):
    torch_model = torch_resnext.create(name, **kwargs)
  return {k: np.broadcast_to(np.float32(0), v.shape)
          for k, v in torch_model.state_dict().items()}


def mismatch_message(state, model, **kwargs) -> str:
  with pytest.raises(convert.CheckpointMismatchError) as info:
    convert.torch_to_flax(state, model, **kwargs)
  assert isinstance(info.value, ValueError)
  return str(info.value)


# ---------------------------------------------------------------------------
# load_torch_checkpoint


@pytest.mark.parametrize('num_batches_tracked', [True, False])
def test_load_published_layout(tmp_path, tiny_torch, tiny_state, num_batches_tracked):
  path = tmp_path / 'resnext.pth'
  torch_resnext.save_published_checkpoint(tiny_torch, path,
                                          num_batches_tracked=num_batches_tracked)
  state = convert.load_torch_checkpoint(path)
  counters = {k for k in state if k.endswith('num_batches_tracked')}
  assert bool(counters) == num_batches_tracked
  assert not any(k.startswith('module.') for k in state)
  assert set(state) - counters == set(tiny_state)
  for key, value in tiny_state.items():
    assert state[key].dtype == np.float32
    np.testing.assert_array_equal(state[key], value)


@pytest.mark.parametrize('prefix', ['', 'module.'])
def test_load_bare_state_dict(tmp_path, tiny_torch, tiny_state, prefix):
  path = tmp_path / 'bare.pth'
  bare = {prefix + k: v for k, v in tiny_torch.state_dict().items()}
  bare['epoch'] = 7     # Not a tensor: dropped.
  torch.save(bare, path)
  state = convert.load_torch_checkpoint(path)
  assert set(state) == set(tiny_torch.state_dict())
  np.testing.assert_array_equal(state['layer2.0.conv2.weight'],
                                tiny_state['layer2.0.conv2.weight'])


def test_load_half_precision_becomes_float32(tmp_path, tiny_torch):
  path = tmp_path / 'half.pth'
  torch.save({k: v.half() if v.is_floating_point() else v
              for k, v in tiny_torch.state_dict().items()}, path)
  assert convert.load_torch_checkpoint(path)['fc.weight'].dtype == np.float32


def test_load_falls_back_for_pickled_objects(tmp_path, tiny_torch, tiny_state):
  """Training scripts often save their argparse options, which weights_only refuses."""
  path = tmp_path / 'with_args.pth'
  torch.save({'state_dict': tiny_torch.state_dict(), 'opt': argparse.Namespace(lr=0.1)}, path)
  with pytest.warns(UserWarning, match='weights_only=False'):
    state = convert.load_torch_checkpoint(path)
  np.testing.assert_array_equal(state['conv1.weight'], tiny_state['conv1.weight'])


def test_load_missing_and_corrupt_files(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    convert.load_torch_checkpoint(tmp_path / 'nope.pth')
  garbage = tmp_path / 'garbage.pth'
  garbage.write_bytes(b'not a checkpoint at all')
  with warnings.catch_warnings():
    warnings.simplefilter('error')   # No "unsafe fallback" warning for a broken file.
    with pytest.raises(ValueError, match='Could not read'):
      convert.load_torch_checkpoint(garbage)
  not_a_dict = tmp_path / 'tensor.pth'
  torch.save(torch.zeros(3), not_a_dict)
  with pytest.raises(ValueError, match='not a state dict'):
    convert.load_torch_checkpoint(not_a_dict)
  no_tensors = tmp_path / 'empty.pth'
  torch.save({'epoch': 1, 'arch': 'resnext-101'}, no_tensors)
  with pytest.raises(ValueError, match='contains no tensors'):
    convert.load_torch_checkpoint(no_tensors)


def test_package_imports_without_torch(tmp_path):
  """`import torch` happens only inside `load_torch_checkpoint`."""
  code = '\n'.join([
      'import sys',
      "sys.modules['torch'] = None   # Makes `import torch` raise ImportError.",
      'import gla_jax.models.convert, gla_jax.models, gla_jax.training.checkpoints',
      'try:',
      f'  gla_jax.models.convert.load_torch_checkpoint({str(tmp_path / "x.pth")!r})',
      'except ImportError as e:',
      "  assert 'pip install torch' in str(e), e",
      "  print('ok')",
  ])
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), env=env,
                          timeout=120, check=False)
  assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr


# ---------------------------------------------------------------------------
# torch_to_flax / flax_to_torch


def test_names_and_layouts(tiny_state, tiny_model):
  variables = convert.torch_to_flax(tiny_state, tiny_model)
  params, stats = variables['params'], variables['batch_stats']
  np.testing.assert_array_equal(params['stem_conv']['kernel'],
                                tiny_state['conv1.weight'].transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(params['layer2_0']['conv2']['kernel'],
                                tiny_state['layer2.0.conv2.weight'].transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(params['layer3_0']['downsample_conv']['kernel'],
                                tiny_state['layer3.0.downsample.0.weight'].transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(params['layer3_0']['downsample_bn']['scale'],
                                tiny_state['layer3.0.downsample.1.weight'])
  np.testing.assert_array_equal(stats['layer4_0']['bn3']['var'],
                                tiny_state['layer4.0.bn3.running_var'])
  np.testing.assert_array_equal(stats['stem_bn']['mean'], tiny_state['bn1.running_mean'])
  np.testing.assert_array_equal(params['fc']['kernel'], tiny_state['fc.weight'].T)
  np.testing.assert_array_equal(params['fc']['bias'], tiny_state['fc.bias'])
  # The exact tree of a real init.
  abstract = convert.abstract_variables(tiny_model)
  assert jax.tree.structure(variables) == jax.tree.structure(abstract)
  assert all(np.shape(v) == a.shape and v.dtype == np.float32 for v, a in
             zip(jax.tree.leaves(variables), jax.tree.leaves(abstract)))


def test_prefix_and_counters_do_not_matter(tiny_torch, tiny_state, tiny_model):
  published = {k: v.numpy() for k, v in
               torch_resnext.published_state_dict(tiny_torch, num_batches_tracked=True).items()}
  assert_trees_equal(convert.torch_to_flax(published, tiny_model),
                     convert.torch_to_flax(tiny_state, tiny_model))


def test_flax_to_torch_inverts_torch_to_flax(tiny_state, tiny_model):
  back = convert.flax_to_torch(convert.torch_to_flax(tiny_state, tiny_model))
  assert set(back) == set(tiny_state)
  for key, value in tiny_state.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_variables_do_not_alias_the_state(tiny_state, tiny_model):
  state = {k: v.copy() for k, v in tiny_state.items()}
  variables = convert.torch_to_flax(state, tiny_model)
  state['bn1.weight'][:] = 123.0
  assert not np.any(variables['params']['stem_bn']['scale'] == 123.0)


def test_drop_head_fine_tunes_to_fewer_classes(tiny_state, tiny_model):
  model10 = models.create('tiny', num_classes=10)
  variables = convert.torch_to_flax(tiny_state, model10, drop_head=True, rng=1)
  assert variables['params']['fc']['kernel'].shape == (1024, 10)
  assert variables['params']['fc']['bias'].shape == (10,)
  assert np.std(variables['params']['fc']['kernel']) > 0   # A real init, not zeros.
  # The backbone is the checkpoint's.
  full = convert.torch_to_flax(tiny_state, tiny_model)
  for collection in ('params', 'batch_stats'):
    backbone = {k: v for k, v in full[collection].items() if k != 'fc'}
    assert_trees_equal({k: v for k, v in variables[collection].items() if k != 'fc'}, backbone)
  # The seed picks the head.
  other = convert.torch_to_flax(tiny_state, model10, drop_head=True, rng=jax.random.key(2))
  assert not np.array_equal(other['params']['fc']['kernel'], variables['params']['fc']['kernel'])
  # And the result runs.
  logits = jax.jit(model10.apply)(variables, np.zeros((1, 4, 16, 16, 3), np.float32))
  assert logits.shape == (1, 10) and np.all(np.isfinite(logits))


# ---------------------------------------------------------------------------
# Mismatch messages: the keys, and what they suggest.


def test_wrong_depth_names_the_checkpoint_depth():
  message = mismatch_message(meta_state('resnext101'), models.create('resnext50'))
  assert '255 unexpected keys' in message
  assert 'layer3.6.bn1.bias' in message and '... and 245 more' in message  # Truncated.
  assert '(3, 4, 23, 3) (resnext101)' in message and "models.create('resnext101'" in message


def test_missing_blocks_name_missing_keys():
  message = mismatch_message(meta_state(stage_sizes=(1, 1, 1, 1)),
                             models.create('tiny', stage_sizes=(1, 2, 1, 1)))
  assert '15 missing keys' in message and 'layer2.1.bn1.bias' in message
  assert 'Wrong depth' in message and '(1, 1, 1, 1)' in message


def test_wrong_number_of_classes_suggests_drop_head():
  message = mismatch_message(meta_state(num_classes=400), models.create('tiny', num_classes=10))
  assert 'fc.weight: expected (10, 1024), found (400, 1024)' in message
  assert 'fc.bias: expected (10,), found (400,)' in message
  assert 'Only the head differs' in message and 'drop_head=True' in message
  assert 'missing' not in message and 'unexpected' not in message


def test_shortcut_type_a_is_named():
  message = mismatch_message(meta_state(shortcut_type='A'), models.create('tiny'))
  assert 'layer1.0.downsample.0.weight' in message
  assert 'shortcut type A' in message and 'not supported' in message


def test_wrong_cardinality_is_named():
  message = mismatch_message(meta_state(cardinality=8), models.create('tiny'))
  assert 'layer1.0.conv2.weight: expected (8, 2, 3, 3, 3), found (16, 2, 3, 3, 3)' in message
  assert 'Different cardinality' in message and 'cardinality=8' in message


@pytest.mark.parametrize('prefix', ['features.', 'backbone.'])
def test_foreign_prefix_is_not_hara(prefix):
  state = {prefix + k: v for k, v in meta_state().items()}
  message = mismatch_message(state, models.create('tiny'))
  assert 'not a Hara 3D ResNeXt checkpoint' in message and f"'{prefix}'" in message
  assert f'{prefix}conv1.weight' in message
  assert 'strip that prefix' in message
  assert 'shortcut type A' not in message    # Missing downsample keys here mean nothing.


def test_check_state_shapes_accepts_a_match():
  shapes = {k: v.shape for k, v in meta_state('resnext50').items()}
  convert.check_state_shapes(shapes, models.create('resnext50'))
