"""Drawing: boxes on their exclusive edges, panels' sizes, even frames, colour maps."""
import cv2
import numpy as np
import pytest

from gla_jax import defaults
from gla_jax import validation
from gla_jax.outputs import pictures


def test_draw_boxes_outlines_the_box_pixels():
  frames = np.zeros((2, 10, 10, 3), np.uint8)
  drawn = pictures.draw_boxes(frames, np.array([[2, 3, 6, 8], [-1, -1, -1, -1]]))
  edge = drawn[0, ..., 0] > 0
  assert edge[3, 2:6].all() and edge[7, 2:6].all()          # rows y0 and y1 - 1
  assert edge[3:8, 2].all() and edge[3:8, 5].all()          # columns x0 and x1 - 1
  assert not edge[:, 6:].any() and not edge[8:].any()       # nothing past the exclusive edge
  assert not drawn[1].any()                                 # a row of -1 draws nothing
  assert not frames.any()                                   # a copy
  with pytest.raises(ValueError, match='one box'):
    pictures.draw_boxes(frames, np.zeros((3, 4)))


def test_panel_size_enlarges_small_clips():
  frames = np.zeros((4, 32, 32, 3), np.uint8)
  maps = {'attention': np.ones((4, 32, 32), np.float32), 'layer1': np.zeros((4, 32, 32))}
  image = pictures.panel(frames, maps, title='x')
  # Tiles of 96 px (32 enlarged 3x): a row of frames and one per map, 4 columns, a label.
  assert image.shape == (18 + 3 * 96, pictures._LABEL_WIDTH + 4 * 96, 3)
  with pytest.raises(ValueError, match='does not have'):
    pictures.panel(frames, maps, boxes={'layer9': np.zeros((4, 4))})


def test_pad_to_even():
  frames = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(1, 3, 5, 3)
  padded = pictures.pad_to_even(frames)
  assert padded.shape == (1, 4, 6, 3)
  np.testing.assert_array_equal(padded[:, :3, :5], frames)
  np.testing.assert_array_equal(padded[:, 3, :5], frames[:, 2])


def test_colormap_option_and_its_validation():
  maps = np.linspace(0, 1, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
  levels = np.floor(maps * 255).astype(np.uint8).reshape(-1, 1)   # the 256 levels, truncated
  for name, code in (('jet', cv2.COLORMAP_JET), ('viridis', cv2.COLORMAP_VIRIDIS)):
    expected = cv2.applyColorMap(levels, code)[:, 0, ::-1].reshape(2, 3, 4, 3)
    np.testing.assert_array_equal(pictures.colorize(maps, name), expected)
  frames = np.zeros((2, 3, 4, 3), np.uint8)
  np.testing.assert_array_equal(pictures.overlay(frames, maps, alpha=1.0, colormap='viridis'),
                                pictures.colorize(maps, 'viridis'))
  assert not np.array_equal(pictures.colorize(maps, 'turbo'), pictures.colorize(maps))
  with pytest.raises(ValueError, match="Unknown colour map 'nope'.*'jet'.*'viridis'"):
    pictures.colorize(maps, 'nope')
  config = defaults.base_config()
  assert config.localize.colormap == 'jet' and config.localize.video_codec == 'avc1'
  validation.validate_localize(config)
  config.localize.colormap = 'nope'
  with pytest.raises(ValueError, match=r"config.localize.colormap 'nope'; choose one of .*'turbo'"):
    validation.validate_localize(config)
