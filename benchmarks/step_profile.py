r"""Where one JAX variant's time goes: per-call times, page faults, and per-fusion times.

  python -m benchmarks.step_profile --variant=train --preset=resnext50 --frames=16 \
      --size=64 --batch=2 --dtype=float32 --device=cpu --steps=5 --trace_dir=/tmp/trace

Builds the variant exactly as `benchmarks.bench` does (same flags, network and
batch, `harness.jax_setup`), compiles it, then times `--steps` calls after
`--warmup` calls and prints, per call, the milliseconds, the minor page faults
(with the MiB they stand for at 4 KiB a page) and the process's system and
user CPU seconds: the page faults are how the cost of XLA:CPU's fresh call
buffers shows (see `gla_jax/hugepages.py`; this script restarts with huge
pages like `benchmarks.bench`, GLA_JAX_HUGE_PAGES=0 runs without).

With --trace_dir it also records two calls with `jax.profiler.trace` (a
Perfetto trace under that directory) and prints the `--top` fusions by time
per call, each with the `op_name` XLA kept from the model code (which layer,
forward or `transpose(...)` = gradient), from the compiled program's HLO text.
"""
import collections
import gzip
import glob
import json
import os
import re
import resource
import time

import jax

from benchmarks import harness
from gla_jax import hugepages
from gla_jax.models import conv

VARIANTS = ('train', 'explain_stages', 'explain_blocks', 'forward')
# Trace events that are not one compiled operation (runtime, Python, thread pool).
_RUNTIME_EVENTS = ('ThunkExecutor', 'SlinkyThreadPool', 'PjitFunction', 'CommonPjRt', '$')


def op_names(hlo_text: str) -> dict:
  """{instruction name: the op_name of its metadata} of a compiled program's HLO text."""
  pattern = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = .*?op_name="([^"]+)"')
  return {m.group(1): m.group(2) for m in map(pattern.match, hlo_text.splitlines()) if m}


def fusion_times(trace_events, calls: int) -> collections.Counter:
  """Microseconds per call of every compiled operation in Perfetto `trace_events`."""
  total = collections.Counter()
  for event in trace_events:
    if event.get('ph') == 'X' and not event['name'].startswith(_RUNTIME_EVENTS):
      total[event['name']] += event.get('dur', 0) / calls
  return total


def _call_figures(call, calls: int):
  """One line of figures per call of `call`."""
  for _ in range(calls):
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    faults = after.ru_minflt - before.ru_minflt
    yield (f'{seconds * 1e3:8.1f} ms  {faults:8d} page faults ({faults * 4 / 1024:6.0f} MiB)  '
           f'sys {after.ru_stime - before.ru_stime:5.2f} s  '
           f'user {after.ru_utime - before.ru_utime:5.2f} s')


def _trace_table(call, compiled, trace_dir: str, top: int) -> str:
  traced_calls = 2
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(traced_calls):
      call()
  newest = max(glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'), recursive=True),
               key=os.path.getmtime)
  with gzip.open(newest) as f:
    events = json.load(f)['traceEvents']
  names = op_names(compiled.as_text())
  times = fusion_times(events, traced_calls)
  lines = [f'Top {top} operations by time per call (both threads summed: '
           f'{sum(times.values()) / 1e3:.1f} ms; trace: {newest})']
  for name, micros in times.most_common(top):
    lines.append(f'{micros / 1e3:8.2f} ms  {name:<36} {names.get(name, "")[:90]}')
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = harness.argument_parser(__doc__.splitlines()[0])
  parser.add_argument('--variant', default='train', choices=VARIANTS)
  parser.add_argument('--trace_dir', default='', help='also trace two calls into this directory')
  parser.add_argument('--top', type=int, default=30, help='operations listed from the trace')
  args = harness.parse_args(argv, parser)
  harness.select_device(args.device)
  with conv.use_impl(args.conv_impl):
    setup = harness.jax_setup(args)
    name = args.variant
    start = time.perf_counter()
    compiled = setup['programs'][name].lower(*setup['arguments'][name]).compile()
  print(f'{name}: {args.preset} {args.frames}x{args.size}x{args.size} batch {args.batch} '
        f'{args.dtype} on {args.device}; compiled in {time.perf_counter() - start:.1f} s; '
        f'huge pages: {hugepages.status()}')
  arguments, carry = [setup['arguments'][name]], setup['carry'][name]

  def call():
    result = jax.block_until_ready(compiled(*arguments[0]))
    if carry is not None:
      arguments[0] = carry(result)

  for _ in range(args.warmup):
    call()
  for line in _call_figures(call, args.steps):
    print(line, flush=True)
  if args.trace_dir:
    print(_trace_table(call, compiled, args.trace_dir, args.top))


if __name__ == '__main__':
  hugepages.restart_with_huge_pages()   # As benchmarks.bench; GLA_JAX_HUGE_PAGES=0 to compare.
  main()
