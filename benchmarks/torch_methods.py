"""The PyTorch peers of `benchmarks.methods_bench`: each method as a PyTorch user would run it.

Input attributions through captum (Saliency, IntegratedGradients with the
Riemann trapezoid rule, NoiseTunnel(Saliency) for SmoothGrad, Occlusion);
Score-CAM and Ablation-CAM written here with the same masks, channels per
batched forward and score as `gla_jax.explain.masked_cams` (pytorch-grad-cam's
ScoreCAM and AblationCAM up-sample with 2-D operations and do not run on 3-D
activations); the gradient CAMs through pytorch-grad-cam's classes on 5-D
activations (`tests/grad_cam_reference.py` imports it without torchvision).
Every peer explains the argmax class of the same clips.
"""
import functools
from typing import Any, Callable, Dict

from benchmarks import torch_side

# pytorch-grad-cam class of each gradient CAM of the project.
GRAD_CAM_CLASSES = {'gradcam': 'GradCAM', 'hirescam': 'HiResCAM',
                    'gradcam_elementwise': 'GradCAMElementWise', 'xgradcam': 'XGradCAM',
                    'eigencam': 'EigenCAM', 'gradcam_pp': 'GradCAMPlusPlus',
                    'layercam': 'LayerCAM'}


class TorchMethods:
  """Callables running one method on the benchmark's clips (`torch_side.TorchBench`'s)."""

  def __init__(self, bench: torch_side.TorchBench, args):
    self.bench, self.torch, self.args = bench, bench.torch, args
    self.net = bench.net.eval()
    with self.torch.no_grad(), bench.autocast():
      self.target = self.net(bench.clips).argmax(dim=1)

  def _forward(self, clips):
    with self.bench.autocast():
      return self.net(clips).float()

  # -- captum ------------------------------------------------------------------

  def captum_fn(self, method: str) -> Callable[[], Any]:
    """captum's attribution `method` (saliency | integrated_gradients | smoothgrad | occlusion)."""
    from captum import attr  # pylint: disable=g-import-not-at-top
    args, clips, target = self.args, self.bench.clips, self.target
    if method == 'saliency':
      explainer = attr.Saliency(self._forward)
      return lambda: explainer.attribute(clips, target=target, abs=True)
    if method == 'integrated_gradients':
      explainer = attr.IntegratedGradients(self._forward)
      return lambda: explainer.attribute(
          clips, target=target, n_steps=args.ig_steps, method='riemann_trapezoid',
          internal_batch_size=args.chunk_size * args.batch)
    if method == 'smoothgrad':
      explainer = attr.NoiseTunnel(attr.Saliency(self._forward))
      return lambda: explainer.attribute(
          clips, target=target, nt_type='smoothgrad', nt_samples=args.smooth_samples,
          nt_samples_batch_size=args.chunk_size, stdevs=args.noise_std)
    if method == 'occlusion':
      explainer = attr.Occlusion(self._forward)
      return lambda: explainer.attribute(
          clips, target=target, sliding_window_shapes=(3, *args.occlusion_patch),
          strides=(3, *args.occlusion_stride), baselines=0,
          perturbations_per_eval=args.chunk_size)
    raise ValueError(f'No captum peer for {method!r}.')

  # -- pytorch-grad-cam ----------------------------------------------------------

  def grad_cam_fn(self, method: str, layer: str) -> Callable[[], Any]:
    """pytorch-grad-cam's class for `method` on `layer` of the reference network."""
    from tests import grad_cam_reference  # pylint: disable=g-import-not-at-top
    pytorch_grad_cam = grad_cam_reference.load()
    from pytorch_grad_cam.utils import model_targets  # pylint: disable=g-import-not-at-top
    module = torch_side.tap_modules(self.net, [layer])[layer]
    cam = getattr(pytorch_grad_cam, GRAD_CAM_CLASSES[method])(model=self.net,
                                                              target_layers=[module])
    targets = [model_targets.ClassifierOutputTarget(int(k)) for k in self.target]
    return lambda: cam(input_tensor=self.bench.clips, targets=targets)

  # -- masked CAMs -----------------------------------------------------------------

  def masked_cam_fn(self, method: str, layer: str) -> Callable[[], Any]:
    """Score-CAM or Ablation-CAM of `layer`, `--chunk_size` channels per batched forward."""
    return functools.partial({'scorecam': self._score_cam,
                              'ablationcam': self._ablation_cam}[method], layer)

  def _layer_activation(self, layer: str):
    with self.torch.no_grad(), self.bench.autocast():
      logits, taps = self.net(self.bench.clips, return_taps=True)
    return logits.float(), taps[layer].float()                   # [B, C, t, h, w]

  def _target_scores(self, logits, copies: int):
    return logits.gather(1, self.target.repeat_interleave(copies)[:, None])[:, 0]

  def _weighted_map(self, activation, weights):
    return self.torch.relu((weights[:, :, None, None, None] * activation).sum(dim=1))

  def _score_cam(self, layer: str):
    """Masks = min-max of each up-sampled channel; weights = softmax over channels of the scores."""
    torch, clips, chunk = self.torch, self.bench.clips, self.args.chunk_size
    _, activation = self._layer_activation(layer)
    batch, channels = activation.shape[:2]
    scores = []
    with torch.no_grad():
      for first in range(0, channels, chunk):
        part = activation[:, first:first + chunk]
        masks = torch.nn.functional.interpolate(part, size=self.bench.size, mode='trilinear',
                                                align_corners=False)  # [B, c, T, H, W]
        low = masks.amin(dim=(2, 3, 4), keepdim=True)
        span = masks.amax(dim=(2, 3, 4), keepdim=True) - low
        masks = torch.where(span > 0, (masks - low) / span.clamp_min(1e-30), 0.0)
        masked = (clips[:, None] * masks[:, :, None]).flatten(0, 1)   # [B * c, 3, T, H, W]
        scores.append(self._target_scores(self._forward(masked), part.shape[1]).view(batch, -1))
      weights = torch.softmax(torch.cat(scores, dim=1), dim=1)
      return self._weighted_map(activation, weights)

  def _ablation_cam(self, layer: str):
    """w_k = (y - y_k) / y, y_k the score with channel k of `layer` set to zero."""
    torch, clips, chunk = self.torch, self.bench.clips, self.args.chunk_size
    logits, activation = self._layer_activation(layer)
    batch, channels = activation.shape[:2]
    score = self._target_scores(logits, 1)
    module = torch_side.tap_modules(self.net, [layer])[layer]
    keep = {}
    handle = module.register_forward_hook(lambda m, i, output: output * keep['mask'])
    drops = []
    try:
      with torch.no_grad():
        for first in range(0, channels, chunk):
          count = min(chunk, channels - first)
          mask = torch.ones((count, channels), device=clips.device, dtype=activation.dtype)
          mask[torch.arange(count), torch.arange(first, first + count)] = 0
          keep['mask'] = mask.repeat(batch, 1)[:, :, None, None, None].to(activation.dtype)
          copies = clips.repeat_interleave(count, dim=0)              # [B * count, 3, T, H, W]
          drops.append(self._target_scores(self._forward(copies), count).view(batch, -1))
    finally:
      handle.remove()
    ablated = torch.cat(drops, dim=1)
    safe = torch.where(score == 0, torch.ones_like(score), score)[:, None]
    return self._weighted_map(activation, (score[:, None] - ablated) / safe)


def peers(bench: torch_side.TorchBench, args) -> Dict[str, Callable[[], Callable[[], Any]]]:
  """{method: factory of the PyTorch callable} for `args.methods`."""
  methods = TorchMethods(bench, args)
  table = {}
  for name in args.methods:
    method, _, layer = name.partition(':')
    if method in ('saliency', 'integrated_gradients', 'smoothgrad', 'occlusion'):
      table[name] = functools.partial(methods.captum_fn, method)
    elif method in ('scorecam', 'ablationcam'):
      table[name] = functools.partial(methods.masked_cam_fn, method, layer)
    else:
      table[name] = functools.partial(methods.grad_cam_fn, method, layer)
  return table
