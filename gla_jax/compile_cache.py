"""JAX's persistent compilation cache for the command line: a second run does not compile again.

Every program a run compiles (the explanation of a clip batch, the train
step, ...) is written to `<user cache>/gla_jax/jax_cache` ($XDG_CACHE_HOME, else
~/.cache), and the next run with the same model, shapes and devices reads it
back instead of compiling (tens of seconds for ResNeXt-101 on a CPU). An entry
is keyed by the program, the compile options, the devices and the jax version,
so a stale entry is never used; the folder is capped at `MAX_SIZE_BYTES`,
least recently used entries going first (JAX's eviction needs `filelock`).

$GLA_JAX_COMPILATION_CACHE turns it off (0, false, no, off) or names another
folder; `config.compilation_cache=False` turns it off too. A folder set with
JAX's own $JAX_COMPILATION_CACHE_DIR (or `jax.config`) before is kept.
"""
import os
from typing import Any, Dict, Mapping, Optional

from absl import logging
import jax

ENV_VAR = 'GLA_JAX_COMPILATION_CACHE'
_OFF = ('0', 'false', 'no', 'off')
MAX_SIZE_BYTES = 4 * 2**30
# Every program is cached, however quick its compile or small its executable:
# the CLI's many small programs (normalisation, box drawing on the device) add up.
_OPTIONS = {'jax_persistent_cache_min_compile_time_secs': 0.0,
            'jax_persistent_cache_min_entry_size_bytes': 0}


def default_dir(environ: Mapping[str, str] = os.environ) -> str:
  """`$XDG_CACHE_HOME/gla_jax/jax_cache`, else `~/.cache/gla_jax/jax_cache`."""
  base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'gla_jax', 'jax_cache')


def chosen_dir(enabled: bool = True, environ: Mapping[str, str] = os.environ) -> Optional[str]:
  """The folder the cache goes to, or None where it is off (`enabled` False or $ENV_VAR off)."""
  value = environ.get(ENV_VAR, '').strip()
  if not enabled or value.lower() in _OFF:
    return None
  if value and value.lower() not in ('1', 'true', 'yes', 'on'):
    return os.path.expanduser(value)
  return default_dir(environ)


def enable(enabled: bool = True, environ: Mapping[str, str] = os.environ) -> Optional[str]:
  """Turns the persistent cache on for this process, before its first compile.

  Args:
    enabled: `config.compilation_cache`.
    environ: the environment ($GLA_JAX_COMPILATION_CACHE, $XDG_CACHE_HOME).

  Returns:
    The cache folder, or None where it is off. A folder already configured
    (JAX's $JAX_COMPILATION_CACHE_DIR, or a test's) is kept and returned.
  """
  cache_dir = chosen_dir(enabled, environ)
  if cache_dir is None:
    return None
  configured = jax.config.jax_compilation_cache_dir
  if configured:
    return configured
  try:
    os.makedirs(cache_dir, exist_ok=True)
  except OSError as error:
    logging.warning('No compilation cache (runs compile again): cannot create %s (%s); set '
                    '$%s to a writable folder, or to 0 to turn the cache off.', cache_dir,
                    error, ENV_VAR)
    return None
  for name, value in settings(cache_dir).items():
    jax.config.update(name, value)
  return cache_dir


def settings(cache_dir: str) -> Dict[str, Any]:
  """The `jax.config` values of a persistent cache in `cache_dir`.

  Every process that shares a folder must use the same values: with a size
  cap JAX keeps an access-time file beside each entry, and a capped process
  cannot write to a folder filled by an uncapped one.
  """
  return {'jax_compilation_cache_dir': cache_dir, 'jax_compilation_cache_max_size': MAX_SIZE_BYTES,
          **_OPTIONS}
