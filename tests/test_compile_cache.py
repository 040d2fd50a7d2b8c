"""The command line's persistent compilation cache: where it goes, what turns it off."""
import os
import subprocess
import sys
import textwrap

from gla_jax import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_chosen_dir_from_the_environment_and_the_config(tmp_path):
  assert compile_cache.default_dir({}) == os.path.join(
      os.path.expanduser('~'), '.cache', 'gla_jax', 'jax_cache')
  xdg = {'XDG_CACHE_HOME': str(tmp_path)}
  assert compile_cache.chosen_dir(environ=xdg) == str(tmp_path / 'gla_jax' / 'jax_cache')
  for off in ('0', 'false', 'OFF', 'no'):
    assert compile_cache.chosen_dir(environ={compile_cache.ENV_VAR: off, **xdg}) is None
  assert compile_cache.chosen_dir(enabled=False, environ=xdg) is None
  assert compile_cache.chosen_dir(environ={compile_cache.ENV_VAR: '1', **xdg}) == str(
      tmp_path / 'gla_jax' / 'jax_cache')
  assert compile_cache.chosen_dir(environ={compile_cache.ENV_VAR: str(tmp_path / 'c')}) == str(
      tmp_path / 'c')


def test_a_second_process_reads_what_the_first_compiled(tmp_path):
  """Two processes jit the same function: the first writes entries, the second reads them."""
  program = textwrap.dedent('''
      import os, sys
      import jax, jax.numpy as jnp
      from gla_jax import compile_cache
      hits = []
      jax.monitoring.register_event_listener(
          lambda event, **kwargs: hits.append(event) if event.endswith('/cache_hits') else None)
      off = compile_cache.enable(environ={compile_cache.ENV_VAR: '0'})
      assert off is None and not jax.config.jax_compilation_cache_dir, 'the variable turns it off'
      assert compile_cache.enable(enabled=False, environ={}) is None
      print(compile_cache.enable(environ={compile_cache.ENV_VAR: sys.argv[1]}))
      print(float(jax.jit(lambda x: jnp.sin(x) * 3)(jnp.arange(5.0)).sum()), len(hits))
      ''')
  cache_dir = tmp_path / 'cache'
  env = {key: value for key, value in os.environ.items()
         if key not in ('JAX_COMPILATION_CACHE_DIR', compile_cache.ENV_VAR)}
  runs = []
  for _ in range(2):
    done = subprocess.run([sys.executable, '-c', program, str(cache_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    runs.append((done.stdout.split(), sorted(os.listdir(cache_dir))))
  (first_out, first_entries), (second_out, second_entries) = runs
  assert first_out[0] == str(cache_dir) and first_out[1] == second_out[1]
  assert first_entries and second_entries == first_entries
  assert int(first_out[2]) == 0 and int(second_out[2]) >= 1    # compiled, then read back
