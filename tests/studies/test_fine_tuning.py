"""The pretrain -> fine-tune study (studies/fine_tuning.py): tables, statistics, initialisation."""
import json

import jax
import ml_collections
import numpy as np
import pytest
from scipy import stats

from configs import tiny
from gla_jax import models
from gla_jax import weights
from gla_jax.models import building
from gla_jax.training import checkpoints
from gla_jax.training import train_state
from studies import fine_tuning
from tests.training import runs as run_helpers


def _hand_made_runs():
  accuracies = {('plain', 'scratch'): [0.3, 0.4, 0.35], ('plain', 'fine_tuned'): [0.6, 0.7, 0.8],
                ('gated', 'scratch'): [0.3, 0.5], ('gated', 'fine_tuned'): [0.9]}
  return [dict(model=model, init=init, seed=seed, clip_accuracy=a, parameters=10,
               step_time_s=0.1 * (seed + 1))
          for (model, init), values in accuracies.items() for seed, a in enumerate(values)]


def test_summary_and_differences_on_hand_made_runs():
  rows = fine_tuning.summarize(_hand_made_runs())
  assert [row['arm'] for row in rows] == ['plain_scratch', 'plain_fine_tuned', 'gated_scratch',
                                          'gated_fine_tuned']
  assert rows[0]['clip_accuracy_mean'] == pytest.approx(0.35)
  assert rows[0]['clip_accuracy_std'] == pytest.approx(0.05)   # sample std of 0.3, 0.4, 0.35
  assert rows[0]['step_time_s'] == pytest.approx(0.2)
  assert np.isnan(rows[3]['clip_accuracy_std'])                 # one seed: no spread
  # gated_fine_tuned has one seed: only the two differences without it are tested.
  differences = fine_tuning.compare(rows)
  assert [(d['a'], d['b']) for d in differences] == [('plain_fine_tuned', 'plain_scratch'),
                                                      ('gated_scratch', 'plain_scratch')]
  for d, (a, b) in zip(differences, [([0.6, 0.7, 0.8], [0.3, 0.4, 0.35]),
                                     ([0.3, 0.5], [0.3, 0.4, 0.35])]):
    expected = stats.ttest_ind(a, b, equal_var=False)
    interval = expected.confidence_interval(0.95)
    assert d['mean_difference'] == pytest.approx(np.mean(a) - np.mean(b))
    assert d['t'] == pytest.approx(expected.statistic)
    assert d['p_value'] == pytest.approx(expected.pvalue, rel=1e-8)
    assert (d['ci_low'], d['ci_high']) == pytest.approx((interval.low, interval.high), abs=1e-8)
  localization = {'plain_scratch': dict(
      baseline=dict(method='gradcam:layer4', **{'loc_acc@0.5': 0.25, 'mean_iou': 0.3,
                                                 'pointing_game': float('nan')}),
      best_global_local=dict(method='global-local:mean', **{'loc_acc@0.5': 0.5,
                                                            'mean_iou': 0.45,
                                                            'pointing_game': 0.75}),
      num_clips=8)}
  table = fine_tuning.markdown(rows, differences, localization, 'cmd', 'runs/demo',
                               dict(train_size=320, val_size=256, steps=300))
  assert '| plain_scratch | 0.350 ± 0.050 (0.300, 0.400, 0.350) | 10 | 0.200 |' in table
  assert '| gated_fine_tuned | 0.900 ± n/a (0.900) |' in table
  first = differences[0]
  assert (f'| plain_fine_tuned - plain_scratch | +0.350 | 95%: [{first["ci_low"]:+.3f}, '
          f'{first["ci_high"]:+.3f}] |') in table
  assert '| plain_scratch | `gradcam:layer4` | 0.250 | 0.300 | n/a | 8 |' in table
  assert '320 training and 256 validation videos, 300 steps' in table


def _tiny_study_config():
  """configs/tiny.py (seconds-long runs) with a localization comparison of two methods."""
  config = ml_collections.ConfigDict(tiny.get_config().to_dict())
  config.localize.update(batch_size=4, num_pictures=1, methods=('gradcam:layer4',),
                         thresholds=(0.5,))
  config.lock()
  return config


def _backbone(name):
  return models.module_stage(name) is not None


def test_plain_checkpoint_fits_a_gated_model_with_fresh_gates_and_classifier():
  """What `gated_fine_tuned` starts from (`weight_fitting.fit` with drop_head)."""
  plain = models.ResNeXt3DTiny(num_classes=8)
  gated = models.ResNeXt3DTiny(num_classes=8, gated=True)
  shape = (1, 2, 16, 16, 3)
  loaded = models.init_variables(plain, jax.random.key(1), shape)
  fresh = models.init_variables(gated, jax.random.key(2), shape)
  fitted = weights.fit(fresh, loaded, weights.head_paths(gated), True, 'plain')
  assert {'fc'} == set(loaded['params']) - set(fresh['params'])
  for collection in ('params', 'batch_stats'):
    assert set(fitted[collection]) == set(fresh[collection])
    for name, module in fitted[collection].items():
      reference = (loaded if _backbone(name) else fresh)[collection][name]
      for (path, a), (_, b) in zip(run_helpers.leaves(module), run_helpers.leaves(reference)):
        np.testing.assert_array_equal(a, b, err_msg=f'{name}/{run_helpers.path_name(path)}')
  assert any(name.startswith('gate_') for name in fitted['params'])
  # Keeping the head cannot work: the gated classifier reads the gates' features too.
  with pytest.raises(ValueError, match='gated_fc'):
    weights.fit(fresh, loaded, weights.head_paths(gated), False, 'plain')


def test_study_runs_end_to_end(tmp_path, monkeypatch):
  monkeypatch.setattr(fine_tuning.demo, 'get_config', _tiny_study_config)
  argv = ['--workdir', str(tmp_path), '--seeds=1', '--steps=1', '--pretrain_steps=1',
          '--train_size=8', '--val_size=8', '--loc_clips=4', '--loc_deletion_steps=0',
          '--arms=gated_fine_tuned']   # the arm that needs every step; the others are subsets
  result = fine_tuning.main(argv)
  pretrained = tmp_path / 'pretrain'
  assert checkpoints.training_step(pretrained) == 1
  written = json.load(open(tmp_path / 'fine_tuning.json'))
  assert written['pretrained'] == str(pretrained) and written['settings']['train_size'] == 8
  assert len(written['runs']) == 1 and written['runs'][0]['step'] == 1
  assert [row['arm'] for row in result['rows']] == ['gated_fine_tuned']
  assert written['differences'] == []   # one seed: nothing to test
  for arm, summary in written['localization'].items():
    assert summary['baseline']['method'] == 'gradcam:layer4'
    assert summary['best_global_local']['method'].startswith('global-local')
    assert summary['num_clips'] == 4
    assert (tmp_path / f'{arm}_seed0' / 'loc_eval' / 'comparison.md').exists()
  assert set(written['localization']) == {row['arm'] for row in result['rows']}
  table = (tmp_path / 'fine_tuning.md').read_text()
  assert table.count('| gated_fine_tuned |') == 3   # accuracy row, 2 localization rows

  # The fine-tuned arms start from the pretrained backbone; classifier and gates are fresh,
  # those of the scratch run of the same seed.
  loaded, _ = checkpoints.load_training_variables(pretrained)

  def initial_params(model, init):
    config = fine_tuning.arm_config(_tiny_study_config(), model, init, 0, 1, 8, 8,
                                    str(pretrained))
    return jax.device_get(train_state.create_train_state(
        config, building.create_model(config), jax.random.key(config.train.seed)).params)

  for model in ('plain', 'gated'):
    fine_tuned, scratch = initial_params(model, 'fine_tuned'), initial_params(model, 'scratch')
    assert any(not _backbone(name) for name in fine_tuned)
    for name in fine_tuned:
      reference = loaded['params'][name] if _backbone(name) else scratch[name]
      for (path, a), (_, b) in zip(run_helpers.leaves(fine_tuned[name]),
                                   run_helpers.leaves(reference)):
        np.testing.assert_array_equal(a, b, err_msg=f'{model} {name}/{run_helpers.path_name(path)}')
    assert not np.array_equal(fine_tuned['stem_conv']['kernel'], scratch['stem_conv']['kernel'])


def test_clear_errors(tmp_path):
  with pytest.raises(SystemExit):
    fine_tuning.main(['--workdir', str(tmp_path), f'--pretrained={tmp_path}'])
  with pytest.raises(SystemExit):
    fine_tuning.main(['--workdir', str(tmp_path), '--train_size=0'])
  with pytest.raises(SystemExit):
    fine_tuning.main(['--workdir', str(tmp_path), '--arms=plain_scratch,gated_finetuned'])
  with pytest.raises(ValueError, match='pretrained'):
    fine_tuning.arm_config(_tiny_study_config(), 'plain', 'fine_tuned', 0, 2, 16, 8, None)
