"""Placing a layer's map on the clip's voxels: up-sampling [B, t, h, w] to [B, T, H, W].

`half_pixel` puts cell i of an axis at input coordinate (i + 0.5) * in / out - 0.5,
PyTorch's `interpolate(mode='trilinear', align_corners=False)` and so what
pytorch-grad-cam, captum and mmaction2 do; the parity tests against PyTorch use
it. `receptive_field` puts cell i where its receptive field is centred, s * i
for a layer of cumulative stride s (`models.tap_strides`). Details:
docs/design.md section 3.
"""
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

UPSAMPLINGS = ('half_pixel', 'receptive_field')


def _linear_matrix(src: np.ndarray, in_size: int) -> np.ndarray:
  """[out, in] weights of 1-D linear interpolation at cell coordinates `src` (>= 0)."""
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  matrix = np.zeros((len(src), in_size), np.float32)
  np.add.at(matrix, (np.arange(len(src)), lo), 1.0 - frac)
  np.add.at(matrix, (np.arange(len(src)), hi), frac)
  return matrix


def _interpolation_matrix(in_size: int, out_size: int) -> np.ndarray:
  """Half-pixel centres, exactly PyTorch's `align_corners=False` rule.

  src = (dst + 0.5) * in / out - 0.5, clamped at 0, neighbours clamped at the last index.
  """
  return _linear_matrix(np.maximum((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0.0),
                        in_size)


def _receptive_field_matrix(in_size: int, out_size: int, stride: int) -> np.ndarray:
  """Cell centres at stride * i: output coordinate x reads cell coordinate x / stride.

  Clamped to [0, in - 1]: before the first centre it takes cell 0, after the last the last cell.
  """
  return _linear_matrix(np.clip(np.arange(out_size) / stride, 0.0, in_size - 1), in_size)


def upsample(maps: jax.Array, size: Sequence[int], upsampling: str = 'half_pixel',
             strides: Optional[Sequence[int]] = None) -> jax.Array:
  """Trilinear resize of [B, t, h, w] maps to [B, *size] (separable).

  Args:
    maps: [B, t, h, w] maps at a layer's resolution.
    size: (T, H, W) of the clip.
    upsampling: one of `UPSAMPLINGS` (see the module docstring).
    strides: (st, sh, sw), the layer's cumulative strides; needed by
      `receptive_field`.
  """
  if upsampling not in UPSAMPLINGS:
    raise ValueError(f'Unknown upsampling {upsampling!r}; choose one of {UPSAMPLINGS}.')
  if upsampling == 'receptive_field':
    if strides is None or len(strides) != 3 or any(int(s) < 1 for s in strides):
      raise ValueError(f'upsampling="receptive_field" needs the layer\'s strides (st, sh, sw), '
                       f'each >= 1, got strides={strides!r}: pass '
                       'models.tap_strides(model)[name].')
    matrices = [_receptive_field_matrix(i, o, int(s))
                for i, o, s in zip(maps.shape[1:], size, strides)]
  else:
    matrices = [_interpolation_matrix(i, o) for i, o in zip(maps.shape[1:], size)]
  mt, mh, mw = (jnp.asarray(m) for m in matrices)
  maps = jnp.einsum('bthw,Tt->bThw', maps, mt)
  maps = jnp.einsum('bThw,Hh->bTHw', maps, mh)
  return jnp.einsum('bTHw,Ww->bTHW', maps, mw)
