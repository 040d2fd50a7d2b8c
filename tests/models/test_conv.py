"""The fast CPU convolution (`conv.conv3d(impl='fast')`) computes what XLA computes.

Forward output, input gradient and kernel gradient (one `jax.vjp`) of the fast
path against `lax.conv_general_dilated` and XLA's own gradients, over cases
that reach every branch of the fast path: 1x1x1 (stride 1 and 2), the stem
(7x7x7, stride (1, 2, 2), 3 input channels; its input gradient through both
the patch and the dense sub-kernel branch), grouped 3x3x3 with 1, 2, 4
(multiply-add loop) and 8 (batched matrix products) channels per group,
dense 3x3x3 (patches and XLA's dense convolution), odd asymmetric shapes and
paddings, and kernels smaller than their stride (phases without taps). Then
bfloat16 inputs, the whole tiny model, and the argument errors.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gla_jax import models
from gla_jax.models import conv

# name: (x shape [B, T, H, W, Cin], kernel [kT, kH, kW, Cin/g, Cout], strides, padding, groups).
CASES = {
    'pointwise': ((2, 4, 5, 6, 8), (1, 1, 1, 8, 12), (1, 1, 1), ((0, 0),) * 3, 1),
    'pointwise_stride2': ((2, 5, 6, 7, 8), (1, 1, 1, 8, 12), (2, 2, 2), ((0, 0),) * 3, 1),
    # Input gradient: phase sub-kernels of 7 * 4 * 4 * 8 taps (patches) ...
    'stem_narrow': ((1, 6, 14, 12, 3), (7, 7, 7, 3, 8), (1, 2, 2), ((3, 3),) * 3, 1),
    # ... and of 7 * 4 * 4 * 32 (XLA's dense convolution).
    'stem_wide': ((1, 5, 11, 13, 3), (7, 7, 7, 3, 32), (1, 2, 2), ((3, 3),) * 3, 1),
    'grouped1': ((2, 4, 5, 6, 8), (3, 3, 3, 1, 8), (1, 1, 1), ((1, 1),) * 3, 8),
    'grouped1_stride2': ((2, 5, 7, 6, 8), (3, 3, 3, 1, 8), (2, 2, 2), ((1, 1),) * 3, 8),
    'grouped2': ((2, 4, 5, 6, 8), (3, 3, 3, 2, 8), (1, 1, 1), ((1, 1),) * 3, 4),
    'grouped2_stride2': ((1, 5, 6, 7, 8), (3, 3, 3, 2, 8), (2, 2, 2), ((1, 1),) * 3, 4),
    'grouped4': ((2, 4, 5, 6, 16), (3, 3, 3, 4, 16), (1, 1, 1), ((1, 1),) * 3, 4),
    'grouped4_stride2': ((1, 6, 5, 7, 16), (3, 3, 3, 4, 16), (2, 2, 2), ((1, 1),) * 3, 4),
    # One time tap: the multiply-add loop over time taps runs once.
    'grouped2_one_frame': ((2, 4, 5, 6, 8), (1, 3, 3, 2, 8), (1, 1, 1), ((0, 0), (1, 1), (1, 1)), 4),
    'grouped8': ((2, 4, 5, 6, 16), (3, 3, 3, 8, 16), (1, 1, 1), ((1, 1),) * 3, 2),
    'grouped8_stride2': ((1, 5, 7, 6, 32), (3, 3, 3, 8, 32), (2, 2, 2), ((1, 1),) * 3, 4),
    'dense_patches': ((2, 4, 5, 6, 8), (3, 3, 3, 8, 8), (1, 1, 1), ((1, 1),) * 3, 1),
    'dense_xla': ((1, 5, 6, 7, 64), (3, 3, 3, 64, 16), (2, 2, 2), ((1, 1),) * 3, 1),
    # Odd sizes, T != H != W, a different stride and padding per axis.
    'asymmetric_grouped': ((1, 5, 7, 9, 12), (3, 2, 3, 3, 12), (1, 2, 3), ((1, 0), (0, 2), (2, 1)),
                           4),
    'asymmetric_dense': ((2, 7, 5, 3, 4), (2, 3, 1, 4, 6), (2, 1, 2), ((0, 1), (1, 1), (0, 0)), 1),
    # Kernel smaller than the stride: some inputs are never read (zero gradient).
    'kernel_below_stride': ((1, 7, 8, 9, 4), (2, 2, 1, 4, 6), (3, 3, 2), ((1, 0), (0, 1), (0, 0)),
                            1),
    'kernel_below_stride_grouped': ((1, 7, 8, 7, 8), (2, 1, 2, 2, 8), (3, 2, 3), ((0, 0),) * 3, 4),
}


def _arrays(x_shape, kernel_shape, strides, padding, dtype=jnp.float32, seed=0):
  """Random x, kernel and output cotangent of one case (NumPy: no compilation per shape)."""
  rng = np.random.default_rng(seed)
  out = conv._out_shape(x_shape[1:4], kernel_shape[:3], strides, padding)
  shapes = (x_shape, kernel_shape, (x_shape[0], *out, kernel_shape[-1]))
  return tuple(jnp.asarray(rng.standard_normal(shape, np.float32), dtype) for shape in shapes)


@functools.lru_cache(maxsize=None)
def _conv_vjp(impl, strides, padding, groups):
  """Jitted (x, kernel, gy) -> (y, dx, dkernel) of `conv3d` with `impl`."""
  def fn(x, kernel, gy):
    y, pullback = jax.vjp(
        lambda x, k: conv.conv3d(x, k, strides, padding, groups, impl=impl), x, kernel)
    return (y, *pullback(gy))
  return jax.jit(fn)


def _relative_error(actual, expected):
  expected = np.asarray(expected, np.float64)
  return float(np.abs(np.asarray(actual, np.float64) - expected).max()
               / max(np.abs(expected).max(), 1e-30))


@pytest.mark.parametrize('name', sorted(CASES))
def test_fast_matches_xla(name):
  x_shape, kernel_shape, strides, padding, groups = CASES[name]
  x, kernel, gy = _arrays(x_shape, kernel_shape, strides, padding)
  fast = _conv_vjp('fast', strides, padding, groups)(x, kernel, gy)
  reference = _conv_vjp('xla', strides, padding, groups)(x, kernel, gy)
  for what, actual, expected in zip(('output', 'input gradient', 'kernel gradient'),
                                    fast, reference):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    assert np.abs(np.asarray(expected)).max() > 0, what
    assert _relative_error(actual, expected) < 1e-5, (name, what)


def test_kernel_below_stride_leaves_unread_inputs_without_gradient():
  x_shape, kernel_shape, strides, padding, groups = CASES['kernel_below_stride']
  x, kernel, gy = _arrays(x_shape, kernel_shape, strides, padding)
  _, dx, _ = _conv_vjp('fast', strides, padding, groups)(x, kernel, gy)
  # Along T (7 frames, padding (1, 0), kernel 2, stride 3) the windows read padded
  # rows 0-1, 3-4, 6-7: frames 0, 2, 3, 5, 6; frames 1 and 4 never.
  dx = np.asarray(dx)
  assert not np.any(dx[:, [1, 4]])
  assert np.all(np.any(dx[:, [0, 2, 3, 5, 6]] != 0, axis=(0, 2, 3, 4)))


@pytest.mark.parametrize('name', ['stem_wide', 'grouped2_stride2', 'grouped8_stride2',
                                  'pointwise_stride2'])
def test_bfloat16_keeps_dtypes_and_matches_float32(name):
  x_shape, kernel_shape, strides, padding, groups = CASES[name]
  x, kernel, gy = _arrays(x_shape, kernel_shape, strides, padding, jnp.bfloat16)
  fast = _conv_vjp('fast', strides, padding, groups)(x, kernel, gy)
  # Reference: float32 XLA on the same (bfloat16-rounded) values.
  reference = _conv_vjp('xla', strides, padding, groups)(
      *(a.astype(jnp.float32) for a in (x, kernel, gy)))
  for what, actual, expected in zip(('output', 'input gradient', 'kernel gradient'),
                                    fast, reference):
    assert actual.dtype == jnp.bfloat16, what
    assert actual.shape == expected.shape, what
    # Float32 accumulation: only the final rounding to bfloat16 (2^-8 relative).
    assert _relative_error(actual, expected) < 1e-2, (name, what)


def _random_variables(model, clip_shape, seed=0):
  """He-scaled kernels, random BatchNorm parameters and statistics (NumPy: nothing compiles)."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jax.ShapeDtypeStruct(clip_shape, jnp.float32))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    values = rng.standard_normal(leaf.shape)
    if 'kernel' in name:
      values *= (2.0 / np.prod(leaf.shape[:-1])) ** 0.5
    elif 'scale' in name:
      values = 1.0 + 0.2 * values
    elif 'var' in name:
      values = rng.uniform(0.5, 2.0, leaf.shape)
    else:    # Biases and running means.
      values *= 0.2
    return jnp.asarray(values, leaf.dtype)

  return {collection: jax.tree_util.tree_map_with_path(draw, shapes[collection])
          for collection in ('params', 'batch_stats')}


def test_tiny_model_logits_and_gradients_match():
  model = models.create('tiny', num_classes=5)
  clip_shape = (2, 8, 32, 32, 3)
  variables = _random_variables(model, clip_shape)
  clips = jnp.asarray(np.random.default_rng(1).standard_normal(clip_shape, np.float32))

  # Inference-mode BatchNorm: in training mode layer4's batch statistics come
  # from 2 values per channel, which amplifies float32 rounding differences
  # between any two convolution algorithms far beyond the convolutions' own.
  def loss_and_grads(params, clips):
    def loss_fn(params):
      logits = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, clips)
      return jnp.sum(logits * jnp.arange(1.0, 6.0)), logits
    return jax.grad(loss_fn, has_aux=True)(params)

  results = {}
  for impl in ('fast', 'xla'):
    with conv.use_impl(impl):
      # A new jitted function per implementation: the choice is read when tracing.
      results[impl] = jax.jit(lambda p, c: loss_and_grads(p, c))(variables['params'], clips)
  (grads_fast, logits_fast), (grads_xla, logits_xla) = results['fast'], results['xla']
  assert _relative_error(logits_fast, logits_xla) < 1e-5
  flat_fast = jax.tree_util.tree_leaves_with_path(grads_fast)
  flat_xla = dict(jax.tree_util.tree_leaves_with_path(grads_xla))
  assert len(flat_fast) == len(flat_xla)
  for path, grad in flat_fast:
    assert _relative_error(grad, flat_xla[path]) < 1e-4, jax.tree_util.keystr(path)


def test_default_impl_and_context_manager():
  assert conv.resolve_impl('auto') == ('fast' if jax.default_backend() == 'cpu' else 'xla')
  old = conv.set_default_impl('xla')
  try:
    assert conv.resolve_impl() == 'xla'
    with conv.use_impl('fast'):
      assert conv.resolve_impl() == 'fast'
    assert conv.resolve_impl() == 'xla'
  finally:
    conv.set_default_impl(old)


@pytest.mark.parametrize('impl', ['fast', 'xla'])
def test_bad_arguments_raise(impl):
  x = jnp.zeros((1, 4, 4, 4, 8))
  with pytest.raises(ValueError, match='expects x'):
    conv.conv3d(x[0], jnp.zeros((3, 3, 3, 8, 8)), impl=impl)
  with pytest.raises(ValueError, match='expects x'):
    conv.conv3d(x, jnp.zeros((3, 3, 8, 8)), impl=impl)
  with pytest.raises(ValueError, match='expects x'):
    conv.conv3d(x, jnp.zeros((3, 3, 3, 8, 8)), strides=(1, 1), impl=impl)
  with pytest.raises(ValueError, match='do not fit'):
    conv.conv3d(x, jnp.zeros((3, 3, 3, 3, 8)), feature_group_count=4, impl=impl)
  with pytest.raises(ValueError, match='do not fit'):
    conv.conv3d(x, jnp.zeros((3, 3, 3, 2, 6)), feature_group_count=4, impl=impl)


def test_unknown_impl_raises():
  x, kernel = jnp.zeros((1, 4, 4, 4, 8)), jnp.zeros((1, 1, 1, 8, 8))
  with pytest.raises(ValueError, match='Unknown conv3d implementation'):
    conv.conv3d(x, kernel, impl='cudnn')
  with pytest.raises(ValueError, match='Unknown conv3d implementation'):
    conv.set_default_impl('gpu')
  assert conv.resolve_impl() in ('fast', 'xla')
