"""Score-CAM and Ablation-CAM against per-channel loops in PyTorch, chunking, end to end.

pytorch-grad-cam 1.5.7 cannot be the reference here: on 5-D activations its
ScoreCAM up-samples with `UpsamplingBilinear2d` ("Input and output must have
the same number of spatial dimensions": it is 4-D only) and its AblationCAM's
`AblationLayer.set_next_batch` repeats the activations with four repeat sizes
("Number of dimensions of repeat dims can not be smaller than number of
dimensions of tensor"). So the reference is the definition written out with a
loop over channels on the PyTorch network (tests/torch_resnext.py, one stage,
weights converted into Flax): one masked (Score-CAM) or ablated (Ablation-CAM:
a forward hook zeroes the channel) forward pass per channel, trilinear masks
by `F.interpolate(align_corners=False)`.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
import torch.nn.functional as F  # noqa: E402
from tests import torch_resnext  # noqa: E402

from gla_jax import explain  # noqa: E402
from gla_jax import models  # noqa: E402
from gla_jax.explain import masked_cams  # noqa: E402
from gla_jax.models import convert  # noqa: E402

CLIPS = (2, 4, 16, 16, 3)     # conv1: [2, 4, 8, 8] x 16 channels
CHUNKS = (1, 3)               # 16 channels: 3 leaves a padded last chunk
ONE_STAGE = dict(stage_sizes=(1,), widths=(64,))


@functools.lru_cache(maxsize=None)
def one_stage_networks():
  """The PyTorch reference with one stage (conv1, layer1), its Flax twin, variables and clips."""
  net = torch_resnext.randomize_(torch_resnext.create('tiny', num_classes=6, **ONE_STAGE), seed=3)
  model = models.ResNeXt3D(num_classes=6, cardinality=4, stem_width=16, temporal_strides=(1,),
                           **ONE_STAGE)
  variables = convert.torch_to_flax(torch_resnext.published_state_dict(net), model)
  clips = np.random.default_rng(0).normal(size=CLIPS).astype(np.float32)
  return net, model, variables, clips


def _resize(maps, size):
  return explain.upsample(maps, size)


@pytest.fixture(scope='module')
def ours():
  """{(method, chunk_size): [B, t, h, w]} on conv1, the target, and Ablation-CAM where y = 0."""
  _, model, variables, clips = one_stage_networks()

  @jax.jit
  def run(variables, video):
    logits, state = model.apply(variables, video, mutable=['intermediates'])
    activation = state['intermediates']['conv1'][0]
    target = jnp.argmax(logits, axis=-1)
    resize = functools.partial(_resize, size=video.shape[1:4])
    maps = {(method, chunk): masked_cams.masked_cam(model, variables, video, target, activation,
                                                    'conv1', method, resize, chunk)
            for method in masked_cams.MASKED_METHODS for chunk in CHUNKS}
    # A head whose class-0 logit is 0 for every clip: y = y_k = 0, weights 0 / 0 unguarded.
    fc = dict(variables['params']['fc'])
    fc['kernel'], fc['bias'] = fc['kernel'].at[:, 0].set(0.0), fc['bias'].at[0].set(0.0)
    silent = {'params': {**variables['params'], 'fc': fc}, 'batch_stats': variables['batch_stats']}
    zero_score = masked_cams.masked_cam(model, silent, video, jnp.zeros_like(target), activation,
                                        'conv1', 'ablationcam', resize, 16)
    return maps, target, zero_score

  maps, target, zero_score = run(variables, clips)
  return jax.tree.map(np.asarray, maps), np.asarray(target), np.asarray(zero_score)


@torch.no_grad()
def _torch_reference(method):
  """The map of `method` on conv1 with a loop over channels, in PyTorch; and the argmax target."""
  net, _, _, clips = one_stage_networks()
  x = torch.from_numpy(clips.transpose(0, 4, 1, 2, 3).copy())
  logits, taps = net(x, return_taps=True)
  target = logits.argmax(dim=1)
  rows = torch.arange(len(target))
  act = taps['conv1'].clone()                                     # [B, C, t, h, w]
  scores = []
  for k in range(act.shape[1]):
    if method == 'scorecam':
      up = F.interpolate(act[:, k:k + 1], size=x.shape[2:], mode='trilinear',
                         align_corners=False)
      low = up.amin(dim=(2, 3, 4), keepdim=True)
      mask = (up - low) / (up.amax(dim=(2, 3, 4), keepdim=True) - low + 1e-8)
      scores.append(net(x * mask)[rows, target])
    else:
      def ablate(module, inputs, output, k=k):
        output = output.clone()
        output[:, k] = 0
        return output
      hook = net.relu.register_forward_hook(ablate)      # net.relu: the stem's, conv1's tap
      scores.append(net(x)[rows, target])
      hook.remove()
  scores = torch.stack(scores, dim=1)                             # [B, C]
  if method == 'scorecam':
    weights = torch.softmax(scores, dim=1)
  else:
    y = logits[rows, target][:, None]
    weights = (y - scores) / y
  cam = torch.relu((weights[:, :, None, None, None] * act).sum(dim=1))
  return cam.numpy(), target.numpy()


@pytest.mark.parametrize('method', masked_cams.MASKED_METHODS)
def test_masked_cam_matches_a_pytorch_loop_over_channels(ours, method):
  maps, target, _ = ours
  expected, expected_target = _torch_reference(method)
  np.testing.assert_array_equal(target, expected_target)
  assert expected.max() > 1.1 * expected.min(), 'a flat reference map proves little'
  for chunk in CHUNKS:
    np.testing.assert_allclose(maps[method, chunk], expected, rtol=1e-3,
                               atol=1e-4 * expected.max(), err_msg=f'chunk_size={chunk}')
  np.testing.assert_allclose(maps[method, 1], maps[method, 3], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('method', masked_cams.MASKED_METHODS)
def test_explain_runs_masked_methods_with_one_chunk(ours, method):
  # chunk_size 32 >= 16 channels: one chunk, the same map as chunks of 1 and 3.
  _, model, variables, clips = one_stage_networks()
  result = explain.explain(model, variables, clips, method=method, layers=('conv1',),
                           chunk_size=32)
  maps, target, _ = ours
  np.testing.assert_array_equal(result.target, target)
  expected = np.asarray(explain.minmax(_resize(maps[method, 1], CLIPS[1:4])))
  np.testing.assert_allclose(result.layer_maps['conv1'], expected, atol=1e-5)
  np.testing.assert_allclose(result.attention, expected, atol=1e-5)
  assert np.all(result.has_signal)


def test_ablation_cam_of_a_zero_score_is_zero_not_nan(ours):
  np.testing.assert_array_equal(ours[2], 0.0)


def test_masked_cam_errors_name_the_fix():
  _, model, variables, clips = one_stage_networks()
  act = np.ones((2, 4, 8, 8, 16), np.float32)
  call = functools.partial(masked_cams.masked_cam, model, variables, clips, np.zeros(2, np.int32),
                           act, 'conv1', resize=lambda m: m)
  with pytest.raises(ValueError, match="choose one of \\('scorecam', 'ablationcam'\\)"):
    call(method='gradcam', chunk_size=4)
  with pytest.raises(ValueError, match='chunk_size=0: give a positive number'):
    call(method='scorecam', chunk_size=0)
  with pytest.raises(ValueError, match='Unknown tap'):
    masked_cams.masked_cam(model, variables, clips, np.zeros(2, np.int32), act, 'layer9',
                           'ablationcam', lambda m: m, 4)
