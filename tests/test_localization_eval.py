"""The localization comparison end to end: every method on the same clips, table, verdict."""
import json
import math
import os

import jax
import ml_collections
import numpy as np
import pytest

from configs import tiny
from gla_jax import explain
from gla_jax import localization_eval
from gla_jax import models
from gla_jax.data import loader
from gla_jax.data import sources
from gla_jax.data import video_io
from gla_jax import validation
from gla_jax.explain import compared_methods
from gla_jax.explain import comparison
from gla_jax.explain import detection_map
from gla_jax.explain import faithfulness
from gla_jax.explain import localize
from gla_jax.explain import perturbation
from gla_jax.models import building
from gla_jax.outputs import comparison_report

THRESHOLDS = (0.3, 0.5, 0.7)
METRICS = ('loc_acc@0.5', 'mean_iou', 'temporal_iou', 'pointing_game', 'deletion_auc',
           'insertion_auc', 'frame_map@0.5', 'video_map@0.2', 'video_map@0.5')
STD = (50.0, 60.0, 70.0)          # not 1, which would hide a missing division


UPSAMPLINGS = ('half_pixel', 'receptive_field')
# Every kind but the masked methods (a forward pass per channel: tested on a narrow model).
GRADIENT_KINDS = tuple(kind for kind in compared_methods.KINDS
                       if kind not in compared_methods.MASKED_METHODS)


def _config(size):
  """The tiny config, gated, on 6 synthetic clips of 8 x size x size, both up-samplings."""
  config = tiny.get_config()
  with config.unlocked():
    config.data.crop_size = size
    config.data.std = STD
    config.data.synthetic.update(height=size, width=size, val_size=6)
    config.localize.update(max_clips=5, batch_size=2, thresholds=THRESHOLDS, seed=1,
                           held_out_fraction=0.4, deletion_steps=1, curve_clips=1,
                           road_clips=0, num_pictures=1, methods=GRADIENT_KINDS, upsamplings=UPSAMPLINGS)
    config.model.gated = True
  return config


def _run(tmp_path_factory, config):
  """localization_eval.run's result, its inputs, and the clips it gathered (maps included)."""
  model = building.create_model(config)
  size = config.data.crop_size
  variables = models.init_variables(model, jax.random.key(0), (1, 8, size, size, 3))
  workdir = str(tmp_path_factory.mktemp('loc_eval'))
  gathered = []
  real_gather_clips = localization_eval.gather_clips

  def gather_clips(*args, **kwargs):
    gathered.append(real_gather_clips(*args, **kwargs))
    return gathered[-1]

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(localization_eval, 'gather_clips', gather_clips)
    result = localization_eval.run(config, workdir, variables)
  return result, config, model, variables, workdir, gathered[0]


@pytest.fixture(scope='module')
def compared(tmp_path_factory):
  """One run on a gated model: its gates are compared besides every other method.

  Gated, so that one compilation covers all methods (a plain model's methods
  are the same minus the gates, see test_gated_model_adds_its_gates); 48 px,
  so that layer4 is 1 x 2 x 2 and its map is not constant. Its clips' maps are
  also checked against explain.explain (test_method_maps_are_explain_maps).
  """
  return _run(tmp_path_factory, _config(48))


def _check_report(result, workdir, clips):
  order = result['order']
  assert set(result['methods']) == set(order) and order[0] == comparison.BASELINE
  assert sorted(result['held_out_clips'] + result['reported_clips']) == list(range(5))
  assert len(result['held_out_clips']) == 2                     # round(5 * 0.4)
  for name, entry in result['methods'].items():
    assert entry['threshold'] in THRESHOLDS, name
    assert 0 <= entry['constant_maps'] <= 1
    assert set(entry['held_out_loc_acc']) == set(THRESHOLDS)
    summary = entry['summary']
    assert summary['num_clips'] == 3
    for key in METRICS:
      value = summary[key]
      if key == 'temporal_iou':
        assert math.isnan(value) or 0 <= value <= 1, (name, key)
      else:
        assert 0 <= value <= 1, (name, key, value)

  # Frame-mAP and video-mAP: the reported clips' boxes at each method's chosen threshold.
  reported = np.array(result['reported_clips'])
  for name in (comparison.BASELINE, 'gate:mean@receptive_field'):
    entry = result['methods'][name]
    boxes = localize.frame_boxes(clips['maps'][name][reported], entry['threshold'])
    means, per_class = detection_map.detection_metrics(clips, reported, boxes, 0.5, (0.2, 0.5))
    assert {key: entry['summary'][key] for key in means} == means, name
    assert entry['class_ap'] == per_class
    assert set(per_class['frame_map@0.5']) == set(clips['label'][reported].tolist())

  table = open(os.path.join(workdir, 'loc_eval', 'comparison.md')).read()
  assert '| frame-mAP@0.5 | video-mAP@0.2 | video-mAP@0.5 |' in table
  rows = [line for line in table.splitlines() if line.startswith('| `')]
  assert [row.split('`')[1] for row in rows] == order
  assert table.rstrip().endswith(result['verdict'])
  saved = json.load(open(os.path.join(workdir, 'loc_eval', 'comparison.json')))
  assert saved['order'] == order and saved['verdict'] == result['verdict']
  assert saved['methods'][comparison.BASELINE]['threshold'] == \
      result['methods'][comparison.BASELINE]['threshold']
  assert [os.path.basename(p) for p in result['files']['pictures']] == \
      [f'clip_{result["reported_clips"][0]}.png']
  assert os.path.getsize(result['files']['pictures'][0]) > 1000
  assert os.path.getsize(result['files']['plot']) > 1000                  # comparison.png


def test_every_method_is_compared(compared):
  result, _, model, _, workdir, clips = compared
  own = [
      'gradcam:layer4', 'gradcam:layer3', 'gradcam:layer2', 'gradcam:layer1', 'gradcam:conv1',
      'global-local:mean', 'global-local:max', 'global-local:product', 'layercam:mean',
      'gradcam_pp:mean', 'xgradcam:mean', 'hirescam:mean', 'gradcam_elementwise:mean',
      'eigencam:mean', 'gate:layer4', 'gate:layer3', 'gate:layer2', 'gate:layer1', 'gate:mean']
  # The config's own up-sampling (half_pixel) keeps the plain names; the other has a suffix.
  assert result['order'] == own + [f'{name}@receptive_field' for name in own]
  assert result['order'] == list(comparison.method_names(model, GRADIENT_KINDS, UPSAMPLINGS))
  assert comparison.method_names(model) == (*own[:14], 'scorecam:layer4', 'ablationcam:layer4',
                                            *own[14:])
  assert result['upsamplings'] == list(UPSAMPLINGS) and result['own_upsampling'] == 'half_pixel'
  for name in result['order']:
    entry = result['methods'][name]
    assert (entry['method'], entry['upsampling']) == (
        name.partition('@')[0], name.partition('@')[2] or 'half_pixel')
  _check_report(result, workdir, clips)
  assert result['curve_clips'] == 1


def test_verdict_compares_the_best_fusion_with_last_layer_gradcam(compared):
  """Per up-sampling: its best fusion against its own last-layer Grad-CAM."""
  result = compared[0]
  methods = result['methods']
  assert result['best_global_local'] == result['best_global_local_by_upsampling']['half_pixel']
  for upsampling, suffix in (('half_pixel', ''), ('receptive_field', '@receptive_field')):
    best = result['best_global_local_by_upsampling'][upsampling]
    held_out_best = {name + suffix: max(methods[name + suffix]['held_out_loc_acc'].values())
                     for name in comparison.GLOBAL_LOCAL}
    assert held_out_best[best] == max(held_out_best.values())
    ours, theirs = (methods[name]['summary']['loc_acc@0.5']
                    for name in (best, comparison.BASELINE + suffix))
    assert f'loc acc@0.5 {ours:.3f} vs {theirs:.3f} ({ours - theirs:+.3f})' in result['verdict']
  assert 'With `receptive_field` up-sampling, the best global-local' in result['verdict']
  assert result['verdict'].endswith(comparison.upsampling_sentence(
      methods, 0.5, 'half_pixel', 'receptive_field'))


def test_method_maps_are_explain_maps(compared):
  """Every method of the run under both up-samplings, against explain.explain with its options."""
  _, config, model, variables, _, clips = compared
  assert set(clips['maps']) == set(comparison.method_names(model, GRADIENT_KINDS, UPSAMPLINGS))
  # The first batch's clips (explaining them costs less than all five).
  rows = slice(0, config.localize.batch_size)
  maps = {name: value[rows] for name, value in clips['maps'].items()}
  target = clips['target'][rows]
  # The uint8 clips normalised by numpy, as the model takes them (std is not 1).
  assert tuple(config.data.std) == STD
  normalised = ((clips['video'][rows].astype(np.float32)
                 - np.asarray(config.data.mean, np.float32)) / np.asarray(STD, np.float32))
  # Grad-CAM's stages, fusions and the gates under both up-samplings (a compile each); the
  # other kinds once each, one per up-sampling (a compile each): hirescam and
  # gradcam_elementwise take xgradcam's path, one layer_map formula apart.
  for upsampling, suffix, new_methods in (
      ('half_pixel', '', ('xgradcam',)),
      ('receptive_field', '@receptive_field', ('eigencam',))):
    every_stage = explain.explain(model, variables, normalised, upsampling=upsampling)
    np.testing.assert_array_equal(target, every_stage.target)
    for name, layer_map in every_stage.layer_maps.items():
      np.testing.assert_allclose(maps[f'gradcam:{name}{suffix}'], layer_map, atol=1e-5)
    assert np.ptp(np.asarray(every_stage.layer_maps['layer4'])) > 0     # not a constant map
    np.testing.assert_allclose(maps['global-local:mean' + suffix], every_stage.attention,
                               atol=1e-5)
    for stage, gate in every_stage.gate_maps.items():
      np.testing.assert_allclose(maps[f'gate:{stage}{suffix}'], gate, atol=1e-5)
    for method in new_methods:
      fused = explain.explain(model, variables, normalised, method=method, upsampling=upsampling)
      np.testing.assert_allclose(maps[f'{method}:mean{suffix}'], fused.attention, atol=1e-5,
                                 err_msg=method + suffix)
    stages = np.stack([maps[f'gradcam:{name}{suffix}'] for name in models.stage_layer_names(model)])
    np.testing.assert_allclose(maps['global-local:max' + suffix],
                               explain.aggregate_maps(stages, 'max'))
  assert not np.allclose(maps[comparison.BASELINE], maps[comparison.BASELINE + '@receptive_field'])


def test_masked_method_maps_are_explain_maps():
  """Score-CAM and Ablation-CAM of the last layer, on a narrow model."""
  # As narrow as the bottleneck allows: 64 channels in layer4, a forward pass each.
  model = models.ResNeXt3D(stage_sizes=(1, 1, 1, 1), num_classes=3, cardinality=1,
                           widths=(32, 32, 32, 32), stem_width=8)
  variables = models.init_variables(model, jax.random.key(1), (1, 4, 16, 16, 3))
  video = np.random.default_rng(0).integers(0, 256, (1, 4, 16, 16, 3), np.uint8)
  mean, std = (120.0, 110.0, 100.0), (60.0, 60.0, 60.0)
  names = comparison.method_names(model, compared_methods.MASKED_METHODS,
                                  ('receptive_field', 'half_pixel'), 'receptive_field')
  assert names[-2:] == ('scorecam:layer4@half_pixel', 'ablationcam:layer4@half_pixel')
  # One up-sampling (the up-samplings are checked on every other method): a compile each.
  masked = ('scorecam:layer4', 'ablationcam:layer4')
  maps, _, target = comparison.method_maps(model, variables, video, mean, std, names=masked,
                                           own_upsampling='receptive_field', chunk_size=3)
  normalised = np.asarray(models.normalize_video(video, mean, std))
  for name in masked:
    explained = explain.explain(model, variables, normalised, method=name.partition(':')[0],
                                layers=('layer4',), upsampling='receptive_field', chunk_size=5)
    np.testing.assert_array_equal(target, explained.target)
    np.testing.assert_allclose(maps[name], explained.attention, atol=1e-5, err_msg=name)


@pytest.mark.parametrize('key, value, error, message', [
    ('methods', ('gradcam', 'scorecam:layer4', 'smoothgrad'), ValueError,
     r"config.localize.methods=.*unknown \['smoothgrad'\].*kinds of"),
    ('methods', ('gradcam:layer9',), ValueError, r"\['gradcam:layer9'\] name no method"),
    ('methods', ('gate:layer4',), ValueError, r'name no method of this model'),   # not gated
    ('methods', ('layercam', 'layercam'), ValueError, r"\['layercam'\] given twice"),
    ('methods', ('layercam', 3), TypeError, r'config.localize.methods=.*tuple of method names'),
    ('upsamplings', ('bicubic',), ValueError,
     r"config.localize.upsamplings=\('bicubic',\): unknown \['bicubic'\]; choose from "
     r"\('half_pixel', 'receptive_field'\)"),
    ('upsamplings', ('half_pixel', 'half_pixel'), ValueError, 'given twice'),
    ('upsamplings', ('half_pixel', 2), TypeError, r'must be a tuple of up-sampling names'),
])
def test_compared_methods_config_is_checked(key, value, error, message):
  config = tiny.get_config()
  with config.unlocked():
    config.localize[key] = value
  with pytest.raises(error, match=message):
    validation.validate(config)


def test_methods_config_picks_names_and_kinds():
  model = models.ResNeXt3DTiny(num_classes=3)
  # The baseline and the global-local fusions are always kept: the verdict compares them.
  assert comparison.method_names(model, ('layercam', 'gradcam:layer2')) == (
      'gradcam:layer4', 'gradcam:layer2', *comparison.GLOBAL_LOCAL, 'layercam:mean')
  assert comparison.method_names(model, ('eigencam',), ('receptive_field', 'half_pixel'),
                                 'half_pixel') == (
      'gradcam:layer4', *comparison.GLOBAL_LOCAL, 'eigencam:mean',
      'gradcam:layer4@receptive_field',
      *(f'{name}@receptive_field' for name in comparison.GLOBAL_LOCAL),
      'eigencam:mean@receptive_field')


def test_gated_model_adds_its_gates(compared):
  model = compared[2]
  plain = comparison.method_names(model.clone(gated=False))
  assert plain == comparison.method_names(model)[:len(plain)]
  assert not any(name.startswith('gate') for name in plain)
  assert comparison.method_names(model.clone(gate_stages=('layer3', 'layer2')))[-3:] == (
      'gate:layer3', 'gate:layer2', 'gate:mean')


def test_gathered_clips_are_the_real_rows_of_whole_videos(monkeypatch):
  """Video 2 of 6 (2 clips each) fails to load: its rows are padding mid-batch, not clips."""
  config = tiny.get_config()
  with config.unlocked():
    config.data.synthetic.update(num_frames=16, val_size=6)   # clips starting at 0 and 8
    config.data.max_bad_fraction = 0.2
    config.localize.update(max_clips=0, batch_size=4, seed=2, methods=('gradcam',))
  real_load = sources.SyntheticSource.load

  def load(self, index, frame_indices):
    if index == 2:
      raise video_io.VideoReadError('video 2 is truncated')
    return real_load(self, index, frame_indices)

  monkeypatch.setattr(sources.SyntheticSource, 'load', load)
  model = building.create_model(config)
  variables = models.init_variables(model, jax.random.key(0), (1, 8, 16, 16, 3))
  clips = localization_eval.gather_clips(config, model, variables)
  # Batch 2 is [2, 2, 3, 3] with video 2's rows masked: both clips of video 3 are kept.
  np.testing.assert_array_equal(clips['video_index'], [0, 0, 1, 1, 3, 3, 4, 4, 5, 5])
  np.testing.assert_array_equal(clips['label'], clips['video_index'] % 8)   # synthetic labels
  assert np.all(clips['present'].any(axis=1))                 # real clips have ground truth
  assert len(clips['maps'][comparison.BASELINE]) == 10
  # Frames numbered in their video; the whole softmax kept beside the explained class's.
  np.testing.assert_array_equal(clips['frame_index'], np.tile([np.arange(8), np.arange(8, 16)],
                                                              (5, 1)))
  assert clips['probabilities'].shape == (10, 8)
  np.testing.assert_allclose(clips['probabilities'].sum(axis=1), 1, rtol=1e-5)
  np.testing.assert_array_equal(clips['probability'],
                                clips['probabilities'][np.arange(10), clips['target']])

  # localize.max_clips = 4: two whole videos of the seeded subset.
  with config.unlocked():
    config.localize.max_clips = 4
  subset = loader.eval_clips(sources.create_source(config.data, 'eval'), config.data,
                             max_clips=4, seed=2)
  clips = localization_eval.gather_clips(config, model, variables)
  np.testing.assert_array_equal(clips['video_index'], [v for v, _ in subset if v != 2])
  assert len(set(subset[:, 0].tolist())) == 2


def test_clip_batches_are_split_over_the_local_devices(monkeypatch):
  """loc_eval shards each batch over all local devices (4 here), with the one-device maps."""
  config = tiny.get_config()
  with config.unlocked():
    config.data.synthetic.val_size = 3
    # 2 rows: padded to 4 devices. The gathering is under test: Grad-CAM's methods only.
    config.localize.update(max_clips=0, batch_size=2, seed=0, methods=('gradcam',))
  model = building.create_model(config)
  variables = models.init_variables(model, jax.random.key(0), (1, 8, 16, 16, 3))
  real_method_maps = comparison.method_maps
  devices_seen = []

  def method_maps(model, variables, video, *args, **kwargs):
    devices_seen.append(len(video.sharding.device_set) if isinstance(video, jax.Array) else 1)
    return real_method_maps(model, variables, video, *args, **kwargs)

  monkeypatch.setattr(comparison, 'method_maps', method_maps)
  clips = localization_eval.gather_clips(config, model, variables)
  assert devices_seen == [jax.local_device_count()] * 2 and jax.local_device_count() == 4
  # The same maps, clip for clip, as one device computes them on the unpadded batches.
  np.testing.assert_array_equal(clips['video_index'], [0, 1, 2])
  for batch, rows in zip(loader.eval_batches(config.data, 'eval', 2), (slice(0, 2), slice(2, 3))):
    maps, _, target = real_method_maps(model, variables, batch['video'], config.data.mean,
                                       config.data.std,
                                       names=comparison.compared_names(config, model))
    count = rows.stop - rows.start
    np.testing.assert_array_equal(clips['target'][rows], np.asarray(target)[:count])
    for name, value in maps.items():
      np.testing.assert_allclose(clips['maps'][name][rows], np.asarray(value)[:count],
                                 atol=1e-5, err_msg=name)


def test_progress_bars_over_the_curves_and_the_methods(compared, monkeypatch):
  """compare's bars: every (curve clip, method) pair, every (ROAD clip, method) pair, then
  every method's threshold sweep; the ROAD scores land in each method's summary and table."""
  result, config, model = compared[:3]
  config = ml_collections.ConfigDict(config.to_dict())
  config.localize.road_clips = 2
  bars = []
  # The bars are under test, not the curves and ROAD (their forward passes cost seconds):
  # tested in tests/explain/test_perturbation.py and test_faithfulness.py.
  flat = perturbation.Curve(np.linspace(0, 1, 3), np.full(3, 0.5), 0.5)
  monkeypatch.setattr(comparison, 'target_probability', lambda *args: None)
  monkeypatch.setattr(comparison.perturbation, 'deletion_insertion',
                      lambda *args, **kwargs: dict(deletion=flat, insertion=flat))
  road_calls = []

  def clip_scores(score_fn, video, attention, batch_size, seed):
    road_calls.append(seed)
    value = float(attention.mean())
    return dict(original=1.0, multiplied=value, morf=np.full(9, 1 - value),
                lerf=np.full(9, 1.0))
  monkeypatch.setattr(comparison.faithfulness, 'clip_scores', clip_scores)

  class Recorder:
    def __init__(self, total, desc, **kwargs):
      del kwargs
      self.total, self.desc, self.n, self.closed = total, desc, 0, False
      bars.append(self)

    def update(self, n=1):
      self.n += n

    def close(self):
      self.closed = True

  rng = np.random.default_rng(0)
  size, order = config.data.crop_size, result['order']
  clips = dict(video=rng.integers(0, 256, (4, 8, size, size, 3), np.uint8),
               maps={name: rng.random((4, 8, size, size), np.float32) for name in order},
               boxes=np.tile(np.float32([2, 2, 20, 20]), (4, 8, 1)), present=np.ones((4, 8), bool),
               label=np.zeros(4, int), target=np.zeros(4, int), video_index=np.arange(4),
               frame_index=np.tile(np.arange(8), (4, 1)), probability=np.full(4, 0.5),
               probabilities=np.full((4, 8), 1 / 8, np.float32))
  road_result = comparison.compare(config, model, {}, clips, progress=Recorder)
  assert [(bar.desc, bar.total, bar.n, bar.closed) for bar in bars] == [
      ('loc_eval curves', len(order), len(order), True),       # 1 curve clip x every method
      ('loc_eval ROAD', 2 * len(order), 2 * len(order), True),  # 2 ROAD clips x every method
      ('loc_eval thresholds', len(order), len(order), True)]
  reported = road_result['reported_clips'][:2]
  assert road_result['road_clips'] == 2 and sorted(set(road_calls)) == sorted(reported)
  for name in order:
    expected = faithfulness.summarize([
        clip_scores(None, None, clips['maps'][name][index], 8, index) for index in reported])
    summary = road_result['methods'][name]['summary']
    assert {key: summary[key] for key in expected} == pytest.approx(expected)
  table = comparison_report.markdown(road_result)
  assert 'ROAD MoRF (lower better)' in table and 'ROAD and average drop on 2' in table
  # loc_eval's bars are shown by process 0 only.
  assert localization_eval._progress().keywords == {'enabled': jax.process_index() == 0}
