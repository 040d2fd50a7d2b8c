"""Data-parallel explanation: `explain_video` splits its clip batches over the local devices.

The other paths are tested where they live: `long_video.explain_clips` (what
the command line's explain and localize modes and `explain_video` run), a
mesh against none, in tests/explain/test_long_video.py; loc_eval's
`gather_clips` on 4 devices against one, in tests/test_localization_eval.py.
"""
import jax
import numpy as np

import gla_jax
from gla_jax import parallel
from gla_jax import video_explanation
from tests.explain import test_long_video
from tests.explain.test_long_video import tiny_model_and_clips  # pylint: disable=unused-import

NUM_FRAMES = 20    # 8-frame clips every 4 frames: 4 clips.


def test_explain_video_on_four_devices_gives_the_one_device_maps(tiny_model_and_clips,
                                                                 monkeypatch):
  config, model, variables, _ = tiny_model_and_clips
  assert jax.local_device_count() == 4     # tests/conftest.py
  size = int(config.data.crop_size)
  frames = np.random.default_rng(1).integers(0, 256, (NUM_FRAMES, size, size, 3), np.uint8)

  four_devices = parallel.make_local_mesh()
  calls = test_long_video.record_explainer_calls(monkeypatch)

  def explain(mesh):
    """explain_video with `mesh` as the local devices' mesh (None: the default device)."""
    first = len(calls)
    monkeypatch.setattr(video_explanation.parallel, 'make_local_mesh', lambda: mesh)
    # batch_size 3: rounded up to 4 on four devices (one batch), two batches of 3 on one.
    result = gla_jax.explain_video(frames, model=model, variables=variables, config=config,
                                   batch_size=3, with_localization=False, progress=False)
    return result, calls[first:]

  # The programs of test_long_video's one-device and sharded explain_clips.
  single, single_calls = explain(None)
  sharded, sharded_calls = explain(four_devices)
  assert [len(video.sharding.device_set) for _, video in single_calls] == [1, 1]
  assert len(sharded_calls) == 1
  variables_, video = sharded_calls[0]
  assert video.shape[0] == 4 and video.sharding.shard_shape(video.shape)[0] == 1
  leaf = jax.tree.leaves(variables_)[0]
  assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated
  assert len(single.clip_starts) == 4
  np.testing.assert_array_equal(sharded.clip_classes, single.clip_classes)
  np.testing.assert_allclose(sharded.clip_probabilities, single.clip_probabilities, atol=1e-5)
  np.testing.assert_allclose(sharded.attention, single.attention, atol=1e-5)
  assert sorted(sharded.layer_maps) == sorted(single.layer_maps)
  for name, volume in single.layer_maps.items():
    np.testing.assert_allclose(sharded.layer_maps[name], volume, atol=1e-5, err_msg=name)
