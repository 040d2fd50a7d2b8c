"""Score-CAM and Ablation-CAM: channel weights from masked forward passes, in chunks.

Both weigh a layer's channels by forward passes instead of a gradient: one per
channel and clip, batched `chunk_size` channels at a time (`jax.lax.map` over
the chunks, each a batch of B * chunk_size clips in eval mode), so memory
grows with B * chunk_size, not with the number of channels C. Everything runs
inside the caller's jit.

- Score-CAM (Wang et al., Algorithm 1; as pytorch-grad-cam's ScoreCAM): the
  mask M_k is A_k up-sampled to the clip (the explanation's own up-sampling)
  and min-max normalised per clip, (M - min) / (max - min + 1e-8); S_k is the
  target's pre-softmax logit on video * M_k (masked pixels become 0 in
  normalised space: the mean colour); w = softmax_k(S); map ReLU(sum_k w_k A_k).
  The paper subtracts the baseline's score f(X_b) from S_k: softmax is
  shift-invariant, so the weights are the same.
- Ablation-CAM (Desai & Ramaswamy, eq. 3; as pytorch-grad-cam's AblationCAM):
  y is the target's logit, y_k the logit with channel k of the tap set to zero
  (through the 'perturbations' collection: -A_k added on channel k);
  w_k = (y - y_k) / y; map ReLU(sum_k w_k A_k). Where y = 0 the denominator is
  1 (pytorch-grad-cam divides by zero). pytorch-grad-cam ablates with
  min(A) - 1e7 instead of 0 when the layer has negative values; the taps here
  follow a ReLU (min 0), where both ablate with 0.

pytorch-grad-cam 1.5.7 runs neither on 5-D activations: ScoreCAM up-samples
with `UpsamplingBilinear2d` (4-D only) and AblationCAM repeats the clip and the
activations with 4-D `repeat`s; tests/explain/test_masked_cams.py checks both
against per-channel loops in PyTorch.

References:
  Wang et al. "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020.
  Desai, Ramaswamy. "Ablation-CAM: Visual Explanations for Deep Convolutional
    Network via Gradient-free Localization", WACV 2020.
"""
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp

from gla_jax import models
from gla_jax.explain.cam_methods import MASKED_METHODS

_MASK_EPS = 1e-8   # pytorch-grad-cam's ScoreCAM.


def _target_scores(logits: jax.Array, target: jax.Array, chunk: int) -> jax.Array:
  """[B * chunk, K] logits of clip-major batches -> [B, chunk] float32 target logits."""
  logits = logits.astype(jnp.float32).reshape(target.shape[0], chunk, -1)
  return jnp.take_along_axis(logits, target[:, None, None], axis=-1)[..., 0]


def _channel_chunks(activation: jax.Array, chunk_size: int) -> jax.Array:
  """[B, t, h, w, C] -> [num_chunks, B, t, h, w, chunk_size], C zero-padded to a multiple."""
  channels = activation.shape[-1]
  num_chunks = -(-channels // chunk_size)
  padded = jnp.pad(activation, [(0, 0)] * 4 + [(0, num_chunks * chunk_size - channels)])
  padded = padded.reshape(*activation.shape[:4], num_chunks, chunk_size)
  return jnp.moveaxis(padded, 4, 0)


def _scorecam_scores(model, variables, video, target, chunks, resize):
  """[B, C_padded] target logits of the clips masked by each up-sampled channel."""
  batch, chunk = video.shape[0], chunks.shape[-1]

  def chunk_scores(maps):                                        # [B, t, h, w, chunk]
    maps = jnp.moveaxis(maps, -1, 1).reshape(batch * chunk, *maps.shape[1:4])
    masks = resize(maps.astype(jnp.float32)).reshape(batch, chunk, *video.shape[1:4])
    low = jnp.min(masks, axis=(2, 3, 4), keepdims=True)
    high = jnp.max(masks, axis=(2, 3, 4), keepdims=True)
    masks = (masks - low) / (high - low + _MASK_EPS)
    masked = (video[:, None] * masks[..., None].astype(video.dtype))
    logits = model.apply(variables, masked.reshape(batch * chunk, *video.shape[1:]))
    return _target_scores(logits, target, chunk)                 # [B, chunk]

  scores = jax.lax.map(chunk_scores, chunks)                     # [num_chunks, B, chunk]
  return jnp.moveaxis(scores, 0, 1).reshape(batch, -1)


def _ablation_scores(model, variables, video, target, chunk, activation, tap):
  """[B, C_padded] target logits with each channel of `tap` set to zero."""
  batch, channels = video.shape[0], activation.shape[-1]
  clips = jnp.repeat(video, chunk, axis=0)                       # [B * chunk, T, H, W, 3]
  shapes = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=['perturbations'])[1], variables, clips)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['perturbations'])
  first = jnp.arange(-(-channels // chunk)) * chunk        # first channel of each chunk

  def chunk_scores(start):
    ablated = start + jnp.arange(chunk)                          # [chunk]; >= C is padding
    one_hot = jax.nn.one_hot(ablated, channels, dtype=activation.dtype)   # [chunk, C]
    delta = -activation[:, None] * one_hot[None, :, None, None, None, :]  # [B, chunk, ..., C]
    perturbations = dict(zeros)
    perturbations[tap] = delta.reshape(batch * chunk, *activation.shape[1:]).astype(
        zeros[tap].dtype)
    logits = model.apply({**variables, 'perturbations': perturbations}, clips)
    return _target_scores(logits, target, chunk)

  scores = jax.lax.map(chunk_scores, first)
  return jnp.moveaxis(scores, 0, 1).reshape(batch, -1)


def masked_cam(model: models.ResNeXt3D, variables: Dict[str, Any], video: jax.Array,
               target: jax.Array, activation: jax.Array, tap: str, method: str,
               resize: Callable[[jax.Array], jax.Array], chunk_size: int = 32) -> jax.Array:
  """Score-CAM or Ablation-CAM map of one tapped layer at the layer's resolution.

  Args:
    model: the `models.ResNeXt3D` explained.
    variables: its `{'params', 'batch_stats'}` (extra collections are ignored).
    video: [B, T, H, W, 3] normalised float clips.
    target: [B] int classes explained.
    activation: [B, t, h, w, C], the value of tap `tap` on `video`.
    tap: the tap's name (`models.tap_names`).
    method: `scorecam` or `ablationcam`.
    resize: maps [N, t, h, w] -> [N, T, H, W], the explanation's up-sampling of
      this tap (used by Score-CAM's masks).
    chunk_size: channels per batched forward (each runs B * chunk_size clips).

  Returns:
    [B, t, h, w] float32, non-negative.
  """
  if method not in MASKED_METHODS:
    raise ValueError(f'Unknown masked method {method!r}; choose one of {MASKED_METHODS}.')
  if int(chunk_size) != chunk_size or chunk_size < 1:
    raise ValueError(f'chunk_size={chunk_size!r}: give a positive number of channels per '
                     'batched forward pass (config.explain.chunk_size, e.g. 32).')
  if tap not in models.tap_names(model):
    raise ValueError(f'Unknown tap {tap!r}; choose one of {models.tap_names(model)}.')
  variables = {k: variables[k] for k in ('params', 'batch_stats')}
  channels = activation.shape[-1]
  chunk_size = min(int(chunk_size), channels)
  target = jnp.asarray(target, jnp.int32).reshape(video.shape[0])
  a = activation.astype(jnp.float32)
  if method == 'scorecam':
    chunks = _channel_chunks(activation, chunk_size)
    scores = _scorecam_scores(model, variables, video, target, chunks, resize)[:, :channels]
    weights = jax.nn.softmax(scores, axis=-1)
  else:
    scores = _ablation_scores(model, variables, video, target, chunk_size, activation,
                              tap)[:, :channels]
    score = _target_scores(model.apply(variables, video), target, 1)        # [B, 1]
    weights = (score - scores) / jnp.where(score == 0, 1.0, score)
  return jax.nn.relu(jnp.sum(weights[:, None, None, None, :] * a, axis=-1))
