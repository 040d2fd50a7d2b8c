"""Explanation: CAM arithmetic on hand-made arrays, gradients, compilation, sharding."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gla_jax import explain
from gla_jax import models
from gla_jax import parallel

CLIP = (4, 8, 32, 32, 3)


@functools.lru_cache(maxsize=None)
def _tiny(num_classes=5, dtype=jnp.float32):
  model = models.ResNeXt3DTiny(num_classes=num_classes, dtype=dtype)
  variables = models.init_variables(model, jax.random.key(0), CLIP)
  # Random BatchNorm statistics, so eval mode is not an identity normalisation.
  keys = iter(jax.random.split(jax.random.key(1), 1000))
  stats = jax.tree.map(
      lambda s: s + 0.1 * jax.random.uniform(next(keys), s.shape), variables['batch_stats'])
  return model, {'params': variables['params'], 'batch_stats': stats}


def _clip(seed=2, shape=CLIP):
  return jax.random.normal(jax.random.key(seed), shape)


# --- hand-made arrays ---------------------------------------------------------

def test_gradcam_hot_voxel_gives_that_voxel():
  act = np.zeros((1, 2, 3, 4, 5), np.float32)
  act[0, 1, 2, 3, 0] = 2.0
  grad = np.ones_like(act)        # Every channel weight is 1.
  cam = np.asarray(explain.layer_map(act, grad, 'gradcam'))
  expected = np.zeros((1, 2, 3, 4), np.float32)
  expected[0, 1, 2, 3] = 2.0
  np.testing.assert_allclose(cam, expected)
  # Negative evidence is removed by the ReLU.
  assert np.all(np.asarray(explain.layer_map(act, -grad, 'gradcam')) == 0)


def test_gradcam_weights_are_gradient_means():
  rng = np.random.default_rng(0)
  act = rng.random((2, 2, 3, 3, 4)).astype(np.float32)
  grad = rng.normal(size=act.shape).astype(np.float32)
  weights = grad.mean(axis=(1, 2, 3))                               # [B, C]
  expected = np.maximum(np.einsum('bthwc,bc->bthw', act, weights), 0)
  np.testing.assert_allclose(explain.layer_map(act, grad, 'gradcam'), expected, rtol=1e-5)
  weights_t = grad.mean(axis=(2, 3))                                # [B, t, C]
  expected_t = np.maximum(np.einsum('bthwc,btc->bthw', act, weights_t), 0)
  np.testing.assert_allclose(explain.layer_map(act, grad, 'gradcam', pooling='time'),
                             expected_t, rtol=1e-5)


def test_positionwise_methods_and_gradcam_pp():
  rng = np.random.default_rng(1)
  act = rng.random((1, 2, 2, 2, 3)).astype(np.float32)
  grad = rng.normal(size=act.shape).astype(np.float32)
  np.testing.assert_allclose(explain.layer_map(act, grad, 'layercam'),
                             np.maximum(grad, 0).__mul__(act).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(explain.layer_map(act, grad, 'elementwise'),
                             np.maximum((grad * act).sum(-1), 0), rtol=1e-5)
  # Grad-CAM++ written out per channel with loops (Chattopadhay et al., eq. 19).
  expected = np.zeros((1, 2, 2, 2), np.float32)
  weights = []
  for c in range(3):
    g, a = grad[0, ..., c], act[0, ..., c]
    alpha = np.where(g != 0, g**2 / (2 * g**2 + a.sum() * g**3 + 1e-7), 0)
    weights.append(np.sum(alpha * np.maximum(g, 0)))
  expected[0] = np.maximum(sum(w * act[0, ..., c] for c, w in enumerate(weights)), 0)
  np.testing.assert_allclose(explain.layer_map(act, grad, 'gradcam_pp'), expected, rtol=1e-4)


def test_upsample_known_values_and_torch_rule():
  maps = np.array([0.0, 1.0], np.float32).reshape(1, 1, 1, 2)
  out = np.asarray(explain.upsample(maps, (1, 1, 4)))
  np.testing.assert_allclose(out.ravel(), [0.0, 0.25, 0.75, 1.0])
  const = np.full((1, 1, 4, 4), 3.0, np.float32)
  np.testing.assert_allclose(explain.upsample(const, (16, 32, 32)), 3.0, rtol=1e-6)
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(2)
  for shape, size in [((2, 2, 7, 7), (16, 112, 112)), ((1, 1, 4, 4), (16, 112, 112)),
                      ((1, 8, 28, 28), (16, 112, 112)), ((1, 5, 9, 6), (7, 4, 13))]:
    m = rng.random(shape).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(m)[:, None], size=size,
                                          mode='trilinear', align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(explain.upsample(m, size), ref, atol=1e-5)


def test_normalize_and_aggregate():
  maps = np.array([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0]], np.float32).reshape(2, 1, 1, 3)
  np.testing.assert_allclose(explain.minmax(maps).reshape(2, 3), [[0, 0.5, 1], [0, 0, 0]])
  a = np.array([0.0, 0.5, 1.0], np.float32).reshape(1, 1, 1, 3)
  b = np.array([1.0, 0.5, 0.0], np.float32).reshape(1, 1, 1, 3)
  stack = np.stack([a, 0.5 * a + 0.5 * (a > 0.7)])
  np.testing.assert_allclose(explain.aggregate_maps(np.stack([a, b]), 'max').ravel(), [1, 0, 1])
  np.testing.assert_allclose(explain.aggregate_maps(np.stack([a, b]), 'product').ravel(),
                             [0, 1, 0])
  mean = explain.aggregate_maps(stack, 'mean').ravel()
  np.testing.assert_allclose(mean, [0, 0.375, 1.0])   # mean of [0, .5, 1] and [0, .25, 1].
  weighted = explain.aggregate_maps(np.stack([a, b]), 'mean', weights=[3.0, 1.0]).ravel()
  np.testing.assert_allclose(weighted, [0, 0.5, 1.0])   # 0.25, 0.5, 0.75 min-maxed.
  tanh = explain.normalize(np.array([0.0, 0.1, 1.0], np.float32).reshape(1, 1, 1, 3), 'tanh')
  np.testing.assert_allclose(tanh.ravel(), [0, np.tanh(0.2) / np.tanh(2.0), 1], rtol=1e-6)


def test_bad_options_name_the_choices():
  model, variables = _tiny()
  with pytest.raises(ValueError, match='gradcam_pp'):
    explain.explain(model, variables, _clip(), method='gradcamm')
  with pytest.raises(ValueError, match='layer9'):
    explain.explain(model, variables, _clip(), layers=['layer9'])
  with pytest.raises(ValueError, match=r'\[B, T, H, W, 3\]'):
    explain.explain(model, variables, _clip()[0])


# --- the network ---------------------------------------------------------------

def test_tap_gradients_match_finite_differences():
  # float64 so that central differences are exact enough to test the gradient.
  with jax.enable_x64(True):
    model, variables = _tiny()
    model = model.clone(dtype=jnp.float64)
    variables = jax.tree.map(lambda x: x.astype(jnp.float64), variables)
    video = _clip(shape=(2, 8, 32, 32, 3)).astype(jnp.float64)
    logits, target, acts, grads = jax.jit(
        functools.partial(explain.tap_gradients, model))(variables, video)
    zeros = jax.tree.map(jnp.zeros_like, grads)

    @jax.jit
    def score(variables, video, perturbations):
      out = model.apply({**variables, 'perturbations': perturbations}, video)
      return jnp.sum(jnp.take_along_axis(out, target[:, None], axis=-1))

    eps = 1e-6
    for name in ('conv1', 'layer1', 'layer3.0'):
      direction = jax.random.normal(jax.random.key(3), grads[name].shape, jnp.float64)
      # Only move positive activations: the max pool after conv1 (and ReLU
      # outputs anywhere) tie at zero, where the function has no derivative.
      direction = jnp.where(acts[name] > 0, direction, 0.0)
      numeric = (score(variables, video, {**zeros, name: eps * direction}) -
                 score(variables, video, {**zeros, name: -eps * direction})) / (2 * eps)
      analytic = jnp.vdot(grads[name], direction)
      np.testing.assert_allclose(analytic, numeric, rtol=1e-4, err_msg=name)
    assert acts['layer2'].shape == grads['layer2'].shape == (2, 2, 4, 4, 256)


def test_explanation_shapes_range_and_target():
  model, variables = _tiny()
  video = _clip()
  result = explain.explain(model, variables, video)
  assert result.attention.shape == video.shape[:4]
  assert result.layer_names == ('layer4', 'layer3', 'layer2', 'layer1', 'conv1')
  for m in [result.attention, *result.layer_maps.values()]:
    assert m.dtype == jnp.float32 and float(m.min()) >= 0 and float(m.max()) <= 1
  np.testing.assert_array_equal(result.target,
                                jnp.argmax(jax.jit(model.apply)(variables, video), -1))
  forced = explain.explain(model, variables, video, target=[1, 2, 3, 4])
  np.testing.assert_array_equal(forced.target, [1, 2, 3, 4])
  assert not np.allclose(forced.layer_maps['layer3'], result.layer_maps['layer3'])
  blocks = explain.explain(model, variables, video, layers='blocks', aggregate='max',
                           method='layercam')
  assert blocks.layer_names == ('layer4.0', 'layer3.0', 'layer2.0', 'layer1.0', 'conv1')


def test_compiles_once_for_repeated_calls():
  model, variables = _tiny()
  fn = explain.make_explainer(model, 'gradcam', 'stages', 'mean')
  before = fn._cache_size()
  for seed in range(3):
    jax.block_until_ready(explain.explain(model, variables, _clip(seed)))
  assert fn._cache_size() - before <= 1
  assert explain.make_explainer(model, 'gradcam', 'stages', 'mean') is fn


def test_sharded_over_four_devices_equals_one_device():
  assert jax.device_count() >= 4, 'tests/conftest.py sets 4 CPU devices'
  model, variables = _tiny()
  video = _clip()
  single = explain.explain(model, variables, video)
  mesh = parallel.make_mesh(4)
  sharded_video = parallel.shard_batch(video, mesh)
  sharded = explain.explain(model, parallel.replicate(variables, mesh), sharded_video)
  assert len(sharded.attention.sharding.device_set) == 4
  np.testing.assert_allclose(sharded.attention, single.attention, atol=1e-5)
  for name in single.layer_names:
    np.testing.assert_allclose(sharded.layer_maps[name], single.layer_maps[name], atol=1e-5)


def test_bfloat16_model_explains_in_float32():
  model, variables = _tiny(dtype=jnp.bfloat16)
  result = explain.explain(model, variables, _clip())
  assert result.attention.dtype == jnp.float32
  assert bool(jnp.all(result.has_signal))
  ref_model, _ = _tiny()
  ref = explain.explain(ref_model, variables, _clip())
  corr = np.corrcoef(np.ravel(result.layer_maps['layer2']), np.ravel(ref.layer_maps['layer2']))
  assert corr[0, 1] > 0.9


def test_taps_cost_nothing_in_training():
  model, variables = _tiny()
  video = _clip()
  def apply(**options):   # Compiled: one program instead of hundreds of eager ops.
    return jax.jit(functools.partial(model.apply, **options))
  plain = apply()(variables, video)
  _, state = apply(mutable=['perturbations'])(variables, video)
  perturbed = apply()({**variables, 'perturbations': state['perturbations']}, video)
  np.testing.assert_array_equal(plain, perturbed)
  _, updates = apply(train=True, mutable=['batch_stats'])(variables, video)
  assert set(updates) == {'batch_stats'}
  assert set(models.init_variables(model, jax.random.key(0), CLIP)) == {'params', 'batch_stats'}
  # No tap survives into the compiled training forward pass: its HLO is the same
  # as that of a model whose taps are disabled.
  text = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, video).as_text()
  assert 'perturbations' not in text


def test_zero_gradients_are_reported_as_no_signal():
  model, variables = _tiny()
  params = jax.tree.map(jnp.zeros_like, variables['params'])     # Logits ignore the input.
  result = explain.explain(model, {**variables, 'params': params}, _clip())
  assert not bool(jnp.any(result.has_signal))
  assert float(jnp.max(result.attention)) == 0.0
