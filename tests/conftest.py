"""Test set-up for CPU: 4 simulated devices, fast compiles, and a persistent compilation cache.

4 simulated CPU devices, so multi-device code is tested on CPU. Most XLA
optimizations are off (docs/design.md, JAX facts: compiling, not running, dominates the
tests' time, and this halves it); every numeric comparison in the tests is
between computations compiled with the same setting, or against PyTorch and
finite differences with tolerances that hold either way. Subprocesses inherit the setting
through the environment.
"""
import os

import jax
import pytest

from tests import compile_cache

jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_disable_most_optimizations', True)
# The same for every subprocess a test starts (`main.py`, workers): their compiles are as fast
# as the tests', and their programs' cache keys match the tests'.
os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'


@pytest.fixture(autouse=True, scope='session')
def persistent_compilation_cache(request, tmp_path_factory):
  """Every test's compiles go through JAX's persistent cache (tests/compile_cache.py).

  Many tests compile the same tiny programs (the same configs in different
  files, and across the two xdist workers): a program compiled once is read back.
  Yields the folder, for tests whose subprocesses share it.
  """
  with compile_cache.enabled(compile_cache.directory(request, tmp_path_factory,
                                                     'jax_compiles')) as cache_dir:
    yield cache_dir
