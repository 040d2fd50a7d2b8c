"""Attention gates: normalisation, shapes, conversion, gradients, explanation, and the study.

The study's test is also the demo recipe's end-to-end training test, plain and gated.
"""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
  runs.append(dict(difficulty='demo', model='gated', seed=0, clip_accuracy=0.9, parameters=12,
                   step_time_s=0.5))
  plain, gated = study.summarize(runs)
  assert (plain['model'], gated['model']) == ('plain', 'gated')
  assert plain['clip_accuracy_mean'] == pytest.approx(0.6)
  assert plain['clip_accuracy_std'] == pytest.approx(0.1)      # sample std of 0.5, 0.7, 0.6
  assert plain['step_time_s'] == pytest.approx(0.3) and plain['seeds'] == [0, 1, 2]
  assert gated['clip_accuracy_std'] == 0.0 and gated['parameters'] == 12
  table = study.markdown([plain, gated], 'cmd')
  assert '0.600 ± 0.100 (0.500, 0.700, 0.600)' in table and '| demo | gated |' in table


def test_study_runs_end_to_end(tmp_path, monkeypatch):
  study = gated_vs_plain
  base = study.demo.get_config

  def small_demo():   # The demo's recipe with 32 validation clips (one evaluation batch).
    config = base()
    config.data.synthetic.val_size = config.eval.batch_size
    return config

  monkeypatch.setattr(study.demo, 'get_config', small_demo)
  # The demo's shapes, so the plain run's programs are those of test_loop.py's demo run
  # (the session's compilation cache, tests/conftest.py).
  rows = study.main(['--workdir', str(tmp_path), '--seeds=1', '--steps=2',
                     '--difficulties=demo_hard'])
  assert [row['model'] for row in rows] == ['plain', 'gated']
  assert rows[1]['parameters'] > rows[0]['parameters']
  for row in rows:
    assert 0 <= row['clip_accuracy_mean'] <= 1 and row['step_time_s'] > 0
  written = json.load(open(tmp_path / 'gated_vs_plain.json'))
  assert len(written['runs']) == 2 and written['runs'][0]['step'] == 2
  assert (tmp_path / 'gated_vs_plain.md').read_text().count('| demo_hard |') == 2
  # Both runs are the demo's recipe end to end: checkpoint, curves, evaluation on the device.
  for model in ('plain', 'gated'):
    run = tmp_path / f'demo_hard_{model}_seed0'
    assert checkpoints.training_step(run) == 2
    assert os.path.getsize(run / reports.CURVES_FILE) > 1000
    assert json.load(open(evaluate.results_path(str(run), 'eval')))['num_clips'] == 32
  # The gates train with the backbone (the same initial state as the loop's).
  config = study.run_config(small_demo(), 'demo_hard', True, 0, 2)
  start = jax.device_get(train_state.create_train_state(
      config, building.create_model(config), jax.random.key(config.train.seed)))
  end, _ = checkpoints.load_training_variables(tmp_path / 'demo_hard_gated_seed0')
  assert {f'gate_layer{s}' for s in range(1, 5)} <= set(start.params), sorted(start.params)
  for module in ['gate_layer1', 'gate_layer2', 'stem_conv', 'layer4_0']:
    for (path, a), (_, b) in zip(runs.leaves(start.params[module]),
                                 runs.leaves(end['params'][module])):
      assert not np.array_equal(a, b), f'{module}/{runs.path_name(path)} did not train'


def test_interrupted_study_exits_with_resume_hint(tmp_path, monkeypatch, capsys):
  study = gated_vs_plain
  monkeypatch.setattr(study.loop, 'train_and_evaluate',
                      lambda config, workdir: {'interrupted': 'SIGTERM', 'step': 3})
  with pytest.raises(SystemExit) as stopped:
    study.main(['--workdir', str(tmp_path), '--seeds=1', '--difficulties=demo'])
  assert stopped.value.code == 143
  assert 'Stopped by SIGTERM at step 3' in capsys.readouterr().out
  assert not (tmp_path / 'gated_vs_plain.json').exists()
