"""Long videos: the video's class from its clips, and stitching weighted clip maps."""
import numpy as np
import pytest

from gla_jax.explain import long_video


def test_video_score_rules_on_hand_made_probabilities():
  # Three empty clips lean to class 0; one clip sees the action (class 2) clearly.
  probabilities = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.0, 0.05, 0.95]])
  np.testing.assert_allclose(long_video.video_scores(probabilities, 'mean'),
                             [0.375, 0.2375, 0.3875])
  np.testing.assert_allclose(long_video.video_scores(probabilities, 'max'), [0.5, 0.3, 0.95])
  with pytest.raises(ValueError, match="Unknown video score rule 'avg'"):
    long_video.video_scores(probabilities, 'avg')


def test_clip_weights_scale_each_clip_before_stitching():
  # Two 4-frame clips of a 6-frame video, starting at 0 and 2: frames 2-3 are shared.
  maps = np.stack([np.full((4, 2, 2), 1.0), np.full((4, 2, 2), 3.0)]).astype(np.float32)
  result = {'attention': maps}
  plain = long_video.stitch_maps(result, [0, 2], 6)['attention'][:, 0, 0]
  np.testing.assert_allclose(plain, [1, 1, 2, 2, 3, 3])
  weighted = long_video.stitch_maps(result, [0, 2], 6, np.array([1.0, 0.1]))['attention'][:, 0, 0]
  np.testing.assert_allclose(weighted, [1, 1, 0.65, 0.65, 0.3, 0.3], rtol=1e-6)


# ------------------------------------------------------------------------------
# Placement: the variables go to the device(s) once per video, clips over all devices.
# ------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def tiny_model_and_clips():
  """(config, model, numpy variables as a checkpoint loads them, 5 uint8 clips)."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from gla_jax.models import building  # pylint: disable=g-import-not-at-top
  from gla_jax import models  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  model = building.create_model(config)
  size = int(config.data.crop_size)
  frames = int(config.data.num_frames)
  variables = models.init_variables(model, jax.random.key(0), (1, frames, size, size, 3))
  variables = jax.tree.map(np.asarray, variables)   # what weights.load_variables returns
  clips = np.random.default_rng(0).integers(0, 256, (5, frames, size, size, 3), np.uint8)
  return config, model, variables, clips


def record_explainer_calls(monkeypatch):
  """Wraps `attention.make_explainer`; returns the list of (variables, video) of each call."""
  from gla_jax.explain import attention  # pylint: disable=g-import-not-at-top
  calls = []
  real = attention.make_explainer

  def recording(*args, **kwargs):
    fn = real(*args, **kwargs)

    def call(variables, video, target):
      calls.append((variables, video))
      return fn(variables, video, target)
    return call

  monkeypatch.setattr(attention, 'make_explainer', recording)
  return calls


def test_variables_go_to_the_device_once_per_video(tiny_model_and_clips, monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  config, model, variables, clips = tiny_model_and_clips
  calls = record_explainer_calls(monkeypatch)
  with config.unlocked():
    config.explain.batch_size = 2          # 5 clips: 3 batches
  long_video.explain_clips(model, variables, clips, config)
  assert len(calls) == 3
  leaves = [jax.tree.leaves(variables_) for variables_, _ in calls]
  # Already device arrays (not numpy, copied from the host at every call) ...
  assert all(isinstance(leaf, jax.Array) for leaf in leaves[0]), type(leaves[0][0])
  # ... and the same arrays for every batch: one transfer per video.
  for later in leaves[1:]:
    assert all(a is b for a, b in zip(leaves[0], later))


def test_clips_are_sharded_over_devices_with_the_one_device_maps(tiny_model_and_clips,
                                                                  monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
  config, model, variables, clips = tiny_model_and_clips
  assert jax.local_device_count() == 4     # tests/conftest.py
  with config.unlocked():
    config.explain.batch_size = 3          # not a multiple of 4: rounded up to 4
  one_device = long_video.explain_clips(model, variables, clips, config)
  calls = record_explainer_calls(monkeypatch)
  mesh = Mesh(np.asarray(jax.local_devices()), ('data',))
  sharded = long_video.explain_clips(model, variables, clips, config, mesh=mesh)
  assert len(calls) == 2                   # 5 clips in batches of 4
  for variables_, video in calls:
    assert video.shape[0] == 4 and len(video.sharding.device_set) == 4
    assert video.sharding.shard_shape(video.shape)[0] == 1
    leaf = jax.tree.leaves(variables_)[0]
    assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated
  assert sorted(sharded) == sorted(one_device)
  for key in one_device:
    assert sharded[key].shape == one_device[key].shape, key
    np.testing.assert_allclose(sharded[key], one_device[key], atol=1e-5, err_msg=key)


def test_uint8_clips_are_normalised_on_the_device_like_numpy(tiny_model_and_clips, monkeypatch):
  from gla_jax import explain  # pylint: disable=g-import-not-at-top
  config, model, variables, clips = tiny_model_and_clips
  calls = record_explainer_calls(monkeypatch)
  config = config.copy_and_resolve_references()   # The module's other tests keep std 1.
  with config.unlocked():
    config.explain.batch_size = 5
    config.data.std = (50.0, 60.0, 70.0)           # not the tiny config's 1: the division shows
  result = long_video.explain_clips(model, variables, clips, config)
  normalised = ((clips.astype(np.float32) - np.asarray(config.data.mean, np.float32))
                / np.asarray(config.data.std, np.float32))
  [(_, video)] = calls
  np.testing.assert_allclose(np.asarray(video), normalised, rtol=1e-6, atol=1e-6)
  monkeypatch.undo()
  expected = explain.explain(model, variables, normalised, method=config.explain.method,
                             layers=long_video.layers_option(config.explain.layers),
                             aggregate=config.explain.aggregate)
  np.testing.assert_allclose(result['logits'], expected.logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(result['attention'], expected.attention, atol=1e-5)
  with pytest.raises(TypeError, match=r'explain_clips takes uint8 RGB clips.*got float32'):
    long_video.explain_clips(model, variables, normalised, config)
