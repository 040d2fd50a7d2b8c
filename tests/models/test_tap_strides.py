"""`models.tap_strides`: the table, and where single cells' input gradients are centred."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gla_jax import models

CLIP = (8, 64, 64)   # layer4 is 1 x 2 x 2: its cell (0, 1, 1) sees the clip's middle.
# (tap, cell (t, h, w), the axes where the cell is interior: its receptive field
# inside the clip, or cut about evenly on both sides).
CELLS = (('conv1', (4, 16, 15), (0, 1, 2)),
         ('layer2', (1, 3, 4), (0, 1, 2)),
         ('layer4', (0, 1, 1), (1, 2)))


def test_table_follows_the_architecture():
  tiny = models.ResNeXt3DTiny(num_classes=5)
  strides = models.tap_strides(tiny)
  assert sorted(strides) == sorted(models.tap_names(tiny))
  assert strides['conv1'] == (1, 2, 2)                        # the stem keeps every frame
  assert [strides[f'layer{s}'] for s in (1, 2, 3, 4)] == [(2, 4, 4), (4, 8, 8), (8, 16, 16),
                                                          (16, 32, 32)]
  deep = models.ResNeXt3D50(max_pool=False, temporal_strides=(1, 1, 1, 1))
  strides = models.tap_strides(deep)
  assert [strides[f'layer{s}'] for s in (1, 2, 3, 4)] == [(1, 2, 2), (1, 4, 4), (1, 8, 8),
                                                          (1, 16, 16)]
  assert strides['layer3.5'] == strides['layer3.0'] == strides['layer3']


@pytest.fixture(scope='module')
def cell_gradients():
  """|d(sum over channels of one tap cell) / d(input)| summed over RGB: [len(CELLS), T, H, W].

  The tiny model at random init; one backward pass, a batch row per cell.
  """
  model = models.ResNeXt3DTiny(num_classes=5)
  variables = models.init_variables(model, jax.random.key(0))
  video = jax.random.normal(jax.random.key(1), (len(CELLS), *CLIP, 3))

  def cells(x):
    """Rows are independent: the gradient of the sum is each row's cell's gradient."""
    _, state = model.apply(variables, x, mutable=['intermediates'])
    return sum(jnp.sum(state['intermediates'][name][0][row, t, h, w])
               for row, (name, (t, h, w), _) in enumerate(CELLS))

  return model, np.abs(np.asarray(jax.jit(jax.grad(cells))(video))).sum(-1)


def _profiles(gradient):
  """The gradient's mass along each of (T, H, W)."""
  return [gradient.sum(axis=tuple(a for a in range(3) if a != axis)) for axis in range(3)]


def test_cells_are_centred_at_stride_times_index(cell_gradients):
  model, gradients = cell_gradients
  strides = models.tap_strides(model)
  for row, (name, cell, interior) in enumerate(CELLS):
    for axis, profile in enumerate(_profiles(gradients[row])):
      if axis not in interior:
        continue
      stride, index = strides[name][axis], cell[axis]
      centroid = float(np.sum(profile * np.arange(len(profile))) / np.sum(profile))
      half_pixel = (index + 0.5) * stride - 0.5
      where = f'{name} cell {cell} axis {axis}: centroid {centroid:.2f}'
      assert abs(centroid - stride * index) <= 1.0, where
      if half_pixel - stride * index > 1.0:
        assert abs(centroid - half_pixel) > 1.0, where


def test_stem_receptive_field_is_centred_exactly(cell_gradients):
  """conv1's 7 x 7 x 7 field lies inside the clip: its support's middle is s * i exactly."""
  model, gradients = cell_gradients
  strides = models.tap_strides(model)['conv1']
  cell = CELLS[0][1]
  for axis, profile in enumerate(_profiles(gradients[0])):
    support = np.flatnonzero(profile > 0)
    assert support[-1] - support[0] == 6, axis                 # the whole 7-wide kernel
    assert (support[0] + support[-1]) / 2 == strides[axis] * cell[axis], axis
