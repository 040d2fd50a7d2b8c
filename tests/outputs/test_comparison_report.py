"""The comparison's table, JSON, plot and pictures from a hand-made result."""
import math
import os

import cv2
import numpy as np
import pytest

from gla_jax import defaults
from gla_jax.explain import comparison
from gla_jax.outputs import comparison_report
from gla_jax.outputs import pictures
from gla_jax.outputs import reports
from tests.outputs import events

KEYS = ('loc_acc@0.5', 'mean_iou', 'temporal_iou', 'pointing_game', 'deletion_auc',
        'insertion_auc', 'frame_map@0.5', 'video_map@0.2', 'video_map@0.5')


def _result():
  def entry(value, deletion):
    summary = dict.fromkeys(KEYS, value)
    summary.update(deletion_auc=deletion, insertion_auc=math.nan)
    summary['video_map@0.5'] = 1 - value
    return dict(description='d', threshold=0.5, summary=summary)
  return dict(methods={comparison.BASELINE: entry(0.25, 0.2), 'global-local:mean': entry(0.5, 0.3)},
              order=[comparison.BASELINE, 'global-local:mean'], settings=dict(
                  iou_threshold=0.5, deletion_steps=4, frame_map_threshold=0.5,
                  video_map_thresholds=(0.2, 0.5)), num_clips=4, split='eval',
              held_out_clips=[0], reported_clips=[1, 2, 3], curve_clips=1, clip_accuracy=0.5,
              verdict='Fine.')


def test_markdown_bolds_the_best_of_each_column():
  table = comparison_report.markdown(_result())
  rows = [line for line in table.splitlines() if line.startswith('| `')]
  assert [row.split('`')[1] for row in rows] == _result()['order']
  baseline, fusion = rows
  assert '| **0.200** |' in baseline and '| 0.300 |' in fusion     # deletion: lower is better
  assert '| **0.500** |' in fusion and '| 0.250 |' in baseline
  assert baseline.endswith('| n/a | 0.250 | 0.250 | **0.750** |')     # frame- and video-mAP
  assert fusion.endswith('| n/a | **0.500** | **0.500** | 0.500 |')
  assert '| frame-mAP@0.5 | video-mAP@0.2 | video-mAP@0.5 |' in table
  assert 'Frame-mAP: a detection per frame with a box' in table
  assert table.rstrip().endswith('**Verdict.** Fine.')


def test_markdown_names_each_rows_upsampling():
  result = _result()
  other = f'{comparison.BASELINE}@receptive_field'
  result['methods'][other] = dict(result['methods'][comparison.BASELINE],
                                  upsampling='receptive_field')
  for name in result['order']:
    result['methods'][name]['upsampling'] = 'half_pixel'
  result.update(order=result['order'] + [other], upsamplings=['half_pixel', 'receptive_field'])
  table = comparison_report.markdown(result)
  assert ('with `receptive_field` (names `<method>@<upsampling>`)' in table
          and 'up-sampled to the clip with `half_pixel`' in table)
  rows = [line for line in table.splitlines() if line.startswith('| `')]
  assert [row.split(' | ')[1] for row in rows] == ['half_pixel', 'half_pixel', 'receptive_field']
  assert '| method | up-sampling | what | threshold |' in table
  assert 'up-sampled' not in comparison_report.markdown(_result())     # one up-sampling
  assert comparison_report.plot_size(2) == comparison_report.PLOT_SIZE
  assert comparison_report.plot_size(40)[1] > comparison_report.PLOT_SIZE[1]


def test_json_ready_writes_nan_as_null():
  import numpy as np  # pylint: disable=g-import-not-at-top
  assert comparison_report._json_ready({1: [math.nan, np.float32(0.5), np.arange(2)]}) == {
      '1': [None, 0.5, [0, 1]]}


def test_pictures_draw_the_uint8_clips_as_they_are(tmp_path):
  """The clips stay the loader's uint8 pixels: the frames row shows them unchanged."""
  video = np.random.default_rng(0).integers(0, 256, (1, 2, 32, 32, 3), np.uint8)
  maps = np.zeros((1, 2, 32, 32), np.float32)
  maps[:, :, 8:16, 8:16] = 1
  clips = dict(video=video, maps={comparison.BASELINE: maps}, target=np.array([1]),
               label=np.array([0]), probability=np.array([0.5]),
               boxes=np.full((1, 2, 4), -1.0, np.float32))
  methods = {comparison.BASELINE: dict(threshold=0.5)}
  [path] = comparison_report.write_pictures(str(tmp_path), defaults.base_config(), clips,
                                            methods, [comparison.BASELINE], [0], ['a', 'b'])
  image = cv2.imread(path)[..., ::-1]
  tile = 96                                          # 32 px enlarged 3x (nearest)
  for t in range(2):
    left = pictures._LABEL_WIDTH + t * tile
    shown = image[18:18 + tile, left:left + tile]    # below the 18 px title
    np.testing.assert_array_equal(shown, video[0, t].repeat(3, axis=0).repeat(3, axis=1))


def test_write_draws_the_plot_and_sends_the_pictures_to_tensorboard(tmp_path):
  pytest.importorskip('tensorboardX')
  result = _result()
  for name, entry in result['methods'].items():
    best = 0.3 if name == comparison.BASELINE else 0.5
    entry.update(threshold=best, held_out_loc_acc={0.3: 0.4, 0.5: 0.2 + 0.4 * (best == 0.5)})
  rng = np.random.default_rng(0)
  clips = dict(video=rng.integers(0, 256, (4, 2, 32, 32, 3), np.uint8),
               maps={name: rng.random((4, 2, 32, 32), np.float32) for name in result['order']},
               target=np.zeros(4, int), label=np.zeros(4, int), probability=np.full(4, 0.5),
               boxes=np.full((4, 2, 4), -1.0, np.float32))
  config = defaults.base_config()
  config.localize.num_pictures = 1
  files = comparison_report.write(str(tmp_path / 'loc_eval'), config, clips, result, ['a'],
                                  tensorboard_workdir=str(tmp_path))
  chart = cv2.imread(files['plot'])
  width, height = comparison_report.PLOT_SIZE
  assert chart.shape == (height, width, 3) and chart.std() > 10
  assert [os.path.basename(p) for p in files['pictures']] == ['clip_1.png']
  panel = cv2.imread(files['pictures'][0])
  assert events.images(str(tmp_path / reports.TENSORBOARD_DIR)) == {
      'loc_eval/comparison': (height, width), 'loc_eval/clip_1': panel.shape[:2]}
