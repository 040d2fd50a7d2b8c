"""The comparison's pieces on hand-made numbers: the clip split and the verdict."""
import math

import numpy as np
import pytest

from gla_jax.explain import comparison

METRICS = ('loc_acc@0.5', 'mean_iou', 'temporal_iou', 'pointing_game', 'deletion_auc',
           'insertion_auc')


def test_split_is_seeded_and_both_parts_have_clips():
  held, reported = comparison.split_clips(10, 0.5, seed=3)
  again = comparison.split_clips(10, 0.5, seed=3)
  np.testing.assert_array_equal(held, again[0])
  assert len(held) == 5 and sorted(np.concatenate([held, reported]).tolist()) == list(range(10))
  assert [len(part) for part in comparison.split_clips(2, 0.9, seed=0)] == [1, 1]
  with pytest.raises(ValueError, match='at least 2'):
    comparison.split_clips(1, 0.5, seed=0)
  with pytest.raises(ValueError, match='held_out_fraction'):
    comparison.split_clips(10, 1.0, seed=0)


def test_verdict_from_hand_made_numbers():
  def entry(held_out, loc_acc, deletion):
    summary = dict.fromkeys(METRICS, 0.5)
    summary.update({'loc_acc@0.5': loc_acc, 'deletion_auc': deletion,
                    'insertion_auc': math.nan, 'num_clips': 4, 'num_present_frames': 30})
    return dict(threshold=0.5, held_out_loc_acc={0.5: held_out}, summary=summary)

  methods = {comparison.BASELINE: entry(0.9, 0.25, 0.2), 'global-local:mean': entry(0.1, 0.9, 0.1),
             'global-local:max': entry(0.6, 0.5, 0.3), 'global-local:product': entry(0.6, 1, 0)}
  best, text = comparison.verdict(methods, 0.5)
  assert best == 'global-local:max'          # best held-out accuracy; the first on ties
  assert 'beats last-layer Grad-CAM on localization accuracy: loc acc@0.5 0.500 vs 0.250 ' \
         '(+0.250)' in text
  assert 'worse on deletion AUC (lower better) 0.300 vs 0.200 (+0.100)' in text
  assert 'equal on mean IoU 0.500 vs 0.500' in text
  assert 'Not measured: insertion AUC' in text
  assert 'constant' not in text
  methods[comparison.BASELINE]['constant_maps'] = 0.5
  assert 'Last-layer Grad-CAM is constant, so it gives no box, on 50% of the clips' in \
      comparison.verdict(methods, 0.5)[1]
  methods['global-local:max']['summary']['loc_acc@0.5'] = 0.1
  assert 'does not beat' in comparison.verdict(methods, 0.5)[1]
