"""The Flax ResNeXt computes what Hara's PyTorch ResNeXt computes, from its checkpoint.

The reference is the independent PyTorch model in `tests/torch_resnext.py`,
with random weights and random BatchNorm statistics, saved in the layout of
the published files and read back through `gla_jax.convert`.
"""
import functools

import jax
import numpy as np
import pytest
import torch

from gla_jax import models
from gla_jax.models import convert
from tests import torch_resnext

CLIP_SHAPE = (2, 16, 32, 32, 3)   # [B, T, H, W, C]: every stage keeps >= 1 voxel.
NUM_CLASSES = 10


def to_ncdhw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))


def to_ndhwc(x: torch.Tensor) -> np.ndarray:
  return x.detach().numpy().transpose(0, 2, 3, 4, 1)


def relative_error(actual, expected) -> float:
  """max |actual - expected| / max |expected|."""
  expected = np.asarray(expected, np.float64)
  return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


# Hara's network, and the demo's (configs/demo.py): small stem, no max pool, no time strides.
VARIANTS = {'hara': {}, 'demo': dict(stem_kernel=(3, 3, 3), max_pool=False,
                                  temporal_strides=(1, 1, 1, 1))}


@pytest.fixture(scope='module', params=sorted(VARIANTS))
def tiny_outputs(request, tmp_path_factory):
  """Logits and taps of both models on one clip, the Flax one loaded from a .pth file."""
  variant = VARIANTS[request.param]
  torch_model = torch_resnext.randomize_(
      torch_resnext.create('tiny', num_classes=NUM_CLASSES, **variant), seed=1)
  path = tmp_path_factory.mktemp('parity') / 'resnext-tiny.pth'
  torch_resnext.save_published_checkpoint(torch_model, path, num_batches_tracked=False)
  model = models.create('tiny', num_classes=NUM_CLASSES, **variant)
  variables = convert.torch_to_flax(convert.load_torch_checkpoint(path), model)

  clip = np.random.default_rng(0).normal(size=CLIP_SHAPE).astype(np.float32)
  with torch.no_grad():
    torch_logits, torch_taps = torch_model(to_ncdhw(clip), return_taps=True)
  flax_logits, state = jax.jit(
      lambda v, x: model.apply(v, x, mutable=['intermediates']))(variables, clip)
  return dict(model=model, torch_logits=torch_logits.numpy(), torch_taps=torch_taps,
              flax_logits=np.asarray(flax_logits), flax_taps=state['intermediates'])


def test_logits_match_pytorch(tiny_outputs):
  flax_logits, torch_logits = tiny_outputs['flax_logits'], tiny_outputs['torch_logits']
  assert flax_logits.shape == torch_logits.shape == (CLIP_SHAPE[0], NUM_CLASSES)
  assert np.abs(torch_logits).max() > 0.1    # Not a trivially small comparison.
  assert relative_error(flax_logits, torch_logits) < 1e-4


def test_every_tap_matches_pytorch(tiny_outputs):
  model, torch_taps = tiny_outputs['model'], tiny_outputs['torch_taps']
  assert set(torch_taps) == set(models.tap_names(model))
  for name in models.tap_names(model):
    flax_tap = np.asarray(tiny_outputs['flax_taps'][name][0])
    torch_tap = to_ndhwc(torch_taps[name])
    assert flax_tap.shape == torch_tap.shape, name
    assert relative_error(flax_tap, torch_tap) < 1e-4, name


def random_block_variables(variables, seed):
  """Random float32 arrays in the tree (and shapes) of `variables`; BN scales near 1, variances positive."""
  rng = np.random.default_rng(seed)
  flat = jax.tree_util.tree_flatten_with_path(variables)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'var':
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    if name == 'scale':
      return rng.normal(1.0, 0.2, leaf.shape).astype(np.float32)
    if name == 'kernel':   # He-scaled over the fan-in of a DHWIO kernel.
      return rng.normal(0.0, (2.0 / np.prod(leaf.shape[:-1])) ** 0.5,
                        leaf.shape).astype(np.float32)
    return rng.normal(0.0, 0.2, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_unflatten(flat[1], [draw(p, leaf) for p, leaf in flat[0]])


@pytest.mark.parametrize('train', [False, True])
def test_strided_grouped_block_matches_pytorch(train):
  """Stride 2, groups and odd sizes: catches 'SAME'-style asymmetric padding."""
  in_channels, planes, cardinality = 32, 64, 4
  clip = np.random.default_rng(2).normal(size=(2, 7, 9, 11, in_channels)).astype(np.float32)
  block = models.Bottleneck(planes, cardinality, strides=(2, 2, 2), downsample=True)
  # Every value is drawn below, so only the tree is needed (an eager init takes seconds).
  variables = random_block_variables(
      jax.eval_shape(functools.partial(block.init, train=False), jax.random.key(0), clip),
      seed=3)

  torch_block = torch_resnext.ResNeXtBottleneck(
      in_channels, planes, cardinality, stride=2, downsample=torch.nn.Sequential(
          torch.nn.Conv3d(in_channels, planes * 2, kernel_size=1, stride=2, bias=False),
          torch.nn.BatchNorm3d(planes * 2)))
  torch_block.load_state_dict(
      {k: torch.from_numpy(v) for k, v in convert.flax_to_torch(variables).items()},
      strict=False)
  # strict=False only for the counters that `flax_to_torch` does not write.
  state_keys = {k for k in torch_block.state_dict() if not k.endswith('num_batches_tracked')}
  assert state_keys == set(convert.flax_to_torch(variables))
  torch_block.train(train)

  with torch.no_grad():
    expected = to_ndhwc(torch_block(to_ncdhw(clip)))
  actual, state = jax.jit(functools.partial(block.apply, train=train, mutable=['batch_stats']))(
      variables, clip)
  assert actual.shape == expected.shape == (2, 4, 5, 6, 2 * planes)
  assert relative_error(actual, expected) < 1e-4
  if train:
    # PyTorch momentum 0.1 == Flax momentum 0.9 for the running mean. (The
    # running variance differs by design: PyTorch tracks the unbiased batch
    # variance, Flax the biased one.)
    for flax_name, torch_name in [('bn1', 'bn1'), ('downsample_bn', 'downsample.1')]:
      np.testing.assert_allclose(
          state['batch_stats'][flax_name]['mean'],
          torch_block.get_submodule(torch_name).running_mean.numpy(), rtol=1e-4, atol=1e-6)


def meta_state_shapes(name: str, num_classes: int):
  """{key: shape} and parameter count of the PyTorch model, without allocating weights."""
  with torch.device('meta'):
    torch_model = torch_resnext.create(name, num_classes=num_classes)
  shapes = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
  return shapes, sum(p.numel() for p in torch_model.parameters())


@pytest.mark.parametrize('name', ['resnext50', 'resnext101', 'resnext152'])
def test_published_architectures_convert(name):
  """The real key set and shapes of each published depth convert to the Flax tree."""
  shapes, torch_count = meta_state_shapes(name, 400)
  model = models.create(name, num_classes=400)
  # Zero-strided views: a ResNeXt-152 state dict without its 260 MB.
  state = {'module.' + k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
  variables = convert.torch_to_flax(state, model)
  abstract = convert.abstract_variables(model)
  assert jax.tree.structure(variables) == jax.tree.structure(abstract)
  assert jax.tree.leaves(jax.tree.map(np.shape, variables)) == \
      jax.tree.leaves(jax.tree.map(lambda s: s.shape, abstract))
  assert sum(np.size(p) for p in jax.tree.leaves(variables['params'])) == torch_count


# 400 classes of the published depths are counted in the test above.
@pytest.mark.parametrize('name, num_classes', [
    ('resnext50', 101), ('resnext101', 101), ('resnext152', 101), ('tiny', 400), ('tiny', 101)])
def test_parameter_counts_match_pytorch(name, num_classes):
  shapes, torch_count = meta_state_shapes(name, num_classes)
  model = models.create(name, num_classes=num_classes)
  abstract = convert.abstract_variables(model)
  assert sum(np.prod(s.shape) for s in jax.tree.leaves(abstract['params'])) == torch_count
  # Key by key, shape by shape (the counters are PyTorch-only).
  assert convert.expected_torch_shapes(model, abstract) == \
      {k: s for k, s in shapes.items() if not k.endswith('num_batches_tracked')}


def test_resnext101_parameter_count_as_published():
  """docs/design.md (the backbone): about 47.7 M parameters (ResNeXt-101, UCF101 head)."""
  _, count = meta_state_shapes('resnext101', 101)
  assert abs(count - 47.7e6) < 0.05e6
