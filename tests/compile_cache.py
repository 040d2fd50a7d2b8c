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

# Every compile is cached, however quick or small its executable.
OPTIONS = {'jax_persistent_cache_min_compile_time_secs': 0.0,
           'jax_persistent_cache_min_entry_size_bytes': 0}
# A subprocess caches its compiles in this directory when the variable is set.
ENV_VAR = 'GLA_TEST_COMPILATION_CACHE'


def directory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              name: str) -> str:
  """The cache folder `name` in pytest's cache (a temporary one under `-p no:cacheprovider`)."""
  cache = getattr(request.config, 'cache', None)
  return str(cache.mkdir(name) if cache is not None else tmp_path_factory.mktemp(name))


@contextlib.contextmanager
def enabled(cache_dir: str):
  """While entered, this process's compiles are read from and written to `cache_dir`."""
  options = {'jax_compilation_cache_dir': cache_dir, **OPTIONS}
  previous = {name: jax.config.values[name] for name in options}
  for name, value in options.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()   # Re-read the settings (an earlier test may have compiled).
  try:
    yield cache_dir
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()


def enable_from_env() -> None:
  """In a subprocess, before its first compile: caches in $GLA_TEST_COMPILATION_CACHE if set."""
  cache_dir = os.environ.get(ENV_VAR)
  if cache_dir:
    for name, value in {'jax_compilation_cache_dir': cache_dir, **OPTIONS}.items():
      jax.config.update(name, value)
