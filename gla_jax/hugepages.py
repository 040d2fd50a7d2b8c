"""Transparent huge pages for XLA:CPU's per-call buffers (Linux with glibc).

XLA:CPU allocates the temporaries of every call of a compiled function as one
block (637 MiB for a ResNeXt-50 training step on 16x64x64 clips, batch 2; 257
MiB for the demo's) and frees it when the call ends. glibc serves a block that
large with a fresh `mmap` and returns it with `munmap`, so each call touches
all of it anew: one page fault per 4 KiB page, 164,000 per ResNeXt-50 step,
0.34 s of system time on the 2-core benchmark machine. glibc's tunable
`glibc.malloc.hugetlb=1` (glibc 2.35 or later) makes malloc ask for
transparent huge pages (`madvise(MADV_HUGEPAGE)`) on such blocks: 2 MiB pages,
about 730 faults and 0.07 s (measured with `benchmarks/step_profile.py`,
medians of 5 steps: ResNeXt-50 training step 0.67 -> 0.62 s, the demo's
0.28 -> 0.22 s; docs/results.md).

The tunable is read when a process starts, so `restart_with_huge_pages`
re-executes the running command (`os.execve`) with it added to
`GLIBC_TUNABLES`, once; `main.py` and `benchmarks/bench.py` call it before they
load JAX. It does nothing where it cannot help (not Linux or not glibc, glibc
older than 2.35, transparent huge pages off), when the tunable is already set,
or when GLA_JAX_HUGE_PAGES=0 (the opt-out; the results are the same either
way, only the time differs). This module imports nothing heavy.
"""
import os
import platform
import sys
from typing import Mapping, Optional

TUNABLE = 'glibc.malloc.hugetlb=1'
OPT_OUT = 'GLA_JAX_HUGE_PAGES'
MIN_GLIBC = (2, 35)
THP_SETTING = '/sys/kernel/mm/transparent_hugepage/enabled'


def has_tunable(environ: Mapping[str, str]) -> bool:
  """Whether GLIBC_TUNABLES in `environ` already sets glibc.malloc.hugetlb (to anything)."""
  tunables = environ.get('GLIBC_TUNABLES', '')
  return any(item.split('=')[0] == 'glibc.malloc.hugetlb' for item in tunables.split(':'))


def with_tunable(environ: Mapping[str, str]) -> dict:
  """A copy of `environ` whose GLIBC_TUNABLES also holds `TUNABLE` (others kept)."""
  environ = dict(environ)
  tunables = [item for item in environ.get('GLIBC_TUNABLES', '').split(':') if item]
  environ['GLIBC_TUNABLES'] = ':'.join([*tunables, TUNABLE])
  return environ


def _glibc_version() -> Optional[tuple]:
  library, version = platform.libc_ver()
  if library != 'glibc' or not version:
    return None
  return tuple(int(part) for part in version.split('.')[:2] if part.isdigit())


def _transparent_huge_pages_on(setting_file: str = THP_SETTING) -> bool:
  """Whether the kernel grants transparent huge pages on request ('always' or 'madvise')."""
  try:
    with open(setting_file) as f:
      setting = f.read()
  except OSError:
    return False
  return '[never]' not in setting


def why_not_restart(environ: Mapping[str, str] = os.environ,
                    system: Optional[str] = None, glibc: Optional[tuple] = None,
                    thp_on: Optional[bool] = None) -> Optional[str]:
  """None when a restart with the tunable would help, else the reason it would not.

  `system`, `glibc` and `thp_on` default to this machine's (arguments for tests).
  """
  if environ.get(OPT_OUT, '1') == '0':
    return f'{OPT_OUT}=0'
  if has_tunable(environ):
    return 'GLIBC_TUNABLES already sets glibc.malloc.hugetlb'
  if (system or platform.system()) != 'Linux':
    return 'not Linux'
  glibc = _glibc_version() if glibc is None else glibc
  if glibc is None or glibc < MIN_GLIBC:
    return f'needs glibc >= {MIN_GLIBC[0]}.{MIN_GLIBC[1]} (found {glibc})'
  if not (_transparent_huge_pages_on() if thp_on is None else thp_on):
    return f'transparent huge pages are off ({THP_SETTING})'
  return None


def status(environ: Mapping[str, str] = os.environ) -> str:
  """One line for reports: does this process run with the tunable, and if not, why not."""
  if has_tunable(environ):
    return f'GLIBC_TUNABLES={environ["GLIBC_TUNABLES"]}'
  return f'off ({why_not_restart(environ) or "not restarted with the tunable"})'


def restart_with_huge_pages() -> None:
  """Re-executes this Python command with `TUNABLE` set; returns only if it need not.

  Call it first thing in a script's `__main__` block, before JAX starts (what
  ran before is run again). The command is the one the process was started
  with (`sys.orig_argv`, interpreter options included).
  """
  if why_not_restart() is not None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], with_tunable(os.environ))
