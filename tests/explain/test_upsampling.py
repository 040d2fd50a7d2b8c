"""`upsampling='receptive_field'`: hand-made arrays and `explain` with it.

The config key's check: tests/test_validation.py.
"""
import functools

import jax
import numpy as np
import pytest

from gla_jax import explain
from gla_jax import models
from gla_jax.explain import upsampling
from tests.explain import test_masked_cams


def test_ramp_at_stride_four_has_the_cells_on_their_centres():
  cells = np.array([1.0, 3.0, 7.0], np.float32).reshape(1, 1, 1, 3)
  out = np.asarray(explain.upsample(cells, (1, 1, 12), 'receptive_field', (1, 1, 4))).ravel()
  np.testing.assert_allclose(out[[0, 4, 8]], [1.0, 3.0, 7.0])        # cell i at 4 i
  np.testing.assert_allclose(out[[2, 6]], [2.0, 5.0])                # halfway: the mean
  np.testing.assert_allclose(out[[1, 5]], [1.5, 4.0])                # a quarter of the way
  np.testing.assert_allclose(out[8:], 7.0)                           # after the last centre
  half = np.asarray(explain.upsample(cells, (1, 1, 12))).ravel()     # half-pixel: 4 i + 1.5
  np.testing.assert_allclose(half[[0, 1]], [1.0, 1.0])
  np.testing.assert_allclose(half[[5, 6]], [2.75, 3.5])


def test_three_axes_match_numpy_interp_and_constants_stay():
  rng = np.random.default_rng(0)
  maps = rng.random((2, 3, 4, 2)).astype(np.float32)
  size, strides = (7, 16, 9), (2, 4, 8)
  expected = maps
  for axis, (out, stride) in enumerate(zip(size, strides), start=1):
    expected = np.apply_along_axis(
        lambda v, out=out, stride=stride: np.interp(np.arange(out) / stride,
                                                    np.arange(len(v)), v), axis, expected)
  out = explain.upsample(maps, size, 'receptive_field', strides)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  const = np.full((1, 2, 3, 3), 3.0, np.float32)
  np.testing.assert_allclose(explain.upsample(const, (8, 32, 32), 'receptive_field', (4, 8, 8)),
                             3.0, rtol=1e-6)


def test_bad_upsampling_arguments_say_the_fix():
  maps = np.zeros((1, 1, 2, 2), np.float32)
  with pytest.raises(ValueError, match=r'pass models\.tap_strides\(model\)\[name\]'):
    explain.upsample(maps, (1, 8, 8), 'receptive_field')
  with pytest.raises(ValueError, match=r"choose one of \('half_pixel', 'receptive_field'\)"):
    explain.upsample(maps, (1, 8, 8), 'nearest')
  with pytest.raises(ValueError, match=r"Unknown upsampling 'nearest'"):   # Before any compile.
    explain.explain(models.ResNeXt3DTiny(num_classes=5), {'params': {}, 'batch_stats': {}},
                    np.zeros((1, 4, 16, 16, 3), np.float32), upsampling='nearest')


def _cells_from_half_pixel(maps, cells):
  """Least-squares [B, t, h, w] cells whose half-pixel up-sampling is `maps` [B, T, H, W]."""
  for axis, count in enumerate(cells, start=1):
    matrix = upsampling._interpolation_matrix(count, maps.shape[axis])     # [out, in]
    maps = np.moveaxis(np.tensordot(np.linalg.pinv(matrix), np.moveaxis(maps, axis, 0),
                                    axes=1), 0, axis)
  return maps


def test_explain_places_the_half_pixel_cells_by_their_strides():
  """The same cells, placed at s * i: each layer map is minmax(receptive_field(cells)).

  Min-max normalisation is a positive affine map, which both up-samplings keep:
  the cells recovered from the half-pixel explanation are the layer's raw map
  up to one, and so give the receptive-field map exactly.
  """
  # One stage (conv1, layer1): the network's code at a quarter of the tiny preset's compile.
  _, model, variables, video = test_masked_cams.one_stage_networks()
  placed = explain.explain(model, variables, video, upsampling='receptive_field')
  half = explain.explain(model, variables, video)
  strides = models.tap_strides(model)
  _, _, acts, _ = jax.eval_shape(functools.partial(explain.tap_gradients, model), variables, video)
  size = video.shape[1:4]
  for name in half.layer_names:
    cells = _cells_from_half_pixel(np.asarray(half.layer_maps[name], np.float64),
                                   acts[name].shape[1:4])
    expected = explain.minmax(explain.upsample(cells.astype(np.float32), size,
                                               'receptive_field', strides[name]))
    np.testing.assert_allclose(placed.layer_maps[name], expected, atol=1e-4, err_msg=name)
    if name != 'layer4':                    # 1 x 1 x 1 at 8 x 32 x 32: constant, zeros
      assert np.max(np.abs(np.asarray(placed.layer_maps[name]) - half.layer_maps[name])) > 0.05
  np.testing.assert_allclose(placed.logits, half.logits)
