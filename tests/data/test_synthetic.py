"""Tests of the synthetic action dataset: ground truth checked against the pixels."""
import json
import math
import os
import time

import cv2
import numpy as np
import pytest
from scipy import ndimage
from scipy import stats

from gla_jax.data import natural_images
from gla_jax.data import synthetic
from gla_jax.data import synthetic_scenes
from gla_jax.data import synthetic_settings
from tests.data import decoding

SMALL = synthetic_settings.SyntheticConfig(height=64, width=64)
TINY = synthetic_settings.SyntheticConfig(height=32, width=32)
NATURAL = synthetic_settings.SyntheticConfig.natural(num_frames=8, height=32, width=32)
NUM_CLASSES = len(synthetic_settings.CLASS_NAMES)


def actor_masks(params):
  """bool [T, H, W]: pixels that change when the actor is drawn."""
  with_actor, _, _ = synthetic.render(params, draw_actor=True)
  without_actor, _, _ = synthetic.render(params, draw_actor=False)
  return np.any(with_actor != without_actor, axis=-1)


def mask_box(mask):
  """(x0, y0, x1, y1) with exclusive x1/y1 of a non-empty bool [H, W] mask."""
  ys, xs = np.nonzero(mask)
  return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def orientation(mask):
  """Angle of the mask's principal axis in image coordinates (radians, mod pi)."""
  m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
  return 0.5 * math.atan2(2 * m['mu11'], m['mu20'] - m['mu02'])


def test_class_names():
  assert len(synthetic_settings.CLASS_NAMES) >= 8
  assert len(set(synthetic_settings.CLASS_NAMES)) == len(synthetic_settings.CLASS_NAMES)
  dataset = synthetic.SyntheticDataset(TINY, 'train', size=4)
  assert dataset.class_names == list(synthetic_settings.CLASS_NAMES)


def test_deterministic_per_seed_index_split():
  a = synthetic.generate_clip(SMALL, 5, 'train')
  b = synthetic.generate_clip(SMALL, 5, 'train')
  for key in ('video', 'boxes', 'present', 'segment'):
    np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
  assert a.label == b.label
  other_index = synthetic.generate_clip(SMALL, 6, 'train')
  assert not np.array_equal(a.video, other_index.video)
  other_seed = synthetic.generate_clip(
      synthetic_settings.SyntheticConfig(height=64, width=64, seed=1), 5)
  assert not np.array_equal(a.video, other_seed.video)


def test_train_and_val_are_disjoint():
  train = {synthetic.generate_clip(TINY, i, 'train').video.tobytes() for i in range(24)}
  val = {synthetic.generate_clip(TINY, i, 'val').video.tobytes() for i in range(24)}
  assert len(train) == len(val) == 24
  assert not train & val


def test_every_class_appears_and_labels_balanced():
  dataset = synthetic.SyntheticDataset(TINY, 'val', size=2 * NUM_CLASSES)
  labels = [dataset[i]['label'] for i in range(len(dataset))]
  assert np.bincount(labels, minlength=NUM_CLASSES).tolist() == [2] * NUM_CLASSES


@pytest.mark.parametrize('config', [
    SMALL, TINY, synthetic_settings.SyntheticConfig.hard(height=64, width=64),
    synthetic_settings.SyntheticConfig.hard(height=32, width=32),
    synthetic_settings.SyntheticConfig.natural(height=64, width=64), NATURAL,
    synthetic_settings.SyntheticConfig.natural(height=32, width=32, noise_std=12.0,
                                               moving_distractors=False)],
    ids=['64', '32', 'hard64', 'hard32', 'natural64', 'natural32', 'natural_static_noisy'])
def test_boxes_are_the_box_of_the_pixels_the_actor_changes(config):
  for index in range(3 * NUM_CLASSES):
    clip = synthetic.generate_clip(config, index, 'train')
    masks = actor_masks(clip.params)
    start, end = clip.segment
    in_segment = (np.arange(config.num_frames) >= start) & (np.arange(config.num_frames) < end)
    np.testing.assert_array_equal(clip.present, in_segment)
    np.testing.assert_array_equal(masks.any(axis=(1, 2)), in_segment)
    assert end - start >= math.ceil(config.min_segment_fraction * config.num_frames)
    for t in range(config.num_frames):
      if clip.present[t]:
        np.testing.assert_array_equal(clip.boxes[t], mask_box(masks[t]), err_msg=f'{index} {t}')
      else:
        np.testing.assert_array_equal(clip.boxes[t], [-1, -1, -1, -1])
    assert clip.boxes.dtype == np.float32


def test_segment_is_sometimes_the_whole_clip():
  segments = [tuple(synthetic.generate_clip(TINY, i).segment) for i in range(40)]
  full = sum(s == (0, TINY.num_frames) for s in segments)
  assert 0 < full < len(segments)
  hard = synthetic_settings.SyntheticConfig.hard(height=32, width=32)
  assert all(tuple(synthetic.generate_clip(hard, i).segment) != (0, 16) for i in range(40))


def test_motion_matches_class():
  config = synthetic_settings.SyntheticConfig()  # 112x112: rasterisation error is small
  for index in range(3 * NUM_CLASSES):
    clip = synthetic.generate_clip(config, index, 'val')
    name = clip.class_name
    masks = actor_masks(clip.params)[clip.present]  # [L, H, W]
    moments = [cv2.moments(m.astype(np.uint8), binaryImage=True) for m in masks]
    centre = np.array([(m['m10'] / m['m00'], m['m01'] / m['m00']) for m in moments])
    area = np.array([m['m00'] for m in moments])
    # The principal axis is defined modulo pi; steps are far below pi / 2.
    angle = np.unwrap([orientation(m) for m in masks], period=np.pi)
    step_centre, step_angle = np.diff(centre, axis=0), np.diff(angle)
    if name.startswith('move_'):
      axis = 0 if name in ('move_left', 'move_right') else 1
      sign = -1 if name in ('move_left', 'move_up') else 1
      assert np.all(sign * step_centre[:, axis] > 0.5), (index, name, step_centre)
      # Across the motion only rasterisation moves the centroid (~1 pixel).
      drift = centre[:, 1 - axis] - centre[0, 1 - axis]
      assert np.all(np.abs(drift) < 1.5), (index, name, centre)
    slope = np.polyfit(np.arange(len(area)), np.log(area), 1)[0]
    if name in ('grow', 'shrink'):
      sign = 1 if name == 'grow' else -1
      # Thin parts make single steps of the pixel area noisy: fit log-area, which
      # grows at twice the log-radius rate of the generator.
      rate = np.diff(np.log(clip.params.actor.radius[clip.present])).mean()
      assert sign * slope > 0 and sign * rate > 0, (index, name, area)
      np.testing.assert_allclose(slope, 2 * rate, rtol=0.4)
    else:
      # Rasterisation of thin parts alone moves the area by up to ~15% per frame,
      # but with no trend; grow/shrink change log-area by >= 0.06 per frame.
      assert abs(slope) < 0.015, (index, name, area)
    if name in ('rotate_cw', 'rotate_ccw'):
      # Image y points down, so a growing angle turns clockwise on screen.
      sign = 1 if name == 'rotate_cw' else -1
      assert np.all(sign * step_angle > 0), (index, name, np.rad2deg(step_angle))
      # The measured turn follows the generator's angle up to rasterisation
      # (steps are 8-15 degrees; measured per-step error stays below ~5).
      truth = np.diff(clip.params.actor.angle[clip.present])
      np.testing.assert_allclose(step_angle, truth, atol=np.deg2rad(7))
      np.testing.assert_allclose(step_angle.sum(), truth.sum(), rtol=0.1)
    else:
      drift = np.abs(angle - angle[0])
      assert np.all(drift < np.deg2rad(8)), (index, name, np.rad2deg(drift))


def test_hard_preset_differs_as_specified():
  default = synthetic_settings.SyntheticConfig.default()
  hard = synthetic_settings.SyntheticConfig.hard()
  assert synthetic_settings.DIFFICULTIES['hard'] == hard
  assert synthetic_settings.SyntheticConfig.from_difficulty('default') == default
  assert hard.actor_size[1] < default.actor_size[0]
  assert hard.moving_distractors and not default.moving_distractors
  assert hard.noise_std > 0 == default.noise_std
  assert hard.num_distractors > default.num_distractors
  # The demo presets: the same scenes, faster motions, the actor present longer.
  demo = synthetic_settings.DIFFICULTIES['demo']
  demo_hard = synthetic_settings.DIFFICULTIES['demo_hard']
  for name in ('translation_speed', 'scale_speed', 'rotation_speed'):
    assert getattr(demo, name)[0] > getattr(default, name)[1], name
    assert getattr(demo_hard, name) == getattr(demo, name), name
  assert demo.min_segment_fraction > default.min_segment_fraction
  assert demo.actor_size[0] > default.actor_size[0] and not demo.moving_distractors
  assert demo_hard.moving_distractors and demo_hard.noise_std == hard.noise_std
  assert demo_hard.actor_size[1] <= demo.actor_size[0]

  def scene(config, index):  # frames without the actor
    return synthetic.render(synthetic_scenes.sample_params(config, index), draw_actor=False)[0]

  # Default: static distractors and no noise, the actor is the only change.
  assert all(np.all(scene(SMALL, i) == scene(SMALL, i)[:1]) for i in range(4))
  # Moving distractors alone change the scene in a small part of the frame.
  moving = synthetic_settings.SyntheticConfig.hard(height=64, width=64, noise_std=0.0)
  changed = np.mean(np.any(scene(moving, 0) != scene(moving, 0)[:1], axis=-1))
  assert 0 < changed < 0.5
  # Noise changes most pixels of every frame.
  noisy = synthetic_settings.SyntheticConfig.hard(height=64, width=64, moving_distractors=False)
  frames = scene(noisy, 0).astype(np.int16)
  assert np.mean(np.any(frames[1:] != frames[:1], axis=-1)) > 0.8
  assert 0.5 * noisy.noise_std < np.std(frames[1:] - frames[:1]) / math.sqrt(2) < 1.5 * noisy.noise_std
  # Smaller actors: compare mean box sides over the same indices.
  side = lambda config: np.mean([
      np.mean((c.boxes[c.present, 2:] - c.boxes[c.present, :2]))
      for c in (synthetic.generate_clip(config, i) for i in range(16))])
  assert side(synthetic_settings.SyntheticConfig.hard(height=64, width=64)) < 0.7 * side(SMALL)


def test_long_video_has_one_segment():
  clip = synthetic.generate_video(TINY, 3, num_frames=96)
  assert clip.video.shape == (96, 32, 32, 3)
  start, end = clip.segment
  assert 16 <= end - start <= 32
  expected = (np.arange(96) >= start) & (np.arange(96) < end)
  np.testing.assert_array_equal(clip.present, expected)
  masks = actor_masks(clip.params)
  np.testing.assert_array_equal(masks.any(axis=(1, 2)), expected)
  for t in np.flatnonzero(expected):
    np.testing.assert_array_equal(clip.boxes[t], mask_box(masks[t]))
  assert not np.array_equal(clip.video[:16], synthetic.generate_clip(TINY, 3, 'val').video)


def test_dataset_items():
  dataset = synthetic.SyntheticDataset(TINY, 'train', size=5)
  assert len(dataset) == 5
  item = dataset[-1]
  assert set(item) == {'video', 'label', 'boxes', 'present', 'segment'}
  assert item['video'].dtype == np.uint8 and item['video'].shape == (16, 32, 32, 3)
  assert isinstance(item['label'], int) and item['label'] == 4
  assert item['boxes'].dtype == np.float32 and item['boxes'].shape == (16, 4)
  assert item['present'].dtype == bool and item['present'].shape == (16,)
  assert item['segment'].dtype == np.int32 and item['segment'].shape == (2,)
  np.testing.assert_array_equal(item['video'], dataset[4]['video'])
  with pytest.raises(IndexError):
    dataset[5]


def test_clear_errors():
  with pytest.raises(ValueError, match='split'):
    synthetic.generate_clip(TINY, 0, 'test')
  with pytest.raises(ValueError, match='actor_size'):
    synthetic_settings.SyntheticConfig(actor_size=(0.4, 0.2))
  with pytest.raises(ValueError, match='difficulty'):
    synthetic_settings.SyntheticConfig.from_difficulty('extreme')
  with pytest.raises(ValueError, match='index'):
    synthetic.generate_clip(TINY, -1)


@pytest.mark.parametrize('codec,container,max_error', [
    ('MJPG', '.avi', 10.0), ('mp4v', '.mp4', 10.0), ('FFV1', '.avi', 0.0)])
def test_export_roundtrip(tmp_path, codec, container, max_error):
  config = SMALL
  root = str(tmp_path / codec)
  returned = synthetic.export_video_folder(root, config, 'train', NUM_CLASSES, codec=codec,
                                           container=container, fps=10)
  with open(os.path.join(root, 'annotations.json')) as f:
    annotations = json.load(f)
  assert annotations == json.loads(json.dumps(returned))
  assert annotations['classes'] == list(synthetic_settings.CLASS_NAMES)
  assert len(annotations['videos']) == NUM_CLASSES
  for entry in annotations['videos']:
    clip = synthetic.generate_clip(config, entry['index'], 'train')
    name = synthetic_settings.CLASS_NAMES[entry['label']]
    assert entry['path'].startswith(f'{name}/{name}_') and entry['path'].endswith(container)
    assert (entry['num_frames'], entry['height'], entry['width']) == (16, 64, 64)
    assert entry['segments'] == [clip.segment.tolist()]
    assert [b is not None for b in entry['boxes']] == clip.present.tolist()
    for box, truth in zip(entry['boxes'], clip.boxes):
      if box is not None:
        assert box == truth.tolist()
    frames = decoding.sequential_decode(os.path.join(root, entry['path']))
    assert frames.shape == clip.video.shape
    assert np.abs(frames.astype(np.int16) - clip.video).mean() <= max_error
  with open(os.path.join(root, 'trainlist01.txt')) as f:
    lines = f.read().splitlines()
  assert lines == [f'{v["path"]} {v["label"] + 1}' for v in annotations['videos']]
  with open(os.path.join(root, 'classInd.txt')) as f:
    assert f.readline().split() == ['1', synthetic_settings.CLASS_NAMES[0]]


def test_export_val_writes_testlist(tmp_path):
  synthetic.export_video_folder(str(tmp_path), TINY, 'val', 2)
  with open(tmp_path / 'testlist01.txt') as f:
    assert f.read().splitlines() == ['move_left/move_left_000000.avi',
                                     'move_right/move_right_000001.avi']
  assert not (tmp_path / 'trainlist01.txt').exists()


def test_export_unavailable_codec_raises(tmp_path):
  with pytest.raises(ValueError, match='FourCC'):
    synthetic.export_video_folder(str(tmp_path), TINY, 'train', 1, codec='H264X')


def test_generation_speed(capsys):
  """Prints clips/s (not asserted: the CPUs are shared)."""
  results = []
  for name, config, count in (('default 16x112x112', synthetic_settings.SyntheticConfig(), 100),
                              ('hard 16x112x112', synthetic_settings.SyntheticConfig.hard(), 30),
                              ('default 16x32x32', TINY, 100),
                              ('natural 16x112x112', synthetic_settings.SyntheticConfig.natural(), 30),
                              ('natural 8x32x32', NATURAL, 100)):
    synthetic.generate_clip(config, 0)
    begin = time.perf_counter()
    for i in range(count):
      synthetic.generate_clip(config, i)
    results.append(f'{name}: {count / (time.perf_counter() - begin):.0f} clips/s')
  with capsys.disabled():
    print('\nsynthetic generation, one core: ' + '; '.join(results))


# ------------------------------------------------------------------------------
# The 'natural' difficulty: photographs, a moving camera, textured shapes.
# ------------------------------------------------------------------------------


def test_every_photo_loads_offline(monkeypatch):
  """Each photograph is read from the installed package: any network access fails here."""
  import socket

  def refuse(*args, **kwargs):
    raise AssertionError('a photograph tried to reach the network')

  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)
  natural_images.original.cache_clear()
  natural_images.photo.cache_clear()
  for name in natural_images.PHOTO_NAMES:
    image = natural_images.original(name)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
    assert min(image.shape[:2]) >= 200, name
    # Colour and texture: the channels differ and the picture is not flat.
    chroma = image.max(axis=-1).astype(np.int16) - image.min(axis=-1)
    assert image.std() > 10 and chroma.mean() > 3, name
    resized = natural_images.photo(name, 32)
    assert min(resized.shape[:2]) == 64 and not resized.flags.writeable, name
    ratio = image.shape[1] / image.shape[0]
    assert abs(resized.shape[1] / resized.shape[0] - ratio) < 0.05, name
  with pytest.raises(ValueError, match='photograph'):
    natural_images.original('lena')


def test_natural_clips_are_deterministic_across_photo_reloads():
  first = synthetic.generate_clip(NATURAL, 3, 'val')
  natural_images.original.cache_clear()
  natural_images.photo.cache_clear()
  again = synthetic.generate_clip(NATURAL, 3, 'val')
  for key in ('video', 'boxes', 'present', 'segment'):
    np.testing.assert_array_equal(getattr(first, key), getattr(again, key))
  assert not np.array_equal(first.video, synthetic.generate_clip(NATURAL, 4, 'val').video)
  assert not np.array_equal(first.video, synthetic.generate_clip(NATURAL, 3, 'train').video)
  # Actor never in the whole clip: distractors move like actors, its segment tells it apart.
  segments = [tuple(synthetic.generate_clip(NATURAL, i).segment) for i in range(16)]
  assert all(s != (0, NATURAL.num_frames) for s in segments)


def test_camera_pans_as_its_path_says():
  """Frame 4 of the bare camera is frame 0 shifted by the path's pan (scipy's shift)."""
  config = synthetic_settings.SyntheticConfig.natural(
      height=64, width=64, num_distractors=0, camera_pan_speed=(0.04, 0.04),
      camera_zoom_speed=(0.0, 0.0))
  for index in range(4):
    params = synthetic_scenes.sample_params(config, index)
    video = synthetic.render(params, draw_actor=False)[0].astype(np.float32).mean(axis=-1)
    camera = params.camera
    np.testing.assert_allclose(camera.scale, camera.scale[0])
    expected = -(camera.center[4] - camera.center[0]) / camera.scale[0]  # frame pixels
    assert np.linalg.norm(expected) > 0.04 * 64 * 4 * 0.9  # the pan is not lowered here
    centre = slice(16, 48)  # inside the view of both frames

    def error(shift_xy):
      moved = ndimage.shift(video[0], (shift_xy[1], shift_xy[0]), order=1, mode='nearest')
      return np.abs(moved - video[4])[centre, centre].mean()

    best = error(expected)
    assert best < 0.5 * error((0.0, 0.0)), index
    # A pixel off in any direction matches worse: the pan is right to within a pixel.
    for step in ((1, 0), (-1, 0), (0, 1), (0, -1)):
      assert best < error(expected + np.array(step)), (index, step)


def test_camera_zooms_as_its_path_says():
  """Frame t is frame 0 magnified by scale[0] / scale[t] about the centre."""
  config = synthetic_settings.SyntheticConfig.natural(
      height=64, width=64, num_distractors=0, camera_pan_speed=(0.0, 0.0),
      camera_zoom_speed=(0.03, 0.03))
  for index in range(4):
    params = synthetic_scenes.sample_params(config, index)
    video = synthetic.render(params, draw_actor=False)[0].astype(np.float32)
    scale = params.camera.scale
    np.testing.assert_allclose(abs(np.log(scale[-1] / scale[0])), 0.03 * 15, rtol=1e-6)
    magnification = scale[0] / scale[-1]
    zoomed = cv2.warpAffine(video[0], cv2.getRotationMatrix2D((31.5, 31.5), 0, magnification),
                            (64, 64), flags=cv2.INTER_LINEAR)
    centre = slice(16, 48)  # inside the view of both frames
    error = np.abs(zoomed - video[-1])[centre, centre].mean()
    unzoomed = np.abs(video[0] - video[-1])[centre, centre].mean()
    assert error < 0.35 * unzoomed, (index, error, unzoomed)


def test_default_natural_camera_always_moves():
  config = synthetic_settings.SyntheticConfig.natural(height=32, width=32, num_distractors=0)
  for index in range(16):
    params = synthetic_scenes.sample_params(config, index)
    camera = params.camera
    pan = np.linalg.norm(camera.center[-1] - camera.center[0]) / camera.scale.mean()
    zoom = abs(math.log(camera.scale[-1] / camera.scale[0]))
    assert pan > 0.01 * 32 * 15 * 0.5 or zoom > 0.01 * 15 * 0.5, index
    frames = synthetic.render(params, draw_actor=False)[0].astype(np.int16)
    assert np.abs(frames[-1] - frames[0]).mean() > 2, index


def test_texture_is_glued_to_the_shape():
  """Actor pixels are the photo at the inverse of the shape's pose (map_coordinates here)."""
  config = synthetic_settings.SyntheticConfig.natural(height=64, width=64)
  for index in range(NUM_CLASSES):
    clip = synthetic.generate_clip(config, index)
    actor = clip.params.actor
    photo = natural_images.photo(actor.texture.photo, 64).astype(np.float64)
    masks = actor_masks(clip.params)
    for t in np.flatnonzero(clip.present):
      inner = cv2.erode(masks[t].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
      ys, xs = np.nonzero(inner)
      offset = np.stack([xs, ys], axis=-1) - actor.center[t]  # [N, 2]
      cos, sin = math.cos(actor.angle[t]), math.sin(actor.angle[t])
      unit = np.stack([cos * offset[:, 0] + sin * offset[:, 1],
                       -sin * offset[:, 0] + cos * offset[:, 1]], -1) / actor.radius[t]
      source = np.asarray(actor.texture.origin) + actor.texture.scale * unit  # (x, y)
      expected = np.stack([ndimage.map_coordinates(photo[..., c], [source[:, 1], source[:, 0]],
                                                   order=1, mode='mirror') for c in range(3)], -1)
      error = np.abs(clip.video[t][ys, xs] - expected).mean()
      assert error < 1.5, (index, t, error)


def _shape_colours(clip, config):
  """Mean RGB of the actor (first present frame) and of each distractor (frame 0)."""
  side = config.height
  actor_frame = int(np.flatnonzero(clip.present)[0])
  actor = clip.video[actor_frame][actor_masks(clip.params)[actor_frame]].mean(axis=0)
  bare = synthetic.render(clip.params, draw_actor=False)[0][0]
  masks = []
  for track in clip.params.moving_distractors:
    mask = np.zeros((side, side), np.uint8)
    cv2.fillPoly(mask, [np.rint(track.polygons()[0]).astype(np.int32)], 1)
    masks.append(mask.astype(bool))
  colours = []
  for i, mask in enumerate(masks):
    own = mask & ~np.any(masks[i + 1:], axis=0) if i + 1 < len(masks) else mask
    own = cv2.erode(own.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if own.sum() >= 10:
      colours.append(bare[own].mean(axis=0))
  return actor, colours


def test_actor_and_distractors_share_the_texture_pool():
  config = synthetic_settings.SyntheticConfig.natural(num_frames=8, height=48, width=48)
  actor_photos, distractor_photos, actor_colours, distractor_colours = [], [], [], []
  for index in range(120):
    clip = synthetic.generate_clip(config, index)
    params = clip.params
    shapes = (params.actor,) + params.moving_distractors
    # A shape is never cut from the photograph it moves over.
    assert all(track.texture.photo != params.camera.photo for track in shapes)
    actor_photos.append(params.actor.texture.photo)
    distractor_photos += [track.texture.photo for track in params.moving_distractors]
    actor, distractors = _shape_colours(clip, config)
    actor_colours.append(actor)
    distractor_colours += distractors
  names = natural_images.PHOTO_NAMES
  table = np.array([[actor_photos.count(n) for n in names],
                    [distractor_photos.count(n) for n in names]])
  assert np.all(table > 0)  # every photograph serves both
  assert stats.chi2_contingency(table).pvalue > 0.01
  actor_colours, distractor_colours = np.array(actor_colours), np.array(distractor_colours)
  assert len(distractor_colours) > 150
  for channel in range(3):
    assert stats.ks_2samp(actor_colours[:, channel], distractor_colours[:, channel]).pvalue > 0.01
  # And the pool is varied: shapes are not one colour.
  assert actor_colours.std(axis=0).min() > 20 and distractor_colours.std(axis=0).min() > 20


def test_natural_settings_errors():
  with pytest.raises(ValueError, match='natural_images=True'):
    synthetic_settings.SyntheticConfig(camera_pan_speed=(0.0, 0.02))
  with pytest.raises(ValueError, match='camera_zoom_speed'):
    synthetic_settings.SyntheticConfig.natural(camera_zoom_speed=(0.03, 0.01))
  assert synthetic_settings.DIFFICULTIES['natural'].natural_images
  flat = synthetic.generate_clip(TINY, 0).params.actor
  with pytest.raises(ValueError, match='no texture'):
    flat.texture_affines()


def test_natural_long_video_stays_inside_the_photo():
  config = synthetic_settings.SyntheticConfig.natural(height=32, width=32)
  clip = synthetic.generate_video(config, 1, num_frames=96)
  camera = clip.params.camera
  photo_height, photo_width = natural_images.photo(camera.photo, 32).shape[:2]
  half = camera.scale[:, None] * np.array([16.0, 16.0])
  assert np.all(camera.center - half >= -1e-6)
  assert np.all(camera.center + half <= np.array([photo_width, photo_height]) + 1e-6)
  masks = actor_masks(clip.params)
  np.testing.assert_array_equal(masks.any(axis=(1, 2)), clip.present)
