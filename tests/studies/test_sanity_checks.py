"""The sanity-check study (studies/sanity_checks.py) end to end on a tiny model, and its verdict."""
import json
import os

import jax
import numpy as np
import pytest
from scipy import stats

from configs import tiny
from gla_jax import models
from gla_jax import weights
from gla_jax.explain import sanity
from gla_jax.models import building
from gla_jax.training import checkpoints
from studies import sanity_checks


def test_verdict_fails_at_the_threshold():
  threshold = sanity_checks.SPEARMAN_FAIL_THRESHOLD
  assert sanity_checks.verdict(threshold) == 'FAILS'
  assert sanity_checks.verdict(threshold - 1e-6) == 'passes'
  assert sanity_checks.verdict(None).startswith('undefined')


def test_config_from_file_takes_shipped_names_and_paths(tmp_path):
  assert sanity_checks.config_from_file('tiny').data.crop_size == 16
  path = tmp_path / 'mine.py'
  path.write_text('from configs import tiny\n\ndef get_config(arg=None):\n'
                  '  config = tiny.get_config()\n  config.unlock()\n'
                  '  config.data.crop_size = int(arg)\n  return config\n')
  assert sanity_checks.config_from_file(f'{path}:24').data.crop_size == 24
  with pytest.raises(ValueError, match='no such config file'):
    sanity_checks.config_from_file(str(tmp_path / 'missing.py'))


def test_study_runs_end_to_end(tmp_path):
  config = tiny.get_config()
  with config.unlocked():
    config.localize.methods = ('gradcam:layer4',)   # compared_methods.REQUIRED alone: fast.
  model = building.create_model(config)
  trained = str(tmp_path / 'trained')       # Randomly initialised "trained" weights.
  variables = models.init_variables(model, jax.random.key(3))
  weights.save_variables(trained, variables, metadata=dict(
      config=config.to_dict(), preset='tiny', num_classes=8))
  result = sanity_checks.main(['--workdir', str(tmp_path / 'study'), '--trained', trained,
                               '--clips=3', '--steps=2'])
  stages = ['classifier', 'layer4', 'layer3', 'layer2', 'layer1', 'stem']
  assert result['stages'] == stages and result['num_clips'] == 3
  assert list(result['methods']) == ['gradcam:layer4', 'global-local:mean', 'global-local:max',
                                     'global-local:product']
  written = json.load(open(tmp_path / 'study' / 'sanity_checks.json'))
  assert written['methods'].keys() == result['methods'].keys()
  table = (tmp_path / 'study' / 'sanity_checks.md').read_text()
  # CAMs are >= 0: the |map| correlation is the plain one, its table left out.
  assert table.count('| global-local:mean |') == 2 and 'so its table is left out' in table
  assert f'>= {sanity_checks.SPEARMAN_FAIL_THRESHOLD}' in table
  assert os.path.getsize(tmp_path / 'study' / 'sanity_checks.png') > 1000
  for entry in result['methods'].values():
    assert entry['verdict'] in ('FAILS', 'passes', 'undefined (constant maps)')
    for measures in [*entry['states'].values(), entry['shuffled_labels']]:
      assert -1 <= measures['ssim'] <= 1 and 0 <= measures['undefined_clips'] <= 3
  # The shuffled-label model: the same recipe, 2 steps, on random training labels.
  shuffled = tmp_path / 'study' / 'shuffled_labels'
  assert checkpoints.training_step(shuffled) == 2 and result['shuffled']['step'] == 2
  _, metadata = checkpoints.load_training_variables(shuffled)
  assert metadata['config']['data']['random_labels_seed'] == sanity_checks.SHUFFLED_LABELS_SEED
  # One number again, by hand (scipy): a Spearman mean with the whole network re-initialised.
  loaded = sanity_checks.model_loading.load_model(trained)    # The study's model: compiled.
  video = sanity_checks.read_clips(loaded.config, 3)
  rng = jax.random.fold_in(jax.random.key(int(config.train.seed)), 1)
  name = 'global-local:mean'
  before = sanity_checks.explain(loaded.config, loaded.model, variables, video)[name]
  after = sanity_checks.explain(loaded.config, loaded.model,
                                sanity.randomize(variables, stages, rng, loaded.model), video)[name]
  rhos = [stats.spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(before, after)]
  rhos = [r for r in rhos if not np.isnan(r)]
  expected = result['methods'][name]['states']['stem']['spearman']
  if rhos:
    assert expected == pytest.approx(np.mean(rhos), abs=1e-9)
  else:
    assert expected is None


def test_the_absolute_value_table_is_shown_only_where_it_differs():
  measures = dict(spearman=0.25, spearman_abs=0.25, ssim=0.5, undefined_clips=0)
  result = dict(command='c', num_clips=1, split='eval', trained='t', stages=['stem'],
                shuffled=dict(workdir='w', step=1, clip_accuracy=0.1),
                methods={'m': dict(states={'stem': dict(measures)}, verdict='passes',
                                   shuffled_labels=dict(measures))})
  table = sanity_checks.markdown(result)
  assert table.count('| m |') == 2 and 'so its table is left out' in table
  result['methods']['m']['shuffled_labels']['spearman_abs'] = 0.75   # a signed map
  table = sanity_checks.markdown(result)
  assert table.count('| m |') == 3 and '| m | 0.250 | 0.750 |' in table


def test_weights_that_are_not_there_end_with_one_message(tmp_path, capsys):
  with pytest.raises(SystemExit) as stopped:
    sanity_checks.main(['--workdir', str(tmp_path / 'out'), '--trained', str(tmp_path / 'nope')])
  assert stopped.value.code == 2
  error = capsys.readouterr().err
  assert 'holds no weights' in error and 'Traceback' not in error
