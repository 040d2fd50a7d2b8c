"""Per-layer class activation maps from a layer's activations and gradients.

Pure functions of A [B, t, h, w, C] and d(score)/dA: each gives a layer's
non-negative map at the layer's own resolution; `gla_jax.explain.attention`
up-samples, normalises and aggregates them. The masked methods (Score-CAM,
Ablation-CAM), which need forward passes instead of a gradient, are in
`gla_jax.explain.masked_cams`.

References:
  Selvaraju et al. "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
  Chattopadhay et al. "Grad-CAM++: Improved Visual Explanations for Deep
    Convolutional Networks", WACV 2018.
  Jiang et al. "LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization", IEEE TIP 2021.
  Draelos, Carin. "Use HiResCAM instead of Grad-CAM for faithful explanations
    of convolutional neural networks", arXiv:2011.08891, 2020.
  Fu et al. "Axiom-based Grad-CAM: Towards Accurate Visualization and
    Explanation of CNNs", BMVC 2020 (XGrad-CAM).
  Muhammad, Yeasin. "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN 2020.
  Gildenblat et al. pytorch-grad-cam (GradCAMElementWise),
    https://github.com/jacobgil/pytorch-grad-cam.
"""
import jax
import jax.numpy as jnp

# Methods that are a function of one layer's activation (and gradient): `layer_map`.
GRADIENT_METHODS = ('gradcam', 'gradcam_pp', 'layercam', 'hirescam', 'xgradcam',
                    'gradcam_elementwise', 'eigencam')
# Methods that run masked forward passes: `masked_cams.masked_cam`.
MASKED_METHODS = ('scorecam', 'ablationcam')
METHODS = GRADIENT_METHODS + MASKED_METHODS
# Old names still accepted; `canonical_method` maps them to their METHODS name.
METHOD_ALIASES = {'elementwise': 'hirescam'}
POOLINGS = ('global', 'time')

_EPS = 1e-7


def canonical_method(method: str) -> str:
  """The METHODS name of `method` (an alias such as `elementwise` becomes `hirescam`)."""
  return METHOD_ALIASES.get(method, method)


def layer_map(activation: jax.Array, gradient: jax.Array, method: str = 'gradcam',
              pooling: str = 'global') -> jax.Array:
  """Class activation map of one layer at its own resolution.

  Args:
    activation: A, [B, t, h, w, C].
    gradient: d(score)/dA, same shape (unused by `eigencam`).
    method: `gradcam` (w_k = mean of gradients; ReLU(sum_k w_k A_k)),
      `gradcam_pp` (Grad-CAM++ weights, exponential-score closed form),
      `layercam` (ReLU(sum_k ReLU(g_k) * A_k), per position),
      `hirescam` (alias `elementwise`: ReLU(sum_k g_k * A_k), per position),
      `xgradcam` (w_k = sum(A_k / (sum(A_k) + eps) * g_k); ReLU(sum_k w_k A_k)),
      `gradcam_elementwise` (sum_k ReLU(g_k * A_k), per position), or
      `eigencam` (the activations' first principal component, see `eigen_map`).
    pooling: where channel weights are pooled for `gradcam`, `gradcam_pp` and
      `xgradcam`: `global` over (t, h, w), `time` over (h, w) per time slice
      (as mmaction2 and SlowFast do).

  Returns:
    [B, t, h, w] float32, non-negative.
  """
  method = canonical_method(method)
  a = activation.astype(jnp.float32)
  g = gradient.astype(jnp.float32)
  if pooling not in POOLINGS:
    raise ValueError(f'Unknown pooling {pooling!r}; choose one of {POOLINGS}.')
  axes = (1, 2, 3) if pooling == 'global' else (2, 3)
  if method == 'gradcam':
    weights = jnp.mean(g, axis=axes, keepdims=True)               # [B, 1|t, 1, 1, C]
    cam = jnp.sum(weights * a, axis=-1)
  elif method == 'gradcam_pp':
    # alpha = g^2 / (2 g^2 + sum(A) g^3) (Chattopadhay et al., eq. 19), zero where g = 0.
    g2, g3 = g * g, g * g * g
    sum_a = jnp.sum(a, axis=axes, keepdims=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + _EPS)
    alpha = jnp.where(g != 0, alpha, 0.0)
    weights = jnp.sum(alpha * jax.nn.relu(g), axis=axes, keepdims=True)
    cam = jnp.sum(weights * a, axis=-1)
  elif method == 'layercam':
    cam = jnp.sum(jax.nn.relu(g) * a, axis=-1)
  elif method == 'hirescam':
    cam = jnp.sum(g * a, axis=-1)
  elif method == 'xgradcam':
    # Fu et al., eq. 8; eps as pytorch-grad-cam's XGradCAM.
    sum_a = jnp.sum(a, axis=axes, keepdims=True)
    weights = jnp.sum(a / (sum_a + _EPS) * g, axis=axes, keepdims=True)
    cam = jnp.sum(weights * a, axis=-1)
  elif method == 'gradcam_elementwise':
    cam = jnp.sum(jax.nn.relu(g * a), axis=-1)
  elif method == 'eigencam':
    cam = eigen_map(a)
  else:
    hint = (' (masked methods run forward passes: masked_cams.masked_cam)'
            if method in MASKED_METHODS else '')
    raise ValueError(f'Unknown method {method!r} for layer_map{hint}; choose one of '
                     f'{GRADIENT_METHODS}.')
  return jax.nn.relu(cam)


def top_eigenvector(matrix: jax.Array, squarings: int = 10) -> jax.Array:
  """Unit top eigenvector [B, n] of symmetric positive semi-definite matrices [B, n, n].

  Repeated squaring, M^(2^squarings) (each square rescaled by its trace), is
  close to lambda^k v v^T: its largest column is a multiple of v, refined by
  one more product. Matrix products only, where `jnp.linalg.eigh` is a LAPACK
  call: on several CPU devices a batch-sharded explanation with it never
  finished (XLA replicated the call). Eigenvalue ratios lambda_2 / lambda_1 up
  to ~0.99 leave < 1e-4 of the second component. Its sign is arbitrary.
  """
  highest = jax.lax.Precision.HIGHEST

  def rescaled(m):
    trace = jnp.trace(m, axis1=-2, axis2=-1)[:, None, None]
    return m / jnp.where(trace > 0, trace, 1.0)

  power = rescaled(matrix)
  for _ in range(squarings):
    power = rescaled(jnp.einsum('bij,bjk->bik', power, power, precision=highest))
  columns = jnp.linalg.norm(power, axis=1)                                  # [B, n]
  vector = jnp.take_along_axis(power, jnp.argmax(columns, axis=1)[:, None, None], axis=2)[..., 0]
  vector = jnp.einsum('bij,bj->bi', matrix, vector, precision=highest)
  norm = jnp.linalg.norm(vector, axis=1, keepdims=True)
  return vector / jnp.where(norm > 0, norm, 1.0)


def eigen_map(activation: jax.Array) -> jax.Array:
  """Eigen-CAM before its ReLU: each clip's activations on their first principal component.

  Per clip, X = A reshaped to [P = t*h*w, C] and centred over the positions
  (as pytorch-grad-cam's `get_2d_projection`); the map is X v, v the top
  eigenvector of X^T X. A principal component's sign is arbitrary; it is fixed
  so that the projection correlates positively with the channel sum of A
  (sum_p (X v)_p (X 1)_p >= 0, equivalently sum_k v_k >= 0). The eigenvector
  (`top_eigenvector`) comes from the smaller of the [C, C] covariance and the [P, P] Gram matrix
  X X^T (whose top eigenvector u gives X v = sqrt(lambda) u): C = 2048 on
  ResNeXt-101's layer4, where P is small; P is large on conv1, where C = 64.

  Args:
    activation: [B, t, h, w, C].

  Returns:
    [B, t, h, w] float32, of either sign.
  """
  a = activation.astype(jnp.float32)
  batch, positions, channels = a.shape[0], a.shape[1] * a.shape[2] * a.shape[3], a.shape[-1]
  x = a.reshape(batch, positions, channels)
  x = x - jnp.mean(x, axis=1, keepdims=True)
  highest = jax.lax.Precision.HIGHEST
  if positions <= channels:
    gram = jnp.einsum('bpc,bqc->bpq', x, x, precision=highest)
    vector = top_eigenvector(gram)
    value = jnp.einsum('bp,bpq,bq->b', vector, gram, vector, precision=highest)[:, None]
    projection = vector * jnp.sqrt(jnp.maximum(value, 0.0))
  else:
    covariance = jnp.einsum('bpc,bpd->bcd', x, x, precision=highest)
    projection = jnp.einsum('bpc,bc->bp', x, top_eigenvector(covariance), precision=highest)
  agreement = jnp.sum(projection * jnp.sum(x, axis=-1), axis=1, keepdims=True)
  projection = jnp.where(agreement < 0, -projection, projection)
  return projection.reshape(a.shape[:4])
