"""3D convolution used by every layer of the backbone.

`conv3d` is the one entry point; its layout is NDHWC activations and DHWIO
kernels (the layout of `flax.linen.Conv`), with explicit padding.
"""
from typing import Sequence, Tuple

import jax
from jax import lax

Padding = Sequence[Tuple[int, int]]

_DIMENSION_NUMBERS = ('NDHWC', 'DHWIO', 'NDHWC')


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1, 1),
           padding: Padding = ((0, 0), (0, 0), (0, 0)),
           feature_group_count: int = 1) -> jax.Array:
  """Grouped 3D convolution, `x` [B, T, H, W, Cin], `kernel` [kT, kH, kW, Cin/g, Cout]."""
  return lax.conv_general_dilated(
      x, kernel.astype(x.dtype), window_strides=tuple(strides), padding=tuple(padding),
      dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=feature_group_count)
