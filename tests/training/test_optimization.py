"""The optimizers against PyTorch's, the learning-rate schedules, the frozen stages."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from configs import tiny
from gla_jax.training import optimization

# Hara's main.py: optim.SGD(lr, momentum=0.9, dampening=0 if nesterov else 0.9,
# weight_decay=1e-3, nesterov), with --dampening defaulting to 0.9.
HARA_SGD = dict(momentum=0.9, dampening=0.9, weight_decay=1e-3)


@pytest.mark.parametrize('optimizer, nesterov', [('sgd', False), ('sgd', True),
                                                  ('adamw', False)])
def test_optimizers_match_torch(optimizer, nesterov):
  """Undamped SGD (`dampening=0`, PyTorch's default) and AdamW on a quadratic."""
  config = tiny.get_config()
  config.train.update(optimizer=optimizer, learning_rate=0.1, schedule='constant',
                      warmup_steps=0, momentum=0.9, dampening=0.0, weight_decay=1e-2,
                      nesterov=nesterov)
  rng = np.random.default_rng(0)
  w0, target = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4))
  params = {'fc': {'kernel': jnp.asarray(w0)}}
  tx = optimization.create_optimizer(config, params, optimization.create_learning_rate_fn(config))
  opt_state = tx.init(params)

  def loss(p):
    return jnp.sum((p['fc']['kernel'] - target) ** 2 * jnp.arange(1, 13).reshape(3, 4))

  weight = torch.tensor(w0, requires_grad=True)
  if optimizer == 'sgd':
    reference = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=1e-2,
                                nesterov=nesterov)
  else:
    reference = torch.optim.AdamW([weight], lr=0.1, weight_decay=1e-2)
  for _ in range(4):
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    reference.zero_grad()
    torch_loss = torch.sum((weight - torch.tensor(target, dtype=torch.float32)) ** 2
                           * torch.arange(1, 13, dtype=torch.float32).reshape(3, 4))
    torch_loss.backward()
    reference.step()
  # Adam's steps are about lr = 0.1 each whatever the gradient: float32 rounding of
  # 4 such steps leaves a few 1e-6 on parameters that cross zero.
  np.testing.assert_allclose(params['fc']['kernel'], weight.detach().numpy(), rtol=1e-5,
                             atol=1e-5 if optimizer == 'adamw' else 1e-6)


def _sgd_config(nesterov, freeze_until=''):
  config = tiny.get_config()
  config.train.update(optimizer='sgd', learning_rate=0.1, schedule='cosine', warmup_steps=3,
                      num_steps=25, nesterov=nesterov, freeze_until=freeze_until,
                      **HARA_SGD)
  return config


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_matches_torch_with_hara_arguments(nesterov):
  """25 steps of varying gradients, warm-up and cosine rate, L2 decay, layer1..3 frozen.

  PyTorch: `SGD(lr, momentum=0.9, dampening=0.9, weight_decay=1e-3)`, Hara's
  arguments; with nesterov his main.py passes dampening 0, and so does the
  project whatever `train.dampening` says. Frozen stages are Hara's
  `get_fine_tuning_parameters` group with lr 0: they do not move.
  """
  config = _sgd_config(nesterov, freeze_until='layer3')
  rng = np.random.default_rng(1)
  shapes = {'stem_conv': {'kernel': (3, 2)}, 'layer3_0': {'kernel': (4,)},
            'layer4_0': {'kernel': (2, 3), 'bias': (3,)}, 'fc': {'kernel': (3, 5)}}
  start = jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes,
                       is_leaf=lambda s: isinstance(s, tuple))
  params = jax.tree.map(jnp.asarray, start)
  lr_fn = optimization.create_learning_rate_fn(config)
  tx = optimization.create_optimizer(config, params, lr_fn)
  opt_state = tx.init(params)
  update = jax.jit(tx.update)

  frozen_names = ('stem_conv', 'layer3_0')
  torch_params = {(m, k): torch.tensor(v) for m, leaves in start.items()
                  for k, v in leaves.items()}
  trainable = [p for (m, _), p in torch_params.items() if m not in frozen_names]
  frozen = [p for (m, _), p in torch_params.items() if m in frozen_names]
  reference = torch.optim.SGD(
      [{'params': trainable}, {'params': frozen, 'lr': 0.0}], lr=0.0, momentum=0.9,
      dampening=0.0 if nesterov else HARA_SGD['dampening'], weight_decay=1e-3,
      nesterov=nesterov)
  for step in range(25):
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), start)
    updates, opt_state = update(jax.tree.map(jnp.asarray, grads), opt_state, params)
    params = optax.apply_updates(params, updates)
    reference.param_groups[0]['lr'] = float(lr_fn(step))
    for (module, key), weight in torch_params.items():
      weight.grad = torch.tensor(grads[module][key])
    reference.step()
  for (module, key), weight in torch_params.items():
    np.testing.assert_allclose(params[module][key], weight.numpy(), rtol=1e-5, atol=1e-6,
                               err_msg=f'{module}.{key}')
  for module in frozen_names:
    np.testing.assert_array_equal(params[module]['kernel'], start[module]['kernel'])
  # Frozen leaves hold no momentum: the state's arrays are the trainable leaves' buffers.
  state_sizes = sorted(leaf.size for leaf in jax.tree.leaves(opt_state) if leaf.size > 1)
  assert state_sizes == sorted(int(np.prod(s)) for m, leaves in shapes.items()
                               if m not in frozen_names for s in leaves.values())


def test_sgd_step_under_hara_dampening_by_hand():
  """A constant gradient: damped momentum moves lr * g a step, undamped ~10x that.

  With g constant and no weight decay the damped buffer is g at every step
  (first step undamped: buf = g; then 0.9 g + 0.1 g), so 100 steps move
  100 lr g. Undamped, buf_k = g (1 - 0.9^k) / 0.1. With Hara's weight decay
  1e-3 on a parameter starting at 1, PyTorch moves it 0.110 (dampening 0.9)
  against 0.964 (dampening 0), the figures of the issue.
  """
  lr, g, steps = 0.1, 0.01, 100

  def moved(dampening, weight_decay):
    config = _sgd_config(nesterov=False)
    config.train.update(schedule='constant', warmup_steps=0, dampening=dampening,
                        weight_decay=weight_decay)
    params = {'fc': {'kernel': jnp.ones((1,), jnp.float32)}}
    tx = optimization.create_optimizer(config, params,
                                       optimization.create_learning_rate_fn(config))
    opt_state, update = tx.init(params), jax.jit(tx.update)
    grads = {'fc': {'kernel': jnp.full((1,), g, jnp.float32)}}
    for _ in range(steps):
      updates, opt_state = update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
    return 1.0 - float(params['fc']['kernel'][0])

  # float32 parameters near 1 (spacing 6e-8) round at each of the 100 steps.
  assert moved(0.9, 0.0) == pytest.approx(steps * lr * g, abs=1e-5)
  undamped = lr * g * sum((1 - 0.9 ** k) / 0.1 for k in range(1, steps + 1))
  assert moved(0.0, 0.0) == pytest.approx(undamped, abs=1e-5)
  assert moved(0.9, 1e-3) == pytest.approx(0.110, abs=5e-4)
  assert moved(0.0, 1e-3) == pytest.approx(0.964, abs=5e-4)


def test_learning_rate_schedules():
  config = tiny.get_config()
  config.train.update(learning_rate=0.4, num_steps=12, warmup_steps=2, schedule='cosine')
  lr = optimization.create_learning_rate_fn(config)
  np.testing.assert_allclose([lr(0), lr(1), lr(2), lr(7), lr(12)], [0, 0.2, 0.4, 0.2, 0],
                             atol=1e-6)
  config.train.update(schedule='step', step_boundaries=(6, 9), step_decay=0.1)
  lr = optimization.create_learning_rate_fn(config)
  np.testing.assert_allclose([lr(1), lr(5), lr(6), lr(8), lr(9), lr(11)],
                             [0.2, 0.4, 0.04, 0.04, 0.004, 0.004], rtol=1e-5)
  config.train.update(schedule='constant', warmup_steps=0)
  assert float(optimization.create_learning_rate_fn(config)(5)) == pytest.approx(0.4)


def test_freeze_until_follows_hara_ft_begin_index():
  params = {name: {'kernel': 0} for name in
            ('stem_conv', 'stem_bn', 'layer1_0', 'layer2_0', 'layer2_1', 'layer3_0',
             'layer4_0', 'fc', 'gate_layer3')}
  frozen = lambda until: sorted(m for m, leaf in
                                optimization.trainable_labels(params, until).items()
                                if leaf['kernel'] == optimization.FROZEN)
  assert frozen('') == []
  assert frozen('conv1') == ['stem_bn', 'stem_conv']
  # Hara's UCF101 recipe, ft_begin_index=4: train layer4 and fc.
  assert frozen('layer3') == ['layer1_0', 'layer2_0', 'layer2_1', 'layer3_0', 'stem_bn',
                              'stem_conv']
  assert 'layer4_0' in frozen('layer4') and 'fc' not in frozen('layer4')
  with pytest.raises(ValueError, match='freeze_until'):
    optimization.trainable_labels(params, 'layer5')
