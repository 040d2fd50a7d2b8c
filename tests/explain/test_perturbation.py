"""Deletion and insertion curves on a toy classifier with known answers."""
import numpy as np
import pytest

from gla_jax.explain import perturbation

T, H, W = 4, 8, 8          # 256 voxels


def _region():
  region = np.zeros((T, H, W), bool)
  region[:2, :4, :] = True    # 64 voxels: a quarter of the clip
  return region


def _kept_fraction(region):
  """Toy classifier: the fraction of the region's voxels still at their value 1."""
  def score_fn(videos):
    return videos[:, region, 0].mean(axis=1)
  return score_fn


def test_deletion_and_insertion_known_auc():
  region = _region()
  video = np.ones((T, H, W, 3), np.float32)
  attention = region.astype(np.float32)
  calls = []

  def score_fn(videos):
    calls.append(videos.shape)
    return _kept_fraction(region)(videos)

  # Steps of 32 voxels: the region goes in two steps, i.e. by x = 1/4.
  curves = perturbation.deletion_insertion(score_fn, video, attention, steps=8,
                                           insertion_baseline='zeros', batch_size=4)
  deletion, insertion = curves['deletion'], curves['insertion']
  np.testing.assert_allclose(deletion.fractions, np.arange(9) / 8)
  np.testing.assert_allclose(deletion.scores, [1, 0.5] + [0] * 7)
  np.testing.assert_allclose(insertion.scores, [0, 0.5] + [1] * 7)
  # Curve falls linearly to 0 at x = f = 1/4: AUC f/2; insertion 1 - f/2.
  assert deletion.auc == pytest.approx(0.125)
  assert insertion.auc == pytest.approx(0.875)
  # 9 points in chunks of exactly 4 (the last padded), per curve.
  assert calls == [(4, T, H, W, 3)] * 6


def test_deletion_of_the_least_attended_first():
  region = _region()
  video = np.ones((T, H, W, 3), np.float32)
  curve = perturbation.perturbation_curve(_kept_fraction(region), video,
                                          (~region).astype(np.float32), 'deletion', steps=8)
  # The region goes last: 1 until x = 3/4, then linearly to 0 at 1.
  np.testing.assert_allclose(curve.scores, [1] * 7 + [0.5, 0])
  assert curve.auc == pytest.approx(0.75 + 0.125)


def test_baselines():
  video = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_array_equal(perturbation.make_baseline(video, 'zeros'), 0)
  np.testing.assert_array_equal(perturbation.make_baseline(video, 2.0), 2.0)
  per_channel = perturbation.make_baseline(video, np.array([1, 2, 3], np.float32))
  np.testing.assert_array_equal(per_channel[1, 3, 4], [1, 2, 3])
  blurred = perturbation.make_baseline(video, 'blur', blur_sigma=2.0)
  assert blurred.shape == video.shape and blurred.std() < video.std()
  constant = np.full((2, 9, 9, 3), 7.0, np.float32)
  np.testing.assert_allclose(perturbation.blur(constant, 3.0), constant, rtol=1e-6)
  with pytest.raises(ValueError, match="Unknown baseline 'mean'"):
    perturbation.make_baseline(video, 'mean')
  with pytest.raises(ValueError, match='does not broadcast'):
    perturbation.make_baseline(video, np.zeros(5))


def test_curve_argument_errors():
  video = np.ones((T, H, W, 3), np.float32)
  with pytest.raises(ValueError, match='probability of the target class'):
    perturbation.perturbation_curve(lambda v: np.zeros((len(v), 5)), video,
                                    np.ones((T, H, W)), steps=2)
  with pytest.raises(ValueError, match='same T, H, W'):
    perturbation.perturbation_curve(lambda v: np.zeros(len(v)), video, np.ones((T, H, 4)))
  with pytest.raises(ValueError, match="Unknown mode"):
    perturbation.perturbation_curve(lambda v: np.zeros(len(v)), video, np.ones((T, H, W)),
                                    mode='removal')


def test_auc():
  assert perturbation.auc([0, 1]) == pytest.approx(0.5)
  assert perturbation.auc([1, 1, 1]) == pytest.approx(1.0)
  assert perturbation.auc([0, 1, 0]) == pytest.approx(0.5)
