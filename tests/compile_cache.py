"""JAX's persistent compilation cache for tests that compile the same programs again.

The cache lives in pytest's cache directory, so a program compiled once (in
this session or an earlier one) is read back instead of compiled: test time is
mostly compiling (conftest.py). An entry is keyed by the program's HLO, the
compile options and the devices, so what is read back is what a compile would
give.
"""
import contextlib
import os

import jax
from jax.experimental.compilation_cache import compilation_cache
import pytest

from gla_jax import compile_cache as gla_compile_cache

# A subprocess caches its compiles in this directory when the variable is set.
ENV_VAR = 'GLA_TEST_COMPILATION_CACHE'
# The command line's cache folder (gla_jax/compile_cache.py), set while `enabled`.
CLI_ENV_VAR = 'GLA_JAX_COMPILATION_CACHE'


def directory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              name: str) -> str:
  """The cache folder `name` in pytest's cache (a temporary one under `-p no:cacheprovider`)."""
  cache = getattr(request.config, 'cache', None)
  return str(cache.mkdir(name) if cache is not None else tmp_path_factory.mktemp(name))


@contextlib.contextmanager
def enabled(cache_dir: str):
  """While entered, this process's compiles are read from and written to `cache_dir`."""
  options = gla_compile_cache.settings(cache_dir)   # The command line's, so both share the folder.
  previous = {name: jax.config.values[name] for name in options}
  for name, value in options.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()   # Re-read the settings (an earlier test may have compiled).
  # A `main.py` subprocess caches there too, not in the user's cache (gla_jax/compile_cache.py).
  previous_env = os.environ.get(CLI_ENV_VAR)
  os.environ[CLI_ENV_VAR] = cache_dir
  try:
    yield cache_dir
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()
    if previous_env is None:
      os.environ.pop(CLI_ENV_VAR, None)
    else:
      os.environ[CLI_ENV_VAR] = previous_env


def enable_from_env() -> None:
  """In a subprocess, before its first compile: caches in $GLA_TEST_COMPILATION_CACHE if set."""
  cache_dir = os.environ.get(ENV_VAR)
  if cache_dir:
    for name, value in gla_compile_cache.settings(cache_dir).items():
      jax.config.update(name, value)
