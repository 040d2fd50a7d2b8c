"""The sharded training step: 4 simulated CPU devices take the steps of 1 (tiny config)."""
import numpy as np

from configs import tiny
from gla_jax import parallel
from tests.training import runs


def test_one_and_four_devices_take_the_same_steps():
  config = tiny.get_config()
  losses1, state1 = runs.run_steps(config, 2, parallel.make_mesh(1))
  losses4, state4 = runs.run_steps(config, 2, parallel.make_mesh(4))
  np.testing.assert_allclose(losses4, losses1, rtol=1e-4)
  assert losses1[0] != losses1[1]
  for (path, a), (_, b) in zip(runs.leaves(state1.params), runs.leaves(state4.params)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=runs.path_name(path))
