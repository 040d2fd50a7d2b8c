"""Tests of gla_jax.explain.sanity against scipy, skimage and hand-listed module trees."""
import jax
import numpy as np
import pytest
from scipy import stats
from skimage import metrics

from gla_jax import models
from gla_jax.explain import sanity
from gla_jax.models import convert
from tests.training import runs


def _variables(model, seed=0):
  """`model`'s initialisation with batch statistics moved off their initial 0 and 1."""
  variables = models.init_variables(model, jax.random.key(seed))
  moved = jax.tree.map(lambda x: x + 0.5, variables['batch_stats'])
  return {'params': variables['params'], 'batch_stats': moved}


def test_cascade_goes_from_the_classifier_to_the_stem_with_gates_in_their_stage():
  # The tree's names alone matter: abstract variables, nothing compiled.
  plain = convert.abstract_variables(models.ResNeXt3DTiny(num_classes=3))
  assert sanity.cascade_stages(plain['params']) == (
      ('classifier', ('fc',)), ('layer4', ('layer4_0',)), ('layer3', ('layer3_0',)),
      ('layer2', ('layer2_0',)), ('layer1', ('layer1_0',)), ('stem', ('stem_bn', 'stem_conv')))
  gated = models.ResNeXt3DTiny(num_classes=3, gated=True, gate_head='average',
                               gate_stages=('layer2', 'layer4'))
  stages = dict(sanity.cascade_stages(convert.abstract_variables(gated)))
  assert list(stages) == ['classifier', 'layer4', 'layer3', 'layer2', 'layer1', 'stem']
  assert stages['classifier'] == ('fc', 'gated_fc_layer2', 'gated_fc_layer4')
  assert stages['layer4'] == ('gate_layer4', 'layer4_0') and stages['layer3'] == ('layer3_0',)
  with pytest.raises(ValueError, match="'head'.*ResNeXt3D"):
    sanity.cascade_stages({'head': {}, 'fc': {}})


def test_randomize_replaces_exactly_the_named_stages():
  model = models.ResNeXt3DTiny(num_classes=3, gated=True)
  variables = _variables(model)
  fresh = models.init_variables(model, jax.random.key(7))
  randomized = sanity.randomize(variables, ['classifier', 'layer4'], jax.random.key(7), model)
  changed = {'gated_fc', 'gate_layer4', 'layer4_0'}
  for collection in ('params', 'batch_stats'):
    assert set(randomized[collection]) == set(variables[collection])
    for module, tree in randomized[collection].items():
      expected = fresh[collection][module] if module in changed else variables[collection][module]
      for (path, a), (_, b) in zip(runs.leaves(tree), runs.leaves(expected)):
        np.testing.assert_array_equal(a, b, err_msg=f'{collection}/{module}/{runs.path_name(path)}')
      if module in changed:    # A fresh initialisation, unlike the original.
        assert any(not np.array_equal(a, b) for (_, a), (_, b) in
                   zip(runs.leaves(tree), runs.leaves(variables[collection][module])))
  assert 'layer4_0' in randomized['batch_stats'] and 'gated_fc' not in randomized['batch_stats']
  with pytest.raises(ValueError, match=r"\['layer9'\].*'classifier'"):
    sanity.randomize(variables, ['layer9'], jax.random.key(7), model)


def test_spearman_matches_scipy_with_ties_and_absolute_values():
  rng = np.random.default_rng(0)
  a = rng.integers(-3, 4, (6, 2, 5, 5)).astype(np.float32)     # Many ties, signs.
  b = a + rng.integers(-2, 3, a.shape)
  b[0] = rng.random((2, 5, 5))                                # One row without ties.
  for absolute in (False, True):
    got = sanity.spearman(a, b, absolute=absolute)
    for row in range(len(a)):
      x, y = a[row].ravel(), b[row].ravel()
      if absolute:
        x, y = np.abs(x), np.abs(y)
      assert got[row] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
  np.testing.assert_array_equal(sanity.average_ranks(a.reshape(6, -1)),
                                stats.rankdata(a.reshape(6, -1), axis=1))
  assert not np.allclose(sanity.spearman(a, b), sanity.spearman(a, b, absolute=True))
  constant = sanity.spearman(np.ones((2, 9)), rng.random((2, 9)))
  assert np.isnan(constant).all()
  with pytest.raises(ValueError, match='same shape'):
    sanity.spearman(a, b[:, :1])


def test_ssim_matches_skimage_per_frame():
  rng = np.random.default_rng(1)
  a = rng.random((3, 4, 12, 15))
  b = np.clip(0.7 * a + 0.4 * rng.random(a.shape), 0, 1)
  b[0, 0] = a[0, 0]
  expected = np.array([[metrics.structural_similarity(a[n, t], b[n, t], data_range=1.0)
                        for t in range(4)] for n in range(3)])
  np.testing.assert_allclose(sanity.frame_ssim(a, b), expected, atol=1e-5)
  np.testing.assert_allclose(sanity.ssim(a, b), expected.mean(axis=1), atol=1e-5)
  assert sanity.frame_ssim(a, b)[0, 0] == pytest.approx(1.0)
  rounded = a.copy()                                    # float32 rounding above 1 is clipped.
  rounded[0, 0, 0, 0] = 1 + 1e-7
  exact = rounded.copy()
  exact[0, 0, 0, 0] = 1
  np.testing.assert_array_equal(sanity.frame_ssim(rounded, b), sanity.frame_ssim(exact, b))
  for bad, message in ((a * 2, r'in \[0, 1\]'), (a[..., :6], 'smaller than the 7 x 7'),
                       (a[:, 0], r'\[N, T, H, W\]')):
    with pytest.raises(ValueError, match=message):
      sanity.ssim(bad, bad)
