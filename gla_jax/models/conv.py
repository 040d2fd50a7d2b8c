"""3D convolution used by every layer of the backbone, with a fast CPU path.

`conv3d` is the one entry point (NDHWC activations, DHWIO kernels, explicit
padding). On GPU and TPU (`'auto'`) it is `lax.conv_general_dilated` with XLA's
gradients. XLA:CPU runs grouped, input-dilated and weight-gradient convolutions
10-100x behind PyTorch, so the `'fast'` implementation rewrites each into
matrix products, dense convolutions and elementwise loops with its own
`jax.custom_vjp` gradient (first order only; computes in float32). The cases and
why: docs/design.md (CPU speed notes); `python -m benchmarks.conv_bench` measures them.

References:
  Dumoulin, Visin. "A guide to convolution arithmetic for deep learning",
  arXiv 1603.07285 (transposed convolutions, strides and padding).
  Shi et al. "Real-Time Single Image and Video Super-Resolution Using an
  Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016 (the phase
  decomposition of a strided transposed convolution).
  Chellapilla, Puri, Simard. "High Performance Convolutional Neural Networks
  for Document Processing", 2006 (im2col: convolution as a matrix product).
"""
import contextlib
import functools
import itertools
from typing import Iterator, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax

Padding = Sequence[Tuple[int, int]]

IMPLS = ('auto', 'xla', 'fast')
_DIMENSION_NUMBERS = ('NDHWC', 'DHWIO', 'NDHWC')
# Grouped convolutions with at most this many input channels per group use the
# fused multiply-add loop; with more, XLA:CPU emits a slow loop for it
# (measured: 8 channels per group 3x slower than the batched matrix products).
_FMA_MAX_GROUP_CHANNELS = 4
# Dense convolutions whose (kT, kH, kW, Cin) patch is at most this long (the
# stem: 7 * 7 * 7 * 3 = 1029) use patches and matrix products instead of XLA's
# convolution.
_PATCH_MAX_DEPTH = 1536
# Output positions per chunk of the few-channel path: its windows are built and
# multiplied in chunks of whole (frame, clip) images of about this many rows, so
# each chunk stays in cache (measured on the stem: about 2x faster than all
# rows at once; 256 to 4096 rows perform alike).
_PATCH_CHUNK_ROWS = 512

_default_impl = 'auto'


def set_default_impl(impl: str) -> str:
  """Sets the implementation `conv3d` uses when `impl` is None; returns the old one.

  The choice is read when a function is traced: jitted functions traced
  before the change keep the implementation they were traced with.
  """
  global _default_impl
  _check_impl(impl)
  old, _default_impl = _default_impl, impl
  return old


@contextlib.contextmanager
def use_impl(impl: str) -> Iterator[None]:
  """Context manager form of `set_default_impl` (e.g. to trace a model with 'xla')."""
  old = set_default_impl(impl)
  try:
    yield
  finally:
    set_default_impl(old)


def resolve_impl(impl: Optional[str] = None) -> str:
  """'xla' or 'fast': what `impl` (None: the default) means on the default backend."""
  impl = _default_impl if impl is None else impl
  _check_impl(impl)
  if impl == 'auto':
    return 'fast' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1, 1),
           padding: Padding = ((0, 0), (0, 0), (0, 0)),
           feature_group_count: int = 1, impl: Optional[str] = None) -> jax.Array:
  """Grouped 3D convolution (cross-correlation, as PyTorch's Conv3d and XLA).

  Args:
    x: [B, T, H, W, Cin] activations.
    kernel: [kT, kH, kW, Cin / groups, Cout]; cast to `x.dtype`.
    strides: (sT, sH, sW).
    padding: ((lo, hi),) * 3, explicit zero padding per spatial axis.
    feature_group_count: groups; Cin and Cout must be divisible by it.
    impl: 'xla' (`lax.conv_general_dilated` and XLA's gradients), 'fast' (the
      CPU reformulations of the module docstring, with their own gradient) or
      'auto' (fast on CPU, xla elsewhere, decided by `jax.default_backend()`
      when traced); None uses the module default (`set_default_impl`).

  Returns:
    [B, T', H', W', Cout] in `x.dtype`, T' = (T + lo + hi - kT) // sT + 1 etc.
  """
  strides = tuple(int(s) for s in strides)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  groups = int(feature_group_count)
  if x.ndim != 5 or kernel.ndim != 5 or len(strides) != 3 or len(padding) != 3:
    raise ValueError(f'conv3d expects x [B, T, H, W, C], kernel [kT, kH, kW, I, O], 3 strides '
                     f'and 3 padding pairs; got x {x.shape}, kernel {kernel.shape}, '
                     f'strides {strides}, padding {padding}.')
  if x.shape[-1] != kernel.shape[3] * groups or kernel.shape[-1] % groups:
    raise ValueError(f'{x.shape[-1]} input channels, kernel {kernel.shape} and '
                     f'{groups} groups do not fit together.')
  kernel = kernel.astype(x.dtype)
  # Negative padding (cropping) is legal in XLA but never used here; the fast
  # path's phase bookkeeping assumes lo, hi >= 0.
  if resolve_impl(impl) == 'xla' or min(min(p) for p in padding) < 0:
    return _xla_conv(x, kernel, strides, padding, groups)
  return _fast_conv3d(x, kernel, strides, padding, groups)


def _check_impl(impl):
  if impl not in IMPLS:
    raise ValueError(f'Unknown conv3d implementation {impl!r}; choose one of {IMPLS}.')


def _xla_conv(x, kernel, strides, padding, groups):
  return lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=padding,
      dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=groups)


# ----------------------------------------------------------------------------
# The fast path: forward and gradient rules.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _fast_conv3d(x, kernel, strides, padding, groups):
  dtype = _compute_dtype(x.dtype)
  y = _forward(x.astype(dtype), kernel.astype(dtype), strides, padding, groups)
  return y.astype(x.dtype)


def _fast_conv3d_fwd(x, kernel, strides, padding, groups):
  return _fast_conv3d(x, kernel, strides, padding, groups), (x, kernel)


def _fast_conv3d_bwd(strides, padding, groups, residuals, gy):
  x, kernel = residuals
  dtype = _compute_dtype(x.dtype)
  gy = gy.astype(dtype)
  dx = _input_grad(gy, kernel.astype(dtype), x.shape[1:4], strides, padding, groups)
  dk = _kernel_grad(x.astype(dtype), gy, kernel.shape[:3], strides, padding, groups)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_fast_conv3d.defvjp(_fast_conv3d_fwd, _fast_conv3d_bwd)


def _compute_dtype(dtype):
  # float32 at least: XLA:CPU runs bfloat16/float16 contractions in slow loops.
  return jnp.promote_types(dtype, jnp.float32)


def _out_shape(in_shape, k, strides, padding):
  return tuple((n + lo + hi - kd) // s + 1
               for n, kd, s, (lo, hi) in zip(in_shape, k, strides, padding))


def _pad(x, padding):
  """Zero-pads the three spatial axes of [B, T, H, W, ...] by ((lo, hi),) * 3."""
  config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding]
  config += [(0, 0, 0)] * (x.ndim - 4)
  return lax.pad(x, jnp.zeros((), x.dtype), config)


def _tap(xp, offset, strides, out_shape):
  """The view of padded `xp` [B, T, H, W, ...] that kernel tap `offset` sees: [B, T', H', W', ...]."""
  start = (0, *offset) + (0,) * (xp.ndim - 4)
  limit = (xp.shape[0], *(o + s * (n - 1) + 1 for o, s, n in zip(offset, strides, out_shape)),
           *xp.shape[4:])
  return lax.slice(xp, start, limit, (1, *strides) + (1,) * (xp.ndim - 4))


def _forward(x, w, strides, padding, groups):
  """The convolution, float32 `x` [B, T, H, W, Cin] and `w` [kT, kH, kW, Cin/g, Cout]."""
  k, cin_g = w.shape[:3], w.shape[3]
  if groups == 1 and k == (1, 1, 1):
    return _pointwise(x, w, strides, padding)
  if groups == 1 and k[0] * k[1] * k[2] * cin_g <= _PATCH_MAX_DEPTH:
    return _patch_forward(x, w, strides, padding)
  if groups == 1:
    return _xla_conv(x, w, strides, padding, 1)    # Dense: XLA runs it with Eigen.
  if cin_g <= _FMA_MAX_GROUP_CHANNELS:
    return _grouped_fma_forward(x, w, strides, padding, groups)
  return _grouped_matmul_forward(x, w, strides, padding, groups)


def _pointwise(x, w, strides, padding):
  """1x1x1 convolution: a strided view, then one matrix product."""
  xp = _pad(x, padding)
  xs = _tap(xp, (0, 0, 0), strides, _out_shape(x.shape[1:4], (1, 1, 1), strides, padding))
  return jnp.einsum('bthwi,io->bthwo', xs, w[0, 0, 0])


def _grouped_fma_forward(x, w, strides, padding, groups):
  """Grouped convolution as a sum of kT*kH*kW*Cin/g broadcast products.

  Each output channel o of group g adds x[..., g, i] * w[tap, i, g, o]; with a
  handful of channels per group this is cheaper than any matrix-product
  formulation, whose matrices would be 4 wide. The kH*kW*Cin/g products of one
  time tap are one fused loop; a `fori_loop` over the kT time taps accumulates
  them. The loop is what keeps the result whole: as one loop fusion, XLA copied
  the whole 108-product expression into every elementwise consumer (BatchNorm,
  ReLU, their gradients) and recomputed its producer (the previous BatchNorm
  and ReLU) inside it, which made a bottleneck's grouped convolution 5-10x
  slower in the network than alone (measured in a ResNeXt-50 training step).
  With one time tap (kT = 1) XLA drops the one-trip loop, and the products are
  one fusion again (no such kernel in this network).
  """
  k, cin_g, cout = w.shape[:3], w.shape[3], w.shape[4]
  b = x.shape[0]
  out = _out_shape(x.shape[1:4], k, strides, padding)
  xp = _pad(x.reshape(*x.shape[:4], groups, cin_g), padding)   # [B, T+, H+, W+, G, Cin/g]
  wt = w.reshape(k[0], k[1] * k[2], cin_g, groups, cout // groups)  # [kT, kH*kW, Cin/g, G, Cout/g]
  frames_read = strides[0] * (out[0] - 1) + 1

  def add_time_tap(a, y):
    frames = lax.dynamic_slice_in_dim(xp, a, frames_read, axis=1)
    wa = lax.dynamic_index_in_dim(wt, a, keepdims=False)          # [kH*kW, Cin/g, G, Cout/g]
    for t, offset in enumerate(itertools.product(range(k[1]), range(k[2]))):
      view = _tap(frames, (0, *offset), strides, out)            # [B, T', H', W', G, Cin/g]
      for i in range(cin_g):
        y = y + view[..., i:i + 1] * wa[t, i]                    # [B, T', H', W', G, Cout/g]
    return y

  y = lax.fori_loop(0, k[0], add_time_tap, jnp.zeros((b, *out, groups, cout // groups), x.dtype))
  return y.reshape(b, *out, cout)


def _grouped_matmul_forward(x, w, strides, padding, groups):
  """Grouped convolution as one batched (over groups) matrix product per kernel tap."""
  k, cin_g, cout = w.shape[:3], w.shape[3], w.shape[4]
  b = x.shape[0]
  out = _out_shape(x.shape[1:4], k, strides, padding)
  # Groups lead, so every tap's view is already in batched-matmul layout.
  xg = jnp.moveaxis(x.reshape(*x.shape[:4], groups, cin_g), 4, 0)   # [G, B, T, H, W, Cin/g]
  xp = _pad_groups_first(xg, padding)
  wt = w.reshape(-1, cin_g, groups, cout // groups).transpose(0, 2, 1, 3)  # [taps, G, Cin/g, Cout/g]
  y = None
  for t, offset in enumerate(itertools.product(*map(range, k))):
    view = _tap_groups_first(xp, offset, strides, out)            # [G, B, T', H', W', Cin/g]
    term = jnp.einsum('gbthwi,gio->gbthwo', view, wt[t])
    y = term if y is None else y + term
  return jnp.moveaxis(y, 0, 4).reshape(b, *out, cout)             # [B, T', H', W', Cout]


def _pad_groups_first(xg, padding):
  config = [(0, 0, 0), (0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)]
  return lax.pad(xg, jnp.zeros((), xg.dtype), config)


def _tap_groups_first(xp, offset, strides, out_shape):
  """`_tap` for [G, B, T, H, W, C] arrays."""
  start = (0, 0, *offset, 0)
  limit = (*xp.shape[:2], *(o + s * (n - 1) + 1 for o, s, n in zip(offset, strides, out_shape)),
           xp.shape[-1])
  return lax.slice(xp, start, limit, (1, 1, *strides, 1))


def _time_unfold(x, k, strides, padding):
  """The kT padded frames each output frame reads, stacked into channels.

  Returns images [T' * B, H+, W+, kT * Cin] (output frame major, channels
  ordered (tap a, Cin)) and the output shape (T', H', W'). Cheap for few input
  channels: kT times the input.
  """
  xp = _pad(x, padding)                                           # [B, T+, H+, W+, Cin]
  out = _out_shape(x.shape[1:4], k, strides, padding)
  frames = [lax.slice_in_dim(xp, a, a + strides[0] * (out[0] - 1) + 1, strides[0], axis=1)
            for a in range(k[0])]                                 # kT x [B, T', H+, W+, Cin]
  images = jnp.moveaxis(jnp.concatenate(frames, axis=-1), 1, 0)   # [T', B, H+, W+, kT*Cin]
  return images.reshape(-1, *images.shape[2:]), out


def _width_unfold(images, kw, sw, out_w):
  """[..., H+, W', kW * C]: the kW (stride sW) windows along W of images [..., H+, W+, C]."""
  taps = [lax.slice_in_dim(images, d, d + sw * (out_w - 1) + 1, sw, axis=images.ndim - 2)
          for d in range(kw)]
  return jnp.concatenate(taps, axis=-1)


def _row_tap(windows, dh, sh, out_h):
  """Rows dh, dh + sH, ... of [n, H+, W', K] windows, as a [n * H' * W', K] matrix."""
  rows = lax.slice_in_dim(windows, dh, dh + sh * (out_h - 1) + 1, sh, axis=1)
  return rows.reshape(-1, windows.shape[-1])


def _images_per_chunk(out):
  return max(1, _PATCH_CHUNK_ROWS // (out[1] * out[2]))


def _patch_forward(x, w, strides, padding):
  """Dense convolution with few input channels (the stem) as chunked matrix products.

  The kT frames each output frame reads are stacked into channels (cheap for
  few channels), and each chunk of (frame, clip) images is multiplied in
  cache: its (kW, kT, Cin) windows along W are stacked into channels, and each
  of the kH row taps is one [rows, kW*kT*Cin] x [kW*kT*Cin, Cout] product. A
  whole (kT, kH, kW, Cin) patch matrix would be kT*kH*kW times the input, and
  XLA:CPU copies each of its kH*kW pieces separately (slower to run and to
  compile).
  """
  k, cout = w.shape[:3], w.shape[4]
  images, out = _time_unfold(x, k, strides, padding)            # [T'*B, H+, W+, kT*Cin]
  wr = w.transpose(1, 2, 0, 3, 4).reshape(k[1], -1, cout)       # [kH, kW*kT*Cin, Cout]

  def chunk(images):
    windows = _width_unfold(images, k[2], strides[2], out[2])    # [n, H+, W', kW*kT*Cin]
    y = sum(_row_tap(windows, dh, strides[1], out[1]) @ wr[dh] for dh in range(k[1]))
    return y.reshape(images.shape[0], *out[1:], cout)

  per_chunk = _images_per_chunk(out)
  if images.shape[0] <= per_chunk:     # One chunk: no loop to compile.
    y = chunk(images)
  else:    # `lax.map` hands each call one image; chunk() takes it as a batch of one.
    y = lax.map(lambda image: chunk(image[None])[0], images, batch_size=per_chunk)
  # y: [T'*B, H', W', Cout]
  return jnp.moveaxis(y.reshape(out[0], x.shape[0], *y.shape[1:]), 0, 1)


def _input_grad(gy, w, in_shape, strides, padding, groups):
  """Cotangent of x, [B, T, H, W, Cin], from `gy` [B, T', H', W', Cout].

  Along an axis with stride s, padding lo and kernel size k, input position
  p = i + lo = s * q + r receives gy[q - m] * w[s * m + r]: for each phase r
  that is a stride-1 (full) convolution of gy with the flipped sub-kernel
  w[r::s]. The s^3 phase results are interleaved into the padded input grid
  and the padding is cut off.
  """
  k, cin_g, cout = w.shape[:3], w.shape[3], w.shape[4]
  b, out = gy.shape[0], gy.shape[1:4]
  cin = cin_g * groups
  q = [-(-(lo + n) // s) for n, s, (lo, _) in zip(in_shape, strides, padding)]
  phases = []
  for r in itertools.product(*map(range, strides)):
    sub = w[r[0]::strides[0], r[1]::strides[1], r[2]::strides[2]]
    if 0 in sub.shape[:3]:     # This phase sees no tap (k < s): its inputs get no gradient.
      phases.append(jnp.zeros((b, *q, cin), gy.dtype))
      continue
    ks = sub.shape[:3]
    # Flip the taps and swap the channel roles within each group.
    sub = sub[::-1, ::-1, ::-1].reshape(*ks, cin_g, groups, cout // groups)
    sub = sub.transpose(0, 1, 2, 5, 4, 3).reshape(*ks, cout // groups, cin)
    pad = [(kd - 1, qd - od) for kd, qd, od in zip(ks, q, out)]
    phases.append(_forward(_crop_negative(gy, pad), sub, (1, 1, 1),
                           [(max(lo, 0), max(hi, 0)) for lo, hi in pad], groups))
  grid = jnp.stack(phases).reshape(*strides, b, *q, cin)          # [sT, sH, sW, B, qT, qH, qW, Cin]
  grid = grid.transpose(3, 4, 0, 5, 1, 6, 2, 7).reshape(
      b, *(qd * s for qd, s in zip(q, strides)), cin)             # [B, T+, H+, W+, Cin]
  start = (0, *(lo for lo, _ in padding), 0)
  return lax.slice(grid, start, (b, *(lo + n for (lo, _), n in zip(padding, in_shape)), cin))


def _crop_negative(x, pad):
  """Applies the negative parts of `pad` (crops) to the spatial axes of x."""
  return _pad(x, [(min(lo, 0), min(hi, 0)) for lo, hi in pad])


def _kernel_grad(x, gy, k, strides, padding, groups):
  """Cotangent of the kernel, [kT, kH, kW, Cin/g, Cout].

  dw[tap] = sum over batch and output positions of x_pad[s * p + tap] (x) gy[p]:
  one contraction per tap, or per kH row tap over chunked (kW, kT, Cin)
  windows when Cin is small.
  """
  cin, cout = x.shape[-1], gy.shape[-1]
  cin_g = cin // groups
  if groups == 1 and k[0] * k[1] * k[2] * cin <= _PATCH_MAX_DEPTH and k != (1, 1, 1):
    return _patch_kernel_grad(x, gy, k, strides, padding)
  out = gy.shape[1:4]
  taps = itertools.product(*map(range, k))
  if groups == 1:
    xp = _pad(x, padding)
    dw = [jnp.einsum('bthwi,bthwo->io', _tap(xp, t, strides, out), gy) for t in taps]
    return jnp.stack(dw).reshape(*k, cin, cout)
  # Groups lead so each tap is one batched matrix product with a long contraction.
  xg = _pad_groups_first(jnp.moveaxis(x.reshape(*x.shape[:4], groups, cin_g), 4, 0), padding)
  gg = jnp.moveaxis(gy.reshape(*gy.shape[:4], groups, cout // groups), 4, 0)  # [G, B, T', H', W', Cout/g]
  dw = [jnp.einsum('gbthwi,gbthwo->igo', _tap_groups_first(xg, t, strides, out), gg)
        for t in taps]
  return jnp.stack(dw).reshape(*k, cin_g, cout)


def _patch_kernel_grad(x, gy, k, strides, padding):
  """Kernel cotangent of `_patch_forward`: windows^T @ gy per row tap, accumulated by chunk."""
  cout = gy.shape[-1]
  images, out = _time_unfold(x, k, strides, padding)              # [T'*B, H+, W+, kT*Cin]
  gi = jnp.moveaxis(gy, 1, 0).reshape(images.shape[0], -1, cout)  # [T'*B, H'*W', Cout]
  per_chunk = _images_per_chunk(out)
  whole = images.shape[0] // per_chunk * per_chunk if images.shape[0] > per_chunk else 0

  def accumulate(dw, chunk):
    images, g = chunk
    windows = _width_unfold(images, k[2], strides[2], out[2])      # [n, H+, W', kW*kT*Cin]
    g = g.reshape(-1, cout)
    return dw + jnp.stack([_row_tap(windows, dh, strides[1], out[1]).T @ g
                           for dh in range(k[1])]), None

  dw = jnp.zeros((k[1], k[2] * k[0] * x.shape[-1], cout), x.dtype)
  if whole:    # The whole chunks in a loop (one chunk or less: no loop to compile).
    dw, _ = lax.scan(accumulate, dw, (images[:whole].reshape(-1, per_chunk, *images.shape[1:]),
                                      gi[:whole].reshape(-1, per_chunk, *gi.shape[1:])))
  if whole < images.shape[0]:
    dw, _ = accumulate(dw, (images[whole:], gi[whole:]))
  return dw.reshape(k[1], k[2], k[0], x.shape[-1], cout).transpose(2, 0, 1, 3, 4)
