"""The gradient CAM methods against pytorch-grad-cam, hand-made arrays and end to end.

pytorch-grad-cam 1.5.7 (tests/grad_cam_reference.py) runs on the PyTorch
reference network (tests/torch_resnext.py) with 5-D activations; its raw
per-layer maps (`get_cam_image` on the activations and gradients it captured,
then the ReLU its `compute_cam_per_layer` applies, before any scaling) are
compared with `layer_map` on the same activations and gradients. On 5-D
activations GradCAM, HiResCAM, GradCAMElementWise, XGradCAM, EigenCAM, LayerCAM
and GradCAMPlusPlus run (the last is left out: its eps 1e-6 in eq. 19, ours
1e-7, changes the weights by percents at these gradients' size); ScoreCAM and
AblationCAM crash (tests/explain/test_masked_cams.py), and so does ShapleyCAM
("Trying to backward through the graph a second time"; not implemented here).
That the Flax network
gives the PyTorch network's activations and gradients is
tests/explain/test_attention_parity.py's check.
"""
import copy

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
from tests import grad_cam_reference  # noqa: E402
from tests.explain.test_masked_cams import one_stage_networks  # noqa: E402

from configs import tiny  # noqa: E402
from gla_jax import explain  # noqa: E402
from gla_jax import parallel  # noqa: E402
from gla_jax import models  # noqa: E402
from gla_jax import validation  # noqa: E402
from gla_jax.explain import cam_methods  # noqa: E402

# pytorch-grad-cam class -> our method, for the classes that run on 5-D activations.
REFERENCE_CLASSES = {'GradCAM': 'gradcam', 'HiResCAM': 'hirescam',
                     'GradCAMElementWise': 'gradcam_elementwise', 'XGradCAM': 'xgradcam',
                     'EigenCAM': 'eigencam', 'LayerCAM': 'layercam'}
# conv1 [4, 8, 8] x 16: P > C (covariance); layer1 [2, 4, 4] x 128: P < C (Gram).
LAYERS = ('conv1', 'layer1')


def _target_modules(net):
  # The network calls its blocks, not the stage containers, so hooks go on the last block.
  return [net.relu, net.layer1[-1]]


@pytest.fixture(scope='module')
def reference_cams():
  """{class name: ([A], [g], [raw cam])} per layer of LAYERS, NCDHW numpy, from pytorch-grad-cam."""
  grad_cam = grad_cam_reference.load()
  from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
  net, _, _, clips = one_stage_networks()        # PyTorch's one-stage tiny ResNeXt, 2 clips
  clips = torch.from_numpy(clips.transpose(0, 4, 1, 2, 3).copy())
  targets = [ClassifierOutputTarget(int(c)) for c in net(clips).argmax(dim=1)]
  runs = {}
  for name in REFERENCE_CLASSES:
    model = copy.deepcopy(net)
    layers = _target_modules(model)
    cam = getattr(grad_cam, name)(model, layers)
    cam(clips, targets)                  # The whole pipeline runs on 5-D activations.
    captured = cam.activations_and_grads
    acts = [a.numpy() for a in captured.activations]
    grads = [g.numpy() for g in captured.gradients] or [None] * len(acts)   # EigenCAM: none.
    raw = [cam.get_cam_image(clips, layer, targets, a, g, False)
           for layer, a, g in zip(layers, acts, grads)]
    runs[name] = acts, grads, raw
    captured.release()
  return runs


def _channels_last(x):
  return np.moveaxis(x, 1, -1)


@pytest.mark.parametrize('reference', sorted(set(REFERENCE_CLASSES) - {'EigenCAM'}))
def test_gradient_methods_match_pytorch_grad_cam(reference_cams, reference):
  acts, grads, raw = reference_cams[reference]
  for name, a, g, ref in zip(LAYERS, acts, grads, raw):
    ref = np.maximum(ref, 0)
    assert ref.max() > 0, f'{name}: an empty reference map proves nothing'
    ours = np.asarray(explain.layer_map(_channels_last(a), _channels_last(g),
                                        REFERENCE_CLASSES[reference]))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.max(),
                               err_msg=f'{reference} at {name}')


def test_eigencam_matches_pytorch_grad_cam_up_to_the_documented_sign(reference_cams):
  acts, _, raw = reference_cams['EigenCAM']
  for name, a, projection in zip(LAYERS, acts, raw):
    # pytorch-grad-cam's SVD leaves the sign arbitrary; ours correlates with the channel sum.
    channel_sum = a.sum(axis=1)
    signs = np.sign([np.corrcoef(p.ravel(), s.ravel())[0, 1]
                     for p, s in zip(projection, channel_sum)])
    expected = np.maximum(signs[:, None, None, None] * projection, 0)
    ours = np.asarray(explain.layer_map(_channels_last(a), np.zeros_like(_channels_last(a)),
                                        'eigencam'))
    assert expected.max() > 0
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-4 * expected.max(),
                               err_msg=name)


# --- hand-made arrays ---------------------------------------------------------

def test_xgradcam_known_weights_and_loops():
  # One non-zero voxel per channel: A_k / sum(A_k) is 1 there, so w_k is g_k at that voxel.
  act = np.zeros((1, 2, 2, 2, 2), np.float32)
  act[0, 0, 0, 0, 0], act[0, 1, 1, 1, 1] = 3.0, 2.0
  grad = np.full_like(act, 5.0)
  grad[0, 0, 0, 0, 0], grad[0, 1, 1, 1, 1] = 0.5, -0.25
  expected = np.zeros((1, 2, 2, 2), np.float32)
  expected[0, 0, 0, 0] = 0.5 * 3.0               # channel 1's weight is negative: ReLU
  np.testing.assert_allclose(explain.layer_map(act, grad, 'xgradcam'), expected, rtol=1e-5)
  # Random arrays against the formula with loops over channels (and time slices).
  rng = np.random.default_rng(4)
  act = rng.random((2, 3, 2, 2, 4)).astype(np.float32)
  grad = rng.normal(size=act.shape).astype(np.float32)
  for pooling, slices in (('global', [slice(None)]), ('time', [slice(t, t + 1) for t in range(3)])):
    expected = np.zeros(act.shape[:4], np.float32)
    for b in range(2):
      for window in slices:
        a, g = act[b, window], grad[b, window]
        for c in range(4):
          weight = np.sum(a[..., c] / (a[..., c].sum() + 1e-7) * g[..., c])
          expected[b, window] += weight * a[..., c]
    np.testing.assert_allclose(explain.layer_map(act, grad, 'xgradcam', pooling),
                               np.maximum(expected, 0), rtol=1e-4, atol=1e-6, err_msg=pooling)


def test_gradcam_elementwise_keeps_what_hirescam_cancels():
  act = np.ones((1, 1, 1, 2, 2), np.float32)
  grad = np.zeros_like(act)
  grad[0, 0, 0, 0] = [2.0, -1.5]        # opposite evidence at one position
  grad[0, 0, 0, 1] = [-1.0, -1.0]
  np.testing.assert_allclose(explain.layer_map(act, grad, 'hirescam')[0, 0, 0], [0.5, 0.0])
  np.testing.assert_allclose(explain.layer_map(act, grad, 'gradcam_elementwise')[0, 0, 0],
                             [2.0, 0.0])
  np.testing.assert_array_equal(explain.layer_map(act, grad, 'elementwise'),
                                explain.layer_map(act, grad, 'hirescam'))


# The shapes of conv1 (covariance) and layer1 (Gram) above: their compiles are reused.
@pytest.mark.parametrize('shape', [(2, 4, 8, 8, 16), (2, 2, 4, 4, 128)])
@pytest.mark.parametrize('flip', [1.0, -1.0])
def test_eigencam_of_a_rank_one_activation(shape, flip):
  # A[p, c] = s_p u_c + m_c: centred, it is (s - mean s) u^T, whose principal axis is u.
  rng = np.random.default_rng(5)
  positions, channels = int(np.prod(shape[1:4])), shape[-1]
  s = rng.normal(size=(shape[0], positions))
  u = flip * (rng.random(channels) + 0.5)          # flip = -1: the channel sum runs against s
  act = (s[..., None] * u + rng.normal(size=channels)).reshape(shape).astype(np.float32)
  projection = ((s - s.mean(axis=1, keepdims=True)) * np.linalg.norm(u)
                * np.sign(u.sum()))                 # the sign: sum_k v_k > 0
  expected = np.maximum(projection, 0).reshape(shape[:4])
  ours = np.asarray(explain.layer_map(act, np.zeros_like(act), 'eigencam'))
  np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-4)


def test_top_eigenvector_matches_numpy_eigh():
  # Symmetric PSD matrices with eigenvalue ratios from 0.5 to 0.99 between the top two.
  rng = np.random.default_rng(3)
  matrices, expected = [], []
  for ratio, n in ((0.5, 5), (0.9, 32), (0.99, 64)):
    basis, _ = np.linalg.qr(rng.normal(size=(n, n)))
    values = np.concatenate([[1.0, ratio], rng.uniform(0, ratio * 0.9, n - 2)])
    matrix = (basis * values) @ basis.T
    vector = np.linalg.eigh(matrix)[1][:, -1]
    ours = np.asarray(cam_methods.top_eigenvector(jnp.asarray(matrix[None], jnp.float32)))[0]
    np.testing.assert_allclose(np.abs(ours @ vector), 1.0, atol=1e-4, err_msg=str(ratio))
  zero = np.asarray(cam_methods.top_eigenvector(jnp.zeros((1, 3, 3))))
  assert np.all(np.isfinite(zero))


def test_method_names_and_errors():
  assert explain.METHODS[:4] == ('gradcam', 'gradcam_pp', 'layercam', 'hirescam')
  assert set(explain.METHODS) == set(explain.GRADIENT_METHODS) | set(explain.MASKED_METHODS)
  assert explain.canonical_method('elementwise') == 'hirescam'
  act = np.ones((1, 1, 1, 1, 2), np.float32)
  with pytest.raises(ValueError, match='masked_cams.masked_cam'):
    explain.layer_map(act, act, 'scorecam')
  with pytest.raises(ValueError, match='xgradcam'):
    explain.layer_map(act, act, 'gradcam++')
  model = models.ResNeXt3DTiny(num_classes=3)
  with pytest.raises(ValueError, match='chunk_size=0'):
    explain.make_explainer(model, 'scorecam', chunk_size=0)
  for method, chunk_size in (('elementwise', 32), ('ablationcam', 1)):
    config = tiny.get_config()
    config.explain.method, config.explain.chunk_size = method, chunk_size
    validation.validate(config, num_devices=4)
  config.explain.chunk_size = 0
  with pytest.raises(ValueError, match='chunk_size'):
    validation.validate(config, num_devices=4)


# --- end to end -----------------------------------------------------------------

@pytest.mark.parametrize('method', ['hirescam', 'xgradcam', 'gradcam_elementwise', 'eigencam'])
def test_explain_runs_every_gradient_method(method):
  # One stage (conv1, layer1): the same code as the tiny preset, a quarter of its compile.
  _, model, variables, clips = one_stage_networks()
  result = explain.explain(model, variables, clips, method=method)
  assert result.layer_names == ('layer1', 'conv1')
  for name in result.layer_names:
    layer = np.asarray(result.layer_maps[name])
    assert layer.shape == (2, 4, 16, 16) and layer.min() >= 0 and layer.max() == 1, name
  assert np.all(result.has_signal)
  if method == 'eigencam':
    # Matrix products only: with LAPACK's eigh, XLA replicated the call and a batch sharded
    # over the 4 CPU devices never finished.
    mesh = parallel.make_mesh(4)
    sharded = explain.explain(model, parallel.replicate(variables, mesh), parallel.shard_batch(
        np.repeat(np.asarray(clips), 2, axis=0), mesh), method=method)
    for name in result.layer_names:
      np.testing.assert_allclose(sharded.layer_maps[name][::2], result.layer_maps[name],
                                 atol=1e-4, err_msg=name)
  if method == 'hirescam':
    alias = explain.explain(model, variables, clips, method='elementwise')
    for name in result.layer_names:
      np.testing.assert_array_equal(alias.layer_maps[name], result.layer_maps[name])
