"""The model's input normalisation on the device against numpy; its refusals of bad input."""
import jax
import numpy as np
import pytest

from gla_jax import defaults
from gla_jax import models
from gla_jax.models import input_normalization

MEAN = defaults.data_config().mean
STD = (38.7568578, 37.88248729, 40.02898126)


def _pixels(shape=(2, 3, 4, 5, 3)):
  video = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
  video.reshape(-1, 3)[:2] = [[0, 0, 0], [255, 255, 255]]   # both ends of the range
  return video


def test_uint8_clips_normalised_on_the_device_equal_numpy():
  video = _pixels()
  normalised = jax.jit(models.normalize_video, static_argnames=('mean', 'std'))(
      video, mean=MEAN, std=STD)
  assert normalised.dtype == np.float32 and normalised.shape == video.shape
  # The exact value, in float64.
  exact = (video.astype(np.float64) - np.asarray(MEAN)) / np.asarray(STD)
  np.testing.assert_allclose(np.asarray(normalised), exact, rtol=1e-6, atol=1e-6)
  # Bit for bit the float32 arithmetic the host did before clips crossed as uint8.
  host = (video.astype(np.float32) - np.float32(MEAN)) * (np.float32(1) / np.float32(STD))
  np.testing.assert_array_equal(np.asarray(normalised), host)
  # Float pixel values (0..255, not normalised) give the same numbers.
  np.testing.assert_array_equal(
      np.asarray(models.normalize_video(video.astype(np.float32), MEAN, STD)), host)


def test_bad_clips_and_constants_are_refused():
  with pytest.raises(TypeError, match=r'uint8 RGB.*int32.*astype\(np.uint8\)'):
    models.normalize_video(np.zeros((1, 2, 2, 2, 3), np.int32), MEAN, STD)
  with pytest.raises(ValueError, match=r'\(1, 2, 2, 2, 4\) do not have 3 channels last'):
    models.normalize_video(np.zeros((1, 2, 2, 2, 4), np.uint8), MEAN, STD)
  with pytest.raises(ValueError, match=r'std \[1.0, 0.0, 1.0\] must be > 0'):
    models.normalize_video(_pixels(), MEAN, (1, 0, 1))
  with pytest.raises(ValueError, match='one value per channel'):
    models.normalize_video(_pixels(), MEAN, (1, 1))
  input_normalization.check_uint8_clips(_pixels(), 'explain_clips')
  with pytest.raises(TypeError, match=r'explain_clips takes uint8.*got float32.*explain.explain'):
    input_normalization.check_uint8_clips(_pixels().astype(np.float32), 'explain_clips')
