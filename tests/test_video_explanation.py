"""Explaining and localizing a video file: stitching, overlay videos, localization.json."""
import json
import os

import cv2
import jax
import numpy as np
import pytest

from configs import tiny
import gla_jax
from gla_jax import explain
from gla_jax import model_loading
from gla_jax import models
from gla_jax import video_explanation
from gla_jax import weights
from gla_jax.data import sampling
from gla_jax.data import synthetic
from gla_jax.data import synthetic_settings
from gla_jax.data import video_io
from gla_jax.explain import attention as attention_lib
from gla_jax.explain import long_video
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


# ------------------------------------------------------------------------------
# The Python API: gla_jax.explain_video and its VideoExplanation.
# ------------------------------------------------------------------------------

REVERSED_NAMES = list(reversed(synthetic_settings.CLASS_NAMES))


@pytest.fixture(scope='module')
def checkpoint(setting):
  """A converted directory that carries its config and class names (what rebuilds the model)."""
  config, workdir, _ = setting
  directory = os.path.join(os.path.dirname(workdir), 'with_config')
  weights.save_variables(directory, weights.for_config(config, workdir).variables,
                         {'preset': 'tiny', 'num_classes': 8, 'config': config.to_dict(),
                          'class_names': REVERSED_NAMES})
  return directory


@pytest.fixture(scope='module')
def from_checkpoint(setting, checkpoint):
  return gla_jax.explain_video(setting[2], checkpoint=checkpoint, progress=False)


def test_a_checkpoint_alone_gives_the_command_line_result(setting, localized, from_checkpoint):
  result = from_checkpoint
  np.testing.assert_allclose(result.attention, np.load(os.path.join(localized, 'attention.npy')),
                             atol=1e-6)
  np.testing.assert_allclose(result.layer_maps['layer1'],
                             np.load(os.path.join(localized, 'layers', 'layer1.npy')), atol=1e-6)
  record = json.load(open(os.path.join(localized, 'localization.json')))
  boxes = np.array([frame['box'] or [-1] * 4 for frame in record['frames']], np.float32)
  np.testing.assert_allclose(result.boxes, boxes, atol=0.01)           # JSON rounds to 0.01 px
  assert result.segments == [(s['start_frame'], s['end_frame']) for s in record['segments']]
  assert result.fps == 10.0 and result.source == os.path.abspath(setting[2])
  # The class names are the checkpoint's: the same class as the CLI's, under its stored name.
  info = json.load(open(os.path.join(localized, 'clips.json')))
  assert result.video_class == info['video_class']['target']
  assert result.class_name == REVERSED_NAMES[result.video_class]
  assert result.clip_classes.tolist() == [clip['target'] for clip in info['clips']]
  assert result.clip_starts.tolist() == [0, 4, 8, 12]
  np.testing.assert_allclose(result.clip_probabilities.sum(axis=1), 1, rtol=1e-5)
  np.testing.assert_allclose(result.probabilities, result.clip_probabilities.mean(axis=0),
                             rtol=1e-5)                            # video_score='mean'
  assert [name for name, _ in result.top(3)] == [
      REVERSED_NAMES[k] for k in np.argsort(-result.probabilities, kind='stable')[:3]]


def test_the_three_input_kinds_give_the_same_result(setting, checkpoint, from_checkpoint,
                                                    tmp_path):
  frames = video_io.read_video(setting[2])                  # What the file decodes to.
  folder = tmp_path / 'walk_frames'
  folder.mkdir()
  for t, frame in enumerate(frames):                        # frame_1 .. frame_20: natural order
    cv2.imwrite(str(folder / f'frame_{t + 1}.png'), frame[..., ::-1])
  cv2.imwrite(str(folder / 'flow_x_1.png'), frames[0])      # flow beside the RGB frames: skipped
  by_folder = gla_jax.explain_video(str(folder), checkpoint=checkpoint, progress=False)
  by_array = gla_jax.explain_video(frames, checkpoint=checkpoint, progress=False, fps=10)
  for result in (by_folder, by_array):
    np.testing.assert_array_equal(result.frames, frames)
    np.testing.assert_allclose(result.attention, from_checkpoint.attention, atol=1e-6)
    np.testing.assert_array_equal(result.boxes, from_checkpoint.boxes)
    assert result.segments == from_checkpoint.segments
    assert result.class_name == from_checkpoint.class_name
  assert by_folder.fps is None and by_array.fps == 10.0 and by_array.source is None


def test_boxes_are_in_the_original_frames_pixels(from_checkpoint):
  # A hand-made case: the 40 x 40 centre square of a 48-wide frame starts at x0 = 4, and
  # the model saw it at 32 px, so a crop pixel is 40 / 32 = 1.25 frame pixels.
  crop_boxes = np.array([[0, 0, 16, 8], [-1, -1, -1, -1], [8, 4, 32, 32]], np.float32)
  np.testing.assert_allclose(long_video.boxes_to_frame(crop_boxes, (4, 0, 40), 32),
                             [[4, 0, 24, 10], [-1, -1, -1, -1], [14, 5, 44, 40]])
  result = from_checkpoint
  assert result.region == (4, 0, 40)
  crop = result.details.localization.boxes
  has_box = np.all(crop >= 0, axis=1)
  assert has_box.any()
  np.testing.assert_allclose(result.boxes[has_box], crop[has_box] * 1.25 + [4, 0, 4, 0],
                             rtol=1e-6)
  assert np.all(result.boxes[~has_box] == -1)


def test_save_overlays_and_panels(setting, localized, from_checkpoint, tmp_path):
  result = from_checkpoint
  out = result.save(str(tmp_path / 'saved'), max_panels=2)
  listing = lambda folder: sorted(os.path.relpath(os.path.join(d, f), folder)
                                  for d, _, files in os.walk(folder) for f in files)
  assert listing(out) == listing(localized)                  # The command line's files and names
  # One output frame per input frame, decoded back, for each format.
  assert video_io.read_video(result.write_overlay(str(tmp_path / 'o.mp4'))).shape == (
      NUM_FRAMES, HEIGHT, WIDTH, 3)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(result.write_overlay(str(tmp_path / 'o.gif'))) as gif:
    assert gif.n_frames == NUM_FRAMES
  with pytest.raises(ValueError, match=r"suffix picks the format; use one of \.mp4"):
    result.write_overlay(str(tmp_path / 'o.webp'))
  panel = result.panel(3)
  assert panel.dtype == np.uint8 and panel.shape == cv2.imread(
      os.path.join(localized, 'panel_3.png')).shape
  with pytest.raises(IndexError, match='the video has 4 clips'):
    result.panel(4)


def test_overrides_and_model_given_directly(setting, monkeypatch):
  config, workdir, path = setting
  targets = []
  real = attention_lib.explain

  def recording(*args, target=None, **kwargs):   # Explaining a given class compiles anew:
    targets.append(target)                       # the class is checked on its way in only.
    return real(*args, **kwargs)

  monkeypatch.setattr(attention_lib, 'explain', recording)
  result = gla_jax.explain_video(
      path, model=building.create_model(config),
      variables=weights.for_config(config, workdir).variables, config=config,
      target=REVERSED_NAMES[2], clip_stride=8, with_localization=False, progress=False,
      class_names=REVERSED_NAMES)
  assert result.clip_starts.tolist() == [0, 8, 12]          # clip_stride=8, the last clip at 12
  assert len(targets) == 1 and targets[0].tolist() == [2] * 4   # the name's index, every clip
  assert result.class_names == tuple(REVERSED_NAMES)
  assert result.segments == [] and np.all(result.boxes == -1) and not result.localized
  assert result.summary()['segments'] is None


@pytest.mark.parametrize('video, kwargs, error, message', [
    (np.zeros((4, 8, 8, 3), np.float32), {}, ValueError, r'must be uint8 RGB.*np\.clip'),
    (np.zeros((8, 8, 3), np.uint8), {}, ValueError, r'one frame.*frames\[None\]'),
    (np.zeros((4, 8, 8, 4), np.uint8), {}, ValueError, r'RGBA.*frames\[\.\.\., :3\]'),
    ('missing.avi', {}, FileNotFoundError, r"'missing.avi' does not exist; pass a video file"),
    (np.zeros((4, 8, 8, 3), np.uint8), {'target': 'jump'}, ValueError,
     r"target='jump' is not a class name"),
    (np.zeros((4, 8, 8, 3), np.uint8), {'method': 'cam'}, ValueError, r'config.explain.method'),
])
def test_bad_inputs_name_the_fix(checkpoint, video, kwargs, error, message):
  with pytest.raises(error, match=message):
    gla_jax.explain_video(video, checkpoint=checkpoint, progress=False, **kwargs)


def test_weights_that_cannot_rebuild_a_model_ask_for_a_config(setting, tmp_path):
  (tmp_path / 'x.pth').write_bytes(b'')
  frames = np.zeros((4, 8, 8, 3), np.uint8)
  # metadata {'preset': 'tiny'} alone: the default 101 classes, not the weights' 8.
  with pytest.raises(ValueError, match='(?i)classifier|num_classes'):
    gla_jax.explain_video(frames, checkpoint=os.path.join(setting[1], weights.CONVERTED_DIR))
  with pytest.raises(ValueError, match=r'PyTorch file, which stores no config: pass config='):
    gla_jax.explain_video(frames, checkpoint=str(tmp_path / 'x.pth'))
  with pytest.raises(ValueError, match='Pass checkpoint=.*not neither'):
    gla_jax.explain_video(frames)
  with pytest.raises(ValueError, match=r'names no known model.*pass config='):
    model_loading.config_from_metadata({'preset': 'unknown'})


def test_configs_of_older_checkpoints_are_laid_over_the_defaults():
  old = model_loading.config_from_metadata({'preset': 'tiny', 'num_classes': 5})   # no config
  assert (old.model.preset, old.model.num_classes, old.data.crop_size) == ('tiny', 5, 112)
  saved = tiny.get_config().to_dict()
  del saved['localize']['threshold']                        # an older version lacked a key
  saved['explain']['retired_key'] = 1                       # ... or had one no longer there
  config = model_loading.config_from_metadata({'config': saved})
  assert config.localize.threshold == 0.5 and 'retired_key' not in config.explain
  assert (config.data.crop_size, config.data.mean) == (16, tuple(sampling.ACTIVITYNET_MEAN))


def test_preprocess_is_the_models_input_without_a_config():
  frames = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), np.uint8)
  config = tiny.get_config()
  got = gla_jax.preprocess(frames, crop_size=16, mean=config.data.mean, std=(2.0, 4.0, 8.0))
  expected = (sampling.crop_resize(frames, 4, 0, 40, 16).astype(np.float64)
              - np.array(config.data.mean)) / np.array([2.0, 4.0, 8.0])
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)
  assert got.dtype == np.float32 and got.shape == (3, 16, 16, 3)
