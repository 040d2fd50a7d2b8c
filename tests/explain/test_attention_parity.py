"""Grad-CAM maps against a PyTorch computation of the same definition.

The network is the independent PyTorch reference (`tests/torch_resnext.py`)
with random weights and BatchNorm statistics, loaded into Flax through the
published checkpoint layout; the maps are computed in PyTorch with autograd and
`F.interpolate(mode='trilinear', align_corners=False)` as the definition says.
"""
import numpy as np
import pytest

torch = pytest.importorskip('torch')
from tests import torch_resnext

from gla_jax import explain
from gla_jax import models
from gla_jax.models import convert  # noqa: E402

STAGES = ('layer4', 'layer3', 'layer2', 'layer1', 'conv1')


def _torch_gradcam(net, clips_ncdhw, pooling):
  """Per-layer Grad-CAM maps [B, T, H, W] in [0, 1] and the argmax target, in PyTorch."""
  logits, taps = net(clips_ncdhw, return_taps=True)
  target = logits.argmax(dim=1)
  score = logits.gather(1, target[:, None]).sum()
  grads = torch.autograd.grad(score, [taps[name] for name in STAGES])
  size = clips_ncdhw.shape[2:]
  maps = {}
  for name, grad in zip(STAGES, grads):
    act = taps[name]                                             # [B, C, t, h, w]
    dims = (2, 3, 4) if pooling == 'global' else (3, 4)
    weights = grad.mean(dim=dims, keepdim=True)
    cam = torch.relu((weights * act).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=size, mode='trilinear',
                                          align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2, 3), keepdim=True)
    span = cam.amax(dim=(1, 2, 3), keepdim=True) - low
    maps[name] = torch.where(span > 0, (cam - low) / span.clamp_min(1e-30), torch.zeros_like(cam))
  return {k: v.detach().numpy() for k, v in maps.items()}, target.numpy(), logits.detach().numpy()


@pytest.mark.parametrize('pooling', ['global', 'time'])
def test_gradcam_maps_match_pytorch(tmp_path, pooling):
  net = torch_resnext.create('tiny', num_classes=6)
  torch_resnext.randomize_(net, seed=3)
  net.eval()
  path = tmp_path / 'tiny.pth'
  torch_resnext.save_published_checkpoint(net, path, arch='resnext-tiny')
  model = models.ResNeXt3DTiny(num_classes=6)
  variables = convert.torch_to_flax(convert.load_torch_checkpoint(path), model)

  clips = np.random.default_rng(0).normal(size=(2, 16, 64, 64, 3)).astype(np.float32)
  ref_maps, ref_target, ref_logits = _torch_gradcam(
      net, torch.from_numpy(clips.transpose(0, 4, 1, 2, 3).copy()), pooling)
  result = explain.explain(model, variables, clips, method='gradcam', layers='stages',
                           pooling=pooling)
  np.testing.assert_array_equal(result.target, ref_target)
  np.testing.assert_allclose(result.logits, ref_logits, rtol=1e-4, atol=1e-4)
  for name in STAGES:
    ours, ref = np.asarray(result.layer_maps[name]).ravel(), ref_maps[name].ravel()
    assert ref.max() > 0, f'{name}: the reference map is empty, the test would prove nothing'
    r = np.corrcoef(ours, ref)[0, 1]
    assert r >= 0.999, f'{name}: correlation {r:.5f}'
    np.testing.assert_allclose(ours, ref, atol=2e-3, err_msg=name)
