"""The model's input: RGB pixel values (uint8 from the loader) normalised on the device.

Clips cross from the host as uint8 (4x fewer bytes than float32) and every
jitted computation that feeds the network starts with `normalize_video`:
(x - mean) / std per channel, in float32, with `config.data.mean` and
`config.data.std` (pixel values in [0, 255]).
"""
from typing import Any, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np


def channel_constants(mean: Sequence[float], std: Sequence[float]
                      ) -> Tuple[np.ndarray, np.ndarray]:
  """(mean, 1 / std) as float32 [C] arrays, the constants `normalize_video` applies.

  Raises:
    ValueError: mean and std of different lengths, or a std that is not > 0.
  """
  mean = np.asarray(mean, np.float32).reshape(-1)
  std = np.asarray(std, np.float32).reshape(-1)
  if mean.shape != std.shape or not mean.size:
    raise ValueError(f'mean {mean.tolist()} and std {std.tolist()} need one value per channel '
                     'each (config.data.mean, config.data.std: 3 numbers for RGB).')
  if not np.all(std > 0):
    raise ValueError(f'std {std.tolist()} must be > 0 for every channel (config.data.std).')
  return mean, np.float32(1.0) / std


def normalize_video(video: Any, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """(video - mean) / std in float32, channels last, for use inside jit.

  Computed as (x - mean) * (1 / std) in float32, so the values are those the
  host computed before clips crossed as uint8.

  Args:
    video: [..., C] RGB pixel values in [0, 255]: uint8 (the loader's batches,
      `sampling.center_clip`) or floating point (the same values, not yet
      normalised).
    mean, std: C numbers each (`config.data.mean`, `config.data.std`).

  Returns:
    float32 array of the video's shape.

  Raises:
    TypeError: an integer dtype other than uint8, or bool.
    ValueError: a last axis that is not C long, or bad mean/std.
  """
  video = jnp.asarray(video)
  mean, inv_std = channel_constants(mean, std)
  if video.dtype != jnp.uint8 and not jnp.issubdtype(video.dtype, jnp.floating):
    raise TypeError(f'Clips must be uint8 RGB (0..255) as the loader yields them, got '
                    f'{video.dtype}; convert them with video.astype(np.uint8).')
  if not video.ndim or video.shape[-1] != mean.size:
    raise ValueError(f'Clips of shape {video.shape} do not have {mean.size} channels last; '
                     'expected [..., 3] RGB (channels last).')
  return (video.astype(jnp.float32) - mean) * inv_std


def check_uint8_clips(video: Any, consumer: str) -> None:
  """Raises TypeError unless `video` is uint8, the pixels `consumer` normalises on the device."""
  if np.dtype(video.dtype) != np.uint8:
    raise TypeError(f'{consumer} takes uint8 RGB clips (0..255, as the loader and '
                    f'sampling.center_clip give them) and normalises them on the device; got '
                    f'{video.dtype}. Clips normalised already go to explain.explain.')
