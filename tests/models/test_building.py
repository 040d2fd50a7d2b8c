"""Feature map shapes of a clip through the network, and clips that cannot pass."""
import pytest

from gla_jax import models
from gla_jax.models import building


def test_clip_shape_check():
  model = models.create('tiny', num_classes=8)
  shapes = building.check_clip_shape(model, 16, 112)
  assert shapes['layer4'] == (1, 4, 4) and shapes['layer3'] == (2, 7, 7)   # docs/design.md.
  assert building.check_clip_shape(model, 1, 1)['layer4'] == (1, 1, 1)
  with pytest.raises(ValueError, match='num_frames'):
    building.check_clip_shape(model, 0, 32)
  # The demo's network: no max pool, so half the strides.
  demo_model = models.create('tiny', num_classes=8, stem_kernel=(3, 3, 3), max_pool=False)
  shapes = building.check_clip_shape(demo_model, 8, 32)
  assert shapes['conv1'] == (8, 16, 16) and shapes['layer1'] == (8, 16, 16)
  assert shapes['layer4'] == (1, 2, 2)
  # Time stride 1 in layer2: every stage from there on keeps twice the frames.
  kept_frames = models.create('tiny', num_classes=8, stem_kernel=(3, 3, 3), max_pool=False,
                              temporal_strides=(1, 1, 2, 2))
  shapes = building.check_clip_shape(kept_frames, 8, 32)
  assert [shapes[f'layer{s}'] for s in range(1, 5)] == [(8, 16, 16), (8, 8, 8), (4, 4, 4),
                                                        (2, 2, 2)]


def test_temporal_strides_need_one_per_stage():
  with pytest.raises(ValueError, match='temporal_strides=.*each of the 4 stages'):
    building.check_clip_shape(models.create('tiny', temporal_strides=(1, 2)), 8, 32)
