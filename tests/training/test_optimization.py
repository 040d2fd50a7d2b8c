"""The optimizers against PyTorch's, the learning-rate schedules, the frozen stages."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import tiny
from gla_jax.training import optimization


@pytest.mark.parametrize('optimizer, nesterov', [('sgd', False), ('sgd', True),
                                                  ('adamw', False)])
def test_optimizers_match_torch(optimizer, nesterov):
  config = tiny.get_config()
  config.train.update(optimizer=optimizer, learning_rate=0.1, schedule='constant',
                      warmup_steps=0, momentum=0.9, weight_decay=1e-2, nesterov=nesterov)
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
