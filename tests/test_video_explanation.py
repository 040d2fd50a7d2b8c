"""Explaining and localizing a video file: stitching, overlay videos, localization.json."""
import json
import os

import jax
import numpy as np
import pytest

from configs import tiny
from gla_jax import explain
from gla_jax import models
from gla_jax import video_explanation
from gla_jax import weights
from gla_jax.data import sampling
from gla_jax.data import synthetic
from gla_jax.data import synthetic_settings
from gla_jax.data import video_io
from gla_jax.models import building
from tests.explain import test_long_video

NUM_FRAMES = 20              # 8-frame clips every 4 frames start at 0, 4, 8, 12
HEIGHT, WIDTH = 40, 48       # not square: the model sees the centre 40 x 40, resized to 32


@pytest.fixture(scope='module')
def setting(tmp_path_factory):
  """(config, workdir with random tiny weights in converted/, path of a synthetic .avi video)."""
  config = tiny.get_config()
  with config.unlocked():
    config.data.crop_size = 32
    config.explain.batch_size = 4           # all four clips in one batch
    config.localize.update(clip_stride=0, video_codec='MJPG', write_gif=True)
  root = tmp_path_factory.mktemp('inference')
  model = building.create_model(config)
  variables = models.init_variables(model, jax.random.key(0), (1, 8, 32, 32, 3))
  workdir = str(root / 'work')
  weights.save_variables(os.path.join(workdir, weights.CONVERTED_DIR), variables,
                             {'preset': 'tiny'})
  video = synthetic.generate_video(synthetic_settings.SyntheticConfig(height=HEIGHT, width=WIDTH),
                                   3, num_frames=NUM_FRAMES)
  path = str(root / 'walk.avi')
  video_io.write_video(path, video.video, fps=10.0, codec='MJPG')
  return config, workdir, path


@pytest.fixture(scope='module')
def localized(setting):
  config, workdir, path = setting
  return video_explanation.explain_video_file(config, workdir, path, max_panels=2,
                                              with_localization=True)


def test_stitched_maps_are_the_clip_maps(setting, localized):
  config, workdir, path = setting
  attention = np.load(os.path.join(localized, 'attention.npy'))
  assert attention.shape == (NUM_FRAMES, 32, 32)
  info = json.load(open(os.path.join(localized, 'clips.json')))
  starts = [clip['start_frame'] for clip in info['clips']]
  assert starts == [0, 4, 8, 12] and info['clip_stride'] == 4
  assert info['video_class']['video_score'] == 'mean'
  assert info['video_class']['weight_by_video_class'] is False
  assert all(0 <= clip['video_class_probability'] <= 1 for clip in info['clips'])

  # Each clip explained on its own, from the decoded file (MJPG is lossy).
  crops = sampling.center_clip(video_io.read_video(path), config.data)
  normalised = np.asarray(models.normalize_video(crops, config.data.mean, config.data.std))
  clips = np.stack([normalised[start:start + 8] for start in starts])
  model = building.create_model(config)
  result = explain.explain(model, weights.for_config(config, workdir).variables, clips,
                           method=config.explain.method, layers=config.explain.layers,
                           aggregate=config.explain.aggregate)
  clip_maps = np.asarray(result.attention)
  covering = [[k for k, start in enumerate(starts) if start <= t < start + 8]
              for t in range(NUM_FRAMES)]
  for t, ks in enumerate(covering):
    expected = np.mean([clip_maps[k, t - starts[k]] for k in ks], axis=0)
    if len(ks) == 1:           # frames 0-3 and 16-19: one clip's map, unchanged
      np.testing.assert_allclose(attention[t], expected, atol=1e-6)
    else:                      # overlaps: the mean of the covering clips
      np.testing.assert_allclose(attention[t], expected, atol=1e-5)
  assert [len(ks) for ks in covering].count(1) == 8
  layer = np.load(os.path.join(localized, 'layers', 'layer1.npy'))
  np.testing.assert_allclose(layer[:4], np.asarray(result.layer_maps['layer1'])[0, :4], atol=1e-6)


def test_overlay_videos_decode_back(setting, localized):
  overlay = video_io.read_video(os.path.join(localized, 'overlay.avi'))   # MJPG -> .avi
  assert overlay.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
  # The original frames at full size: the region outside the centre crop is dimmed.
  original = video_io.read_video(setting[2])
  x0 = (WIDTH - HEIGHT) // 2
  assert overlay[:, :, :x0].mean() < original[:, :, :x0].mean()
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(os.path.join(localized, 'overlay.gif')) as gif:
    assert gif.n_frames == NUM_FRAMES and gif.size == (WIDTH, HEIGHT)


def test_localization_json_has_every_frame(localized):
  record = json.load(open(os.path.join(localized, 'localization.json')))
  assert record['num_frames'] == NUM_FRAMES
  assert [frame['frame'] for frame in record['frames']] == list(range(NUM_FRAMES))
  for frame in record['frames']:
    if frame['box'] is not None:
      x0, y0, x1, y1 = frame['box']
      assert 0 <= x0 < x1 <= WIDTH and 0 <= y0 < y1 <= HEIGHT
  for segment in record['segments']:
    assert 0 <= segment['start_frame'] < segment['end_frame'] <= NUM_FRAMES


def test_explain_mode_writes_no_localization(setting):
  config, workdir, path = setting
  out = video_explanation.explain_video_file(config, workdir, path, max_panels=1,
                                             with_localization=False)
  assert out == os.path.join(workdir, 'explain', 'walk')
  assert os.path.isfile(os.path.join(out, 'attention.npy'))
  assert os.path.isfile(os.path.join(out, 'panel_0.png'))
  assert not any(name.startswith(('localization', 'overlay')) for name in os.listdir(out))


def test_clips_are_explained_on_every_local_device(setting, monkeypatch):
  config, workdir, path = setting
  calls = test_long_video.record_explainer_calls(monkeypatch)
  video_explanation.explain_video_file(config, workdir, path, max_panels=1,
                                       with_localization=False)
  assert jax.local_device_count() == 4 and len(calls) == 1   # 4 clips, one batch of 4
  variables, video = calls[0]
  assert len(video.sharding.device_set) == 4                 # a clip per device
  leaf = jax.tree.leaves(variables)[0]
  assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated


@pytest.mark.parametrize('key, value, error, message', [
    ('video_score', 'median', ValueError,
     r"config.localize.video_score 'median'; choose one of \('mean', 'max'\)"),
    ('weight_by_video_class', None, TypeError,
     r"config.localize.weight_by_video_class=None: must be True or False"),
])
def test_bad_video_settings_are_refused_before_any_work(tmp_path, key, value, error, message):
  config = tiny.get_config()
  with config.unlocked():
    config.localize[key] = value
  with pytest.raises(error, match=message):
    video_explanation.explain_video_file(config, str(tmp_path), str(tmp_path / 'missing.avi'))
