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
