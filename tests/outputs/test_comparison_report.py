"""The comparison's table, JSON and pictures from a hand-made result."""
import math

import cv2
import numpy as np

from gla_jax import defaults
from gla_jax.explain import comparison
from gla_jax.outputs import comparison_report
from gla_jax.outputs import pictures

KEYS = ('loc_acc@0.5', 'mean_iou', 'temporal_iou', 'pointing_game', 'deletion_auc',
        'insertion_auc')


def _result():
  def entry(value, deletion):
    summary = dict.fromkeys(KEYS, value)
    summary.update(deletion_auc=deletion, insertion_auc=math.nan)
    return dict(description='d', threshold=0.5, summary=summary)
  return dict(methods={comparison.BASELINE: entry(0.25, 0.2), 'global-local:mean': entry(0.5, 0.3)},
              order=[comparison.BASELINE, 'global-local:mean'], settings=dict(
                  iou_threshold=0.5, deletion_steps=4), num_clips=4, split='eval',
              held_out_clips=[0], reported_clips=[1, 2, 3], curve_clips=1, clip_accuracy=0.5,
              verdict='Fine.')


def test_markdown_bolds_the_best_of_each_column():
  table = comparison_report.markdown(_result())
  rows = [line for line in table.splitlines() if line.startswith('| `')]
  assert [row.split('`')[1] for row in rows] == _result()['order']
  baseline, fusion = rows
  assert '| **0.200** |' in baseline and '| 0.300 |' in fusion     # deletion: lower is better
  assert '| **0.500** |' in fusion and '| 0.250 |' in baseline
  assert baseline.endswith('| n/a |')
  assert table.rstrip().endswith('**Verdict.** Fine.')


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
