"""Input attributions against captum 0.9.0 on the PyTorch reference network, and their errors.

The network is tests/torch_resnext.py with random weights and BatchNorm
statistics, loaded into Flax through the published checkpoint layout (as
test_attention_parity.py does): the tiny preset cut to its first stage with a
3x3x3 stem (conv, BatchNorm, max pool, a grouped bottleneck with a projection
shortcut, the head), which compiles in a fifth of the time of the four-stage
one: the file's time is nearly all compiling, one program per method and
option set, so the tests share programs where they can. captum runs on NCDHW
clips, ours on NDHWC. SmoothGrad is compared on the same noise: `torch.normal`, which captum's
NoiseTunnel draws its noise with, is patched to return sigma times our
standard normal draws in captum's order (clip-major, `repeat_interleave`).
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')
captum_attr = pytest.importorskip('captum.attr')
from tests import torch_resnext  # noqa: E402

from gla_jax import explain  # noqa: E402
from gla_jax import models  # noqa: E402
from gla_jax import parallel  # noqa: E402
from gla_jax.models import convert  # noqa: E402

CLIP = (4, 4, 16, 16, 3)
NUM_CLASSES = 6
SMALL = dict(stage_sizes=(1,), stem_kernel=(3, 3, 3))   # The tiny preset, cut.
SPREAD = 4.0          # Every clip spans [-2, 2]: one SmoothGrad sigma for the batch.
NOISE_STD = 0.1
SAMPLES = 5
STEPS = 32
COLOUR = (0.1, -0.2, 0.3)    # Occlusion's baseline: one value per channel.
PATCH, STRIDE = (2, 8, 8), (1, 4, 6)    # W: windows at 0, 6, 12, the last one cut at 16.


def _clips(seed, shape=CLIP):
  """Random clips, each rescaled to span [-SPREAD / 2, SPREAD / 2]."""
  x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  low = x.min(axis=(1, 2, 3, 4), keepdims=True)
  high = x.max(axis=(1, 2, 3, 4), keepdims=True)
  return ((x - low) / (high - low) * SPREAD - SPREAD / 2).astype(np.float32)


def _ncdhw(x):
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _ndhwc(t):
  return np.moveaxis(t.detach().numpy(), 1, -1)


def _close(ours, ref, rel=1e-4):
  """Equal within rel of the reference's largest magnitude."""
  ref = np.asarray(ref)
  assert np.abs(ref).max() > 0, 'the reference is all zeros: the test would prove nothing'
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=rel * np.abs(ref).max())


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """The reference net, its Flax twin and variables, clips, and the argmax targets."""
  net = torch_resnext.create('tiny', num_classes=NUM_CLASSES, **SMALL)
  torch_resnext.randomize_(net, seed=5)
  net.eval()
  path = tmp_path_factory.mktemp('attribution') / 'tiny.pth'
  torch_resnext.save_published_checkpoint(net, path, arch='resnext-tiny')
  model = models.ResNeXt3DTiny(num_classes=NUM_CLASSES, **SMALL)
  variables = convert.torch_to_flax(convert.load_torch_checkpoint(path), model)
  clips = _clips(0)
  with torch.no_grad():
    logits = net(_ncdhw(clips))
  return dict(net=net, model=model, variables=variables, clips=clips,
              logits=logits.numpy(), target=logits.argmax(dim=1))


@pytest.fixture(scope='module')
def ours(setup):
  """Each method's attribution of the clips (one compile each, shared by the tests)."""
  noise = np.random.default_rng(1).normal(size=(CLIP[0], SAMPLES) + CLIP[1:]).astype(np.float32)
  run = lambda method, **kw: explain.attribute(setup['model'], setup['variables'],
                                               setup['clips'], method, **kw)
  return dict(
      saliency=run('saliency'),
      integrated_gradients=run('integrated_gradients', steps=STEPS, chunk_size=4),
      smoothgrad=run('smoothgrad', samples=SAMPLES, noise_std=NOISE_STD, noise=noise,
                     chunk_size=2),
      occlusion=run('occlusion', patch=PATCH, stride=STRIDE, baseline=np.float32(COLOUR),
                    chunk_size=8),
      noise=noise)


def test_saliency_and_integrated_gradients_match_captum(setup, ours):
  net, x, target = setup['net'], _ncdhw(setup['clips']), setup['target']
  for method in ('saliency', 'integrated_gradients'):
    np.testing.assert_array_equal(ours[method].target, target.numpy())
    np.testing.assert_allclose(ours[method].logits, setup['logits'], rtol=1e-4, atol=1e-4)
  _close(ours['saliency'].values,
         _ndhwc(captum_attr.Saliency(net).attribute(x, target=target, abs=True)))
  ref = captum_attr.IntegratedGradients(net).attribute(
      x, target=target, n_steps=STEPS, method='riemann_trapezoid')
  # captum weighs the same points by 1/steps (ends halved), ours by the trapezoid rule's
  # 1/(steps - 1): its values are ours times (steps - 1) / steps.
  _close(ours['integrated_gradients'].values * (STEPS - 1) / STEPS, _ndhwc(ref))


def test_smoothgrad_matches_captum_noise_tunnel_on_the_same_noise(setup, ours, monkeypatch):
  sigma = NOISE_STD * SPREAD
  z = torch.from_numpy(np.ascontiguousarray(np.moveaxis(
      ours['noise'].reshape((-1,) + CLIP[1:]), -1, 1)))       # [B * S, 3, T, H, W], clip-major.

  def same_noise(mean, std):
    assert mean == 0 and tuple(std.shape) == tuple(z.shape), (mean, std.shape)
    return std * z

  monkeypatch.setattr(torch, 'normal', same_noise)
  ref = captum_attr.NoiseTunnel(captum_attr.Saliency(setup['net'])).attribute(
      _ncdhw(setup['clips']), nt_type='smoothgrad', nt_samples=SAMPLES, stdevs=sigma,
      target=setup['target'])
  _close(ours['smoothgrad'].values, _ndhwc(ref))


def test_occlusion_matches_captum_and_map_is_normalised_channel_sum(setup, ours):
  ref = captum_attr.Occlusion(setup['net']).attribute(
      _ncdhw(setup['clips']), sliding_window_shapes=(3,) + PATCH, strides=(3,) + STRIDE,
      baselines=torch.tensor(COLOUR).reshape(1, 3, 1, 1, 1), target=setup['target'],
      perturbations_per_eval=32)
  _close(ours['occlusion'].values, _ndhwc(ref))
  magnitude = np.abs(np.asarray(ours['occlusion'].values)).sum(-1)
  low = magnitude.min(axis=(1, 2, 3), keepdims=True)
  high = magnitude.max(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(ours['occlusion'].map, (magnitude - low) / (high - low), atol=1e-6)


def test_integrated_gradients_complete_as_steps_grow(setup):
  """sum of values -> score(x) - score(baseline), captum's convergence delta, with steps."""
  with torch.no_grad():
    base = setup['net'](torch.zeros_like(_ncdhw(setup['clips'])))
  rows = np.arange(CLIP[0])
  target = setup['target'].numpy()
  gap = setup['logits'][rows, target] - base.numpy()[rows, target]
  errors = {}
  for steps in (4, 128):
    # steps is an argument of the compiled program: the same chunk size reuses ours' program.
    result = explain.attribute(setup['model'], setup['variables'], setup['clips'],
                               steps=steps, chunk_size=4)
    total = np.asarray(result.values).sum(axis=(1, 2, 3, 4))
    errors[steps] = float(np.mean(np.abs(total - gap) / np.abs(gap)))
  # A ReLU network's path integrand has kinks, so the error shrinks unevenly with steps.
  assert errors[128] < 1e-2 and errors[128] < errors[4] / 4, errors


def test_smoothgrad_data_parallel_and_its_documented_noise(setup, ours):
  """Sharded over 4 devices, the noise drawn from rng chunk by chunk (as `attribute` says).

  Chunk c of the samples draws z = normal(fold_in(rng, c), [B, chunk, T, H, W, 3]);
  giving those draws as `noise` reuses the unsharded program of `ours`.
  """
  model, variables, clips = setup['model'], setup['variables'], setup['clips']
  chunk, key = 2, jax.random.key(7)
  draws = np.concatenate([jax.random.normal(jax.random.fold_in(key, c), CLIP[:1] + (chunk,)
                                            + CLIP[1:]) for c in range(-(-SAMPLES // chunk))],
                         axis=1)[:, :SAMPLES]
  alone = explain.attribute(model, variables, clips, 'smoothgrad', samples=SAMPLES,
                            noise_std=NOISE_STD, noise=draws, chunk_size=chunk)
  mesh = parallel.make_mesh(4)
  kwargs = dict(method='smoothgrad', samples=SAMPLES, noise_std=NOISE_STD, chunk_size=chunk)
  sharded = [explain.attribute(model, parallel.replicate(variables, mesh),
                               parallel.shard_batch(clips, mesh), rng=k, **kwargs)
             for k in (key, jax.random.key(8))]
  assert len(sharded[0].values.sharding.device_set) == 4
  _close(sharded[0].values, alone.values, rel=1e-5)
  np.testing.assert_array_equal(sharded[0].target, alone.target)
  assert not np.allclose(sharded[1].values, alone.values, rtol=0.1)
  assert not np.allclose(alone.values, ours['smoothgrad'].values, rtol=0.1)


@pytest.mark.parametrize('kwargs, message', [
    (dict(method='lime'), "choose one of ('saliency', 'integrated_gradients'"),
    (dict(steps=1), 'steps >= 2'),
    (dict(method='smoothgrad', samples=0), 'samples >= 1'),
    (dict(chunk_size=0), 'chunk_size=0'),
    (dict(method='occlusion', patch=(8, 4, 4)), 'larger than the clip'),
    (dict(method='occlusion', patch=(2, 4, 4), stride=(0, 2, 2)), 'must be >= 1'),
    (dict(method='occlusion', patch=(2, 4, 4), stride=(1, 5, 2)), 'use stride <= patch'),
    (dict(method='occlusion', patch=(2, 4)), 'three integers'),
    (dict(method='smoothgrad', samples=2, noise=np.zeros((2, 3) + CLIP[1:])), 'expected'),
    (dict(target=[0, 1, 2, NUM_CLASSES]), 'one class in [0, 6)'),
    (dict(target=[0, 1]), '(4 clips)'),
    (dict(baseline=np.zeros((5, 3))), 'does not broadcast'),
])
def test_bad_options_say_the_fix(setup, kwargs, message):
  with pytest.raises(ValueError) as error:
    explain.attribute(setup['model'], setup['variables'], setup['clips'], **kwargs)
  assert message in str(error.value)


def test_bad_clips_and_variables(setup):
  with pytest.raises(ValueError, match='add a batch axis'):
    explain.attribute(setup['model'], setup['variables'], setup['clips'][0])
  with pytest.raises(TypeError, match='floating point'):
    explain.attribute(setup['model'], setup['variables'], setup['clips'].astype(np.uint8))
  with pytest.raises(ValueError, match='batch_stats'):
    explain.attribute(setup['model'], {'params': setup['variables']['params']}, setup['clips'])
