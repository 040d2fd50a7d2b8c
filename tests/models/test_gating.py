"""Attention gates: normalisation, shapes, conversion, gradients, explanation, and the study.

The study's test is also the demo recipe's end-to-end training test, plain and gated.
"""
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from configs import tiny
from gla_jax import explain
from gla_jax import models
from gla_jax.models import building
from gla_jax.models import convert
from gla_jax.models import gating
from gla_jax.outputs import reports
from gla_jax.training import checkpoints
from gla_jax.training import evaluate
from gla_jax.training import train_state
from studies import gated_vs_plain
from tests.training import runs

CLIP = (2, 8, 32, 64, 3)


@functools.lru_cache(maxsize=None)
def _gated(normalization='softmax', head='concat'):
  model = models.ResNeXt3DTiny(num_classes=5, gated=True, gate_normalization=normalization,
                               gate_head=head)
  return model, models.init_variables(model, jax.random.key(0), CLIP)


def _clip(seed):
  return jax.random.normal(jax.random.key(seed), CLIP)


def _apply(model, variables, clip):
  """Logits and intermediates, compiled (one program instead of hundreds of eager ops)."""
  return jax.jit(functools.partial(model.apply, mutable=['intermediates']))(variables, clip)


@pytest.mark.parametrize('normalization', gating.NORMALIZATIONS)
def test_gate_maps_are_normalised_shaped_and_input_dependent(normalization):
  model, variables = _gated(normalization)
  _, state = _apply(model, variables, _clip(1))
  shapes = {'layer1': (2, 4, 8, 16), 'layer2': (2, 2, 4, 8), 'layer3': (2, 1, 2, 4),
            'layer4': (2, 1, 1, 2)}
  for stage, shape in shapes.items():
    attention = state['intermediates'][f'gate_{stage}']['attention'][0]
    assert attention.shape == shape
    assert float(attention.min()) >= 0
    np.testing.assert_allclose(jnp.sum(attention, axis=(1, 2, 3)), 1.0, rtol=1e-5)
  _, other = _apply(model, variables, _clip(2))
  assert not np.allclose(other['intermediates']['gate_layer2']['attention'][0],
                         state['intermediates']['gate_layer2']['attention'][0])


def test_gate_pools_with_its_map():
  """v = sum_i a_i l_i, checked against the map the gate returns."""
  gate = gating.AttentionGate(features=8)
  local = jax.random.normal(jax.random.key(0), (2, 2, 3, 3, 6))
  g = jax.random.normal(jax.random.key(1), (2, 10))
  params = gate.init(jax.random.key(2), local, g)
  pooled, attention = gate.apply(params, local, g)
  np.testing.assert_allclose(pooled, np.einsum('bthw,bthwc->bc', attention, local), rtol=1e-5)
  assert attention.shape == (2, 2, 3, 3)


def test_converted_backbone_gives_the_plain_models_activations():
  torch_resnext = pytest.importorskip('tests.torch_resnext')
  net = torch_resnext.create('tiny', num_classes=400)
  torch_resnext.randomize_(net, seed=4)
  state = torch_resnext.published_state_dict(net)
  plain = models.ResNeXt3DTiny(num_classes=400)
  plain_vars = convert.torch_to_flax(state, plain)
  video = _clip(3)
  _, plain_state = _apply(plain, plain_vars, video)
  for head in gating.HEADS:
    gated = models.ResNeXt3DTiny(num_classes=7, gated=True, gate_head=head)
    gated_vars = convert.torch_to_flax(state, gated, drop_head=True)
    logits, gated_state = _apply(gated, gated_vars, video)
    assert logits.shape == (2, 7)
    for name in models.tap_names(plain):
      np.testing.assert_array_equal(gated_state['intermediates'][name][0],
                                    plain_state['intermediates'][name][0], err_msg=name)
  # With the averaged head and the same class count, the published fc is kept.
  same = models.ResNeXt3DTiny(num_classes=400, gated=True, gate_head='average')
  np.testing.assert_array_equal(convert.torch_to_flax(state, same)['params']['fc']['kernel'],
                                plain_vars['params']['fc']['kernel'])


def test_gradients_reach_the_gates_finite_differences():
  with jax.enable_x64(True):
    model, variables = _gated()
    model = model.clone(dtype=jnp.float64)
    variables = jax.tree.map(lambda x: np.asarray(x, np.float64), variables)
    video = np.asarray(_clip(5), np.float64)

    @jax.jit
    def loss(params):
      logits = model.apply({**variables, 'params': params}, video)
      return jnp.sum(jax.nn.log_softmax(logits)[:, 1])

    grads = jax.grad(loss)(variables['params'])
    for stage in ('layer1', 'layer3'):
      for module in ('psi', 'global_proj', 'local_proj'):
        g = grads[f'gate_{stage}'][module]['kernel']
        assert float(jnp.max(jnp.abs(g))) > 0, (stage, module)
        direction = np.random.default_rng(0).normal(size=g.shape)
        eps = 1e-8   # Small: ReLU kinks in the gates are crossed otherwise.

        def shifted(sign):
          params = jax.tree.map(lambda x: x, variables['params'])
          params[f'gate_{stage}'][module]['kernel'] = (
              params[f'gate_{stage}'][module]['kernel'] + sign * eps * direction)
          return loss(params)

        numeric = (shifted(1) - shifted(-1)) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(g, direction), numeric, rtol=1e-4,
                                   err_msg=f'{stage}/{module}')


def test_explain_returns_gate_maps():
  model, variables = _gated()
  result = explain.explain(model, variables, _clip(6))
  assert sorted(result.gate_maps) == ['layer1', 'layer2', 'layer3', 'layer4']
  for m in result.gate_maps.values():
    assert m.shape == CLIP[:4] and float(m.min()) == 0 and float(m.max()) == 1
  assert result.attention.shape == CLIP[:4]


def test_bad_gate_settings_are_named():
  for setting, message in ((dict(gate_stages=('layer7',)), 'gate_stages'),
                           (dict(gate_normalization='tanh'), 'sigmoid')):
    model = models.ResNeXt3DTiny(num_classes=3, gated=True, **setting)
    with pytest.raises(ValueError, match=message):   # Raised while tracing: nothing compiles.
      jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 1, 1, 3)))


# ------------------------------------------------------------------------------
# The plain-versus-gated study (studies/gated_vs_plain.py).
# ------------------------------------------------------------------------------


def test_study_summary_on_hand_made_runs():
  study = gated_vs_plain
  runs = [dict(difficulty='demo', model='plain', seed=s, clip_accuracy=a, parameters=10,
               step_time_s=t) for s, (a, t) in enumerate([(0.5, 0.2), (0.7, 0.4), (0.6, 0.3)])]
  runs += [dict(difficulty='demo', model='gated', seed=s, clip_accuracy=a, parameters=12,
                step_time_s=0.5) for s, a in enumerate([0.9, 0.8])]
  runs.append(dict(difficulty='demo_hard', model='plain', seed=0, clip_accuracy=0.2,
                   parameters=10, step_time_s=0.2))
  plain, gated, hard = study.summarize(runs)
  assert (plain['model'], gated['model']) == ('plain', 'gated')
  assert plain['clip_accuracy_mean'] == pytest.approx(0.6)
  assert plain['clip_accuracy_std'] == pytest.approx(0.1)      # sample std of 0.5, 0.7, 0.6
  assert plain['step_time_s'] == pytest.approx(0.3) and plain['seeds'] == [0, 1, 2]
  assert gated['clip_accuracy_std'] == pytest.approx(0.5 ** 0.5 / 10) and gated['parameters'] == 12
  assert np.isnan(hard['clip_accuracy_std'])                   # one seed: no spread
  # Only demo has both models with >= 2 seeds. Hand-computed: difference 0.25, standard error
  # sqrt(0.01 / 3 + 0.005 / 2), Welch-Satterthwaite dof 2.9586; scipy for the p-value.
  [difference] = study.compare([plain, gated, hard])
  standard_error = (0.01 / 3 + 0.005 / 2) ** 0.5
  assert difference['difficulty'] == 'demo' and (difference['n_a'], difference['n_b']) == (2, 3)
  assert difference['mean_difference'] == pytest.approx(0.25)
  assert difference['t'] == pytest.approx(0.25 / standard_error)
  assert difference['dof'] == pytest.approx(
      standard_error ** 4 / ((0.01 / 3) ** 2 / 2 + (0.005 / 2) ** 2 / 1))
  expected = stats.ttest_ind([0.9, 0.8], [0.5, 0.7, 0.6], equal_var=False)
  assert difference['p_value'] == pytest.approx(expected.pvalue, rel=1e-8)
  interval = expected.confidence_interval(0.95)
  assert (difference['ci_low'], difference['ci_high']) == pytest.approx(
      (interval.low, interval.high), abs=1e-8)
  table = study.markdown([plain, gated, hard], [difference], 'cmd', {'demo': 'run/loc.md'})
  assert '0.600 ± 0.100 (0.500, 0.700, 0.600)' in table and '| demo | gated |' in table
  assert (f'| demo | +0.250 | 95%: [{interval.low:+.3f}, {interval.high:+.3f}] | '
          f'{expected.statistic:.2f} | {expected.df:.1f} | {expected.pvalue:.3f} | 2, 3 |') in table
  assert '- demo: [run/loc.md](run/loc.md)' in table


def _tiny_study_config():
  """configs/tiny.py (seconds-long runs); a localization comparison of one batch, gates and
  the methods it always computes (gradcam:layer4, global-local)."""
  config = ml_collections.ConfigDict(tiny.get_config().to_dict())
  config.localize.update(methods=('gate',), curve_clips=1, batch_size=4, num_pictures=1)
  config.lock()
  return config


def test_study_runs_end_to_end(tmp_path, monkeypatch):
  """One seed for real, then the same command with 2 seeds: seed 0 resumes, seed 1 is stood in."""
  study = gated_vs_plain
  monkeypatch.setattr(study.demo, 'get_config', _tiny_study_config)
  argv = ['--workdir', str(tmp_path), '--steps=2', '--difficulties=demo_hard', '--loc_clips=4',
          '--loc_deletion_steps=1']
  finals = {}
  real_train_and_evaluate = study.loop.train_and_evaluate

  def train_and_evaluate(config, workdir):
    finals[workdir] = real_train_and_evaluate(config, workdir)
    return finals[workdir]
  monkeypatch.setattr(study.loop, 'train_and_evaluate', train_and_evaluate)
  rows = study.main(argv + ['--seeds=1'])
  assert [row['model'] for row in rows] == ['plain', 'gated']
  assert rows[1]['parameters'] > rows[0]['parameters']
  for row in rows:
    assert 0 <= row['clip_accuracy_mean'] <= 1 and row['step_time_s'] > 0
  written = json.load(open(tmp_path / 'gated_vs_plain.json'))
  assert len(written['runs']) == 2 and {run['step'] for run in written['runs']} == {2}
  assert written['differences'] == []                        # one seed: nothing to test
  table = (tmp_path / 'gated_vs_plain.md').read_text()
  assert table.count('| demo_hard |') == 2 and 'gated - plain' not in table
  # The gated model's localization table, gate maps among the methods, linked from the study's.
  link = os.path.join('demo_hard_gated_seed0', 'loc_eval', 'comparison.md')
  assert written['localization_tables'] == {'demo_hard': link} and f'({link})' in table
  localization = (tmp_path / link).read_text()
  assert '`gate:mean`' in localization and '`gate:layer1`' in localization
  assert not (tmp_path / 'demo_hard_plain_seed0' / 'loc_eval').exists()
  # Both runs are the recipe end to end: checkpoint, curves, evaluation.
  for model in ('plain', 'gated'):
    run = tmp_path / f'demo_hard_{model}_seed0'
    assert checkpoints.training_step(run) == 2
    assert os.path.getsize(run / reports.CURVES_FILE) > 1000
    assert json.load(open(evaluate.results_path(str(run), 'eval')))['num_clips'] == 12
  # The gates train with the backbone (the same initial state as the loop's).
  config = study.run_config(_tiny_study_config(), 'demo_hard', True, 0, 2)
  start = jax.device_get(train_state.create_train_state(
      config, building.create_model(config), jax.random.key(config.train.seed)))
  end, _ = checkpoints.load_training_variables(tmp_path / 'demo_hard_gated_seed0')
  assert {f'gate_layer{s}' for s in range(1, 5)} <= set(start.params), sorted(start.params)
  for module in ['gate_layer1', 'gate_layer2', 'stem_conv', 'layer4_0']:
    for (path, a), (_, b) in zip(runs.leaves(start.params[module]),
                                 runs.leaves(end['params'][module])):
      assert not np.array_equal(a, b), f'{module}/{runs.path_name(path)} did not train'

  # 2 seeds: seed 0's runs resume from their finished checkpoints (the loop's resume,
  # tests/training/test_loop.py, then only evaluates: their results stand in), the comparison
  # is not recomputed; seed 1's runs are stood in with set accuracies.
  def resumed(config, workdir):
    assert checkpoints.training_step(workdir) == config.train.num_steps == 2, workdir
    return finals[workdir]
  seed1 = dict(plain=0.25, gated=0.5)
  real_run_once = study.run_once

  def run_once(config, workdir):
    if config.train.seed == 1:
      return dict(clip_accuracy=seed1['gated' if config.model.gated else 'plain'], step=2,
                  step_time_s=0.1)
    return real_run_once(config, workdir)
  monkeypatch.setattr(study.loop, 'train_and_evaluate', resumed)
  monkeypatch.setattr(study, 'run_once', run_once)
  monkeypatch.setattr(study.localization_eval, 'run', lambda *args: pytest.fail('recomputed'))
  rows = study.main(argv + ['--seeds=2'])
  assert [row['seeds'] for row in rows] == [[0, 1], [0, 1]]
  accuracies = {row['model']: row['clip_accuracies'] for row in rows}
  assert [accuracies['plain'][1], accuracies['gated'][1]] == [0.25, 0.5]
  # The difference and its test, against scipy.
  [difference] = json.load(open(tmp_path / 'gated_vs_plain.json'))['differences']
  expected = stats.ttest_ind(accuracies['gated'], accuracies['plain'], equal_var=False)
  interval = expected.confidence_interval(0.95)
  assert difference['difficulty'] == 'demo_hard' and difference['n_a'] == difference['n_b'] == 2
  assert difference['mean_difference'] == pytest.approx(
      np.mean(accuracies['gated']) - np.mean(accuracies['plain']))
  for key, value in [('t', expected.statistic), ('dof', expected.df),
                     ('p_value', expected.pvalue), ('ci_low', interval.low),
                     ('ci_high', interval.high)]:
    assert difference[key] == pytest.approx(value, rel=1e-8, nan_ok=True), key
  table = (tmp_path / 'gated_vs_plain.md').read_text()
  assert table.count('| demo_hard |') == 3 and '| gated - plain | confidence interval |' in table
  assert f'({link})' in table


def test_interrupted_study_exits_with_resume_hint(tmp_path, monkeypatch, capsys):
  study = gated_vs_plain
  monkeypatch.setattr(study.loop, 'train_and_evaluate',
                      lambda config, workdir: {'interrupted': 'SIGTERM', 'step': 3})
  with pytest.raises(SystemExit) as stopped:
    study.main(['--workdir', str(tmp_path), '--seeds=1', '--difficulties=demo'])
  assert stopped.value.code == 143
  assert 'Stopped by SIGTERM at step 3' in capsys.readouterr().out
  assert not (tmp_path / 'gated_vs_plain.json').exists()
