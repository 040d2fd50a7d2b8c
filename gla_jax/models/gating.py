"""Attention gates on the backbone's stages, and the classifier over their outputs.

Each gate compares the local features of a stage, L = {l_i} (i over the
t x h x w positions, l_i in R^C), with the global feature g (the average-pooled
last stage) through a parametrised additive compatibility (Jetley et al.'s "pc"
form, with Oktay et al.'s projections so that C need not equal dim(g)):

    c_i = psi^T ReLU(W_l l_i + W_g g + b)                      (one score per position)
    a   = softmax_i(c)            or   a_i = sigmoid(c_i) / sum_j sigmoid(c_j)
    v   = sum_i a_i l_i                                        (the gated vector, R^C)

The gated vectors of all gated stages and g are then classified, either
concatenated into one linear classifier (`head='concat'`, Jetley et al.) or by
one linear classifier each whose logits are averaged (`head='average'`; the
classifier on g is the backbone's own `fc`, so published weights keep it).

The normalised maps a (over t, h, w) are attention maps too: the model sows
them as `intermediates['gate_<stage>']['attention']`, and `explain` returns
them up-sampled, as `Explanation.gate_maps`.

References:
  Jetley, Lord, Lee, Torr. "Learn To Pay Attention", ICLR 2018.
  Oktay et al. "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018.
  Yudistira, Kavitha, Kurita. IJCV 2022 (attention gating on each layer of a 3D CNN).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMALIZATIONS = ('softmax', 'sigmoid')
HEADS = ('concat', 'average')   # See the module docstring; the classifier lives in models.py.


class AttentionGate(nn.Module):
  """One stage's gate: compatibility map, normalised over (t, h, w), and gated pooling.

  Attributes:
    features: width of the compatibility space (W_l, W_g project to it).
    normalization: `softmax` or `sigmoid` (then divided by its sum, so the
      pooling is still an average).
    dtype: compute dtype of the projection; scores and pooling are float32.
  """
  features: int = 256
  normalization: str = 'softmax'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, local: jax.Array, global_feature: jax.Array):
    """`local` [B, t, h, w, C], `global_feature` [B, G] -> (v [B, C], a [B, t, h, w])."""
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f'Unknown gate normalization {self.normalization!r}; '
                       f'choose one of {NORMALIZATIONS}.')
    # Scores and pooling in float32 at least (a bfloat16 softmax over
    # thousands of positions loses the small weights).
    precise = jnp.promote_types(self.dtype, jnp.float32)
    projected = nn.Dense(self.features, use_bias=False, dtype=self.dtype, name='local_proj')(local)
    query = nn.Dense(self.features, dtype=self.dtype, name='global_proj')(global_feature)
    hidden = nn.relu(projected + query[:, None, None, None, :])     # [B, t, h, w, D]
    scores = nn.Dense(1, dtype=precise, name='psi')(hidden.astype(precise))[..., 0]
    flat = scores.reshape(scores.shape[0], -1)                     # [B, t*h*w]
    if self.normalization == 'softmax':
      weights = jax.nn.softmax(flat, axis=-1)
    else:
      gate = jax.nn.sigmoid(flat)
      weights = gate / jnp.sum(gate, axis=-1, keepdims=True)
    attention = weights.reshape(scores.shape)                      # [B, t, h, w]
    self.sow('intermediates', 'attention', attention)
    pooled = jnp.einsum('bthw,bthwc->bc', attention, local.astype(precise))
    return pooled, attention
