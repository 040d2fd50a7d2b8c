"""`gla_jax.hugepages`: when the restart happens, what it changes, and that huge pages take effect."""
import os
import subprocess
import sys
import textwrap

import pytest

from gla_jax import hugepages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPS = dict(system='Linux', glibc=(2, 36), thp_on=True)


def test_with_tunable_keeps_other_tunables_and_is_recognised():
  environ = {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2', 'PATH': '/bin'}
  changed = hugepages.with_tunable(environ)
  assert changed['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
  assert changed['PATH'] == '/bin' and environ['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2'
  assert hugepages.with_tunable({})['GLIBC_TUNABLES'] == hugepages.TUNABLE
  assert hugepages.has_tunable(changed) and not hugepages.has_tunable(environ)
  # Any value the user chose counts as set: the restart never overrides it.
  assert hugepages.has_tunable({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'})
  assert not hugepages.has_tunable({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb_x=1'})


def test_restart_only_where_it_helps():
  assert hugepages.why_not_restart({}, **HELPS) is None
  reasons = {
      'opt-out': hugepages.why_not_restart({'GLA_JAX_HUGE_PAGES': '0'}, **HELPS),
      'set': hugepages.why_not_restart(hugepages.with_tunable({}), **HELPS),
      'mac': hugepages.why_not_restart({}, **{**HELPS, 'system': 'Darwin'}),
      'old glibc': hugepages.why_not_restart({}, **{**HELPS, 'glibc': (2, 31)}),
      'thp off': hugepages.why_not_restart({}, **{**HELPS, 'thp_on': False}),
  }
  assert reasons == {
      'opt-out': 'GLA_JAX_HUGE_PAGES=0',
      'set': 'GLIBC_TUNABLES already sets glibc.malloc.hugetlb',
      'mac': 'not Linux',
      'old glibc': 'needs glibc >= 2.35 (found (2, 31))',
      'thp off': 'transparent huge pages are off (/sys/kernel/mm/transparent_hugepage/enabled)',
  }
  assert hugepages.status({'GLIBC_TUNABLES': hugepages.TUNABLE}) == (
      'GLIBC_TUNABLES=glibc.malloc.hugetlb=1')
  assert hugepages.status({'GLA_JAX_HUGE_PAGES': '0'}) == 'off (GLA_JAX_HUGE_PAGES=0)'


def test_transparent_huge_page_setting_is_read(tmp_path):
  setting = tmp_path / 'enabled'
  for text, on in (('always [madvise] never\n', True), ('[always] madvise never\n', True),
                   ('always madvise [never]\n', False)):
    setting.write_text(text)
    assert hugepages._transparent_huge_pages_on(str(setting)) is on
  assert not hugepages._transparent_huge_pages_on(str(tmp_path / 'missing'))


_SCRIPT = textwrap.dedent('''
    import os, sys
    print('started', os.environ.get('GLIBC_TUNABLES', ''), sys.argv[1:], flush=True)
    from gla_jax import hugepages
    hugepages.restart_with_huge_pages()
    print('running', flush=True)
''')


def _environ(**env):
  """This process's environment without the settings under test, plus `env`."""
  environ = {key: value for key, value in os.environ.items()
             if key not in ('GLIBC_TUNABLES', hugepages.OPT_OUT)}
  return {**environ, **env}


def _run(tmp_path, **env):
  script = tmp_path / 'script.py'
  script.write_text(_SCRIPT)
  result = subprocess.run([sys.executable, str(script), '--flag=1'], capture_output=True,
                          text=True, env=_environ(PYTHONPATH=REPO, **env), check=True,
                          timeout=60)
  return result.stdout.splitlines()


def test_restart_reruns_the_command_once_with_the_tunable(tmp_path):
  if hugepages.why_not_restart({}) is not None:
    pytest.skip(f'no restart on this machine: {hugepages.why_not_restart({})}')
  assert _run(tmp_path) == ["started  ['--flag=1']",
                            "started glibc.malloc.hugetlb=1 ['--flag=1']", 'running']
  assert _run(tmp_path, GLA_JAX_HUGE_PAGES='0') == ["started  ['--flag=1']", 'running']
  assert _run(tmp_path, GLIBC_TUNABLES='glibc.malloc.hugetlb=0') == [
      "started glibc.malloc.hugetlb=0 ['--flag=1']", 'running']


_FAULTS = textwrap.dedent('''
    import ctypes, resource
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    size = 64 << 20   # Above glibc's mmap threshold: a fresh mapping, as XLA's call buffers.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
''')


def test_tunable_cuts_page_faults_of_a_large_block():
  """What the restart is for, measured: faults of touching a fresh 64 MiB malloc block."""
  if hugepages.why_not_restart({}) is not None:
    pytest.skip(f'huge pages do not apply here: {hugepages.why_not_restart({})}')

  def faults(**env):
    return int(subprocess.run([sys.executable, '-c', _FAULTS], capture_output=True, text=True,
                              env=_environ(**env), check=True, timeout=60).stdout)

  small_pages = faults()
  huge_pages = faults(GLIBC_TUNABLES=hugepages.TUNABLE)
  assert small_pages >= 16384 * 0.9          # 64 MiB / 4 KiB pages.
  assert huge_pages < small_pages / 10       # 2 MiB pages (some may still come as 4 KiB).
