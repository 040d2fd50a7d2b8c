"""Smoke test of `benchmarks.bench`: one step of every variant, figures present and finite.

Timings are not asserted (the test machine is shared); only that one run
produces every key with finite numbers, with and without PyTorch. The JAX
programs use XLA's convolutions (`--conv_impl=xla`), which compile in a
fraction of the fast path's time (the fast path has its own tests), and both
runs share a persistent compilation cache, so the second one loads the JAX
programs the first compiled (initialisation, forward, explainers, training step).
"""
import json
import math

import pytest

from benchmarks import bench
from benchmarks import harness
from benchmarks import step_profile
from benchmarks import torch_side

# The demo's network (configs/demo.py: 3x3x3 stem, no max pool, no time strides) in every run,
# so the runs share their compiled programs (tests/conftest.py's cache).
SMOKE_ARGS = ['--preset=tiny', '--frames=4', '--size=16', '--batch=2', '--dtype=float32',
              '--device=cpu', '--steps=1', '--warmup=0', '--num_classes=5', '--conv_impl=xla',
              '--stem_kernel=3,3,3', '--no-max_pool', '--temporal_strides=1,1,1,1']
JAX_VARIANTS = ('forward', 'explain_stages', 'explain_blocks', 'train')


def _finite_positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_jax_only_run_reports_every_figure(tmp_path):
  out = tmp_path / 'bench.json'
  results = bench.main(SMOKE_ARGS + ['--notorch', f'--out={out}'])
  assert set(results['jax']) == set(JAX_VARIANTS)
  for name, figures in results['jax'].items():
    for key in ('clips_per_s', 'seconds_per_step', 'compile_s', 'flops_per_step',
                'tflops_per_s', 'peak_fraction'):
      assert _finite_positive(figures[key]), (name, key, figures[key])
    assert _finite_positive(figures['compiled_bytes']['total']), name
  assert 'torch' not in results and results['ratios'] == {}
  memory = results['explanation_memory']
  for key in ('blocks_over_stages', 'stages_2b_over_b', 'blocks_2b_over_b'):
    assert _finite_positive(memory[key]), key
  assert memory['stages_2b_bytes'] > memory['stages_b_bytes']
  written = json.loads(out.read_text())
  assert set(written['jax']) == set(JAX_VARIANTS)
  assert written['config']['preset'] == 'tiny'


def test_run_with_pytorch_reports_ratios():
  pytest.importorskip('torch')
  results = bench.main(SMOKE_ARGS + ['--no-memory_scaling', '--no-torch_compile'])
  expected = {'forward', 'train'} | {f'explain_{how}_{layers}' for how in ('hooks', 'autograd')
                                     for layers in ('stages', 'blocks')}
  assert set(results['torch']) == expected
  for name, figures in results['torch'].items():
    assert _finite_positive(figures['clips_per_s']), name
    assert _finite_positive(figures['tflops_per_s']), name
  assert len(results['ratios']) == len(expected)
  assert all(_finite_positive(value) for value in results['ratios'].values())
  assert results['explanation_memory'] == {}


def test_network_options_reach_both_networks():
  torch, torch_resnext = harness.import_torch()
  if torch is None:
    pytest.skip('PyTorch is not installed')
  args = harness.parse_args(SMOKE_ARGS + ['--stem_kernel=3,5,5', '--no-max_pool',
                                          '--temporal_strides=1,2,1,2'])
  net = torch_side.TorchBench(torch, torch_resnext, args).net
  assert net.conv1.kernel_size == (3, 5, 5) and isinstance(net.maxpool, torch.nn.Identity)
  assert [net.layer2[0].conv2.stride, net.layer3[0].conv2.stride] == [(2, 2, 2), (1, 2, 2)]
  config = harness.jax_config(args)
  assert tuple(config.model.stem_kernel) == (3, 5, 5) and not config.model.max_pool
  assert tuple(config.model.temporal_strides) == (1, 2, 1, 2)


@pytest.mark.parametrize('flag, text, form', [
    ('stem_kernel', '4,3,3', 'kT,kH,kW'), ('stem_kernel', '3,3', 'kT,kH,kW'),
    ('stem_kernel', 'three', 'kT,kH,kW'), ('temporal_strides', '1,0,2,2', 's1,s2,s3,s4'),
    ('temporal_strides', '1,2', 's1,s2,s3,s4')])
def test_bad_network_flags_are_refused(flag, text, form, capsys):
  with pytest.raises(SystemExit):
    harness.parse_args(SMOKE_ARGS + [f'--{flag}={text}'])
  assert form in capsys.readouterr().err


def test_step_profile_times_calls_and_names_the_fusions(tmp_path, capsys):
  """`benchmarks.step_profile`: per-call lines, and a trace table whose rows carry op_names."""
  step_profile.main(SMOKE_ARGS[:6] + ['--conv_impl=fast', '--variant=train', '--steps=2',
                                      '--warmup=1', '--top=5', f'--trace_dir={tmp_path}'])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith('train: tiny 4x16x16 batch 2 float32 on cpu; compiled in ')
  calls = [line for line in lines if ' page faults (' in line]
  assert len(calls) == 2 and all(line.split()[1] == 'ms' for line in calls)
  table = lines[lines.index(next(line for line in lines if line.startswith('Top 5 operations'))):]
  assert len(table) == 6
  # Each row: time, operation, and the model code's op_name where XLA kept one (its layout
  # copies and wrapped iotas have none, and which operations make the top 5 varies by run).
  rows = [row.split() for row in table[1:]]
  assert all(float(row[0]) >= 0 and row[1] == 'ms' and len(row) in (3, 4) for row in rows), table
  named = [row for row in rows if len(row) == 4]
  assert named and all(row[3].startswith('jit(train_step)/') for row in named), table


def test_step_profile_helpers_on_hand_made_input():
  hlo = '\n'.join([
      '  %fusion.1 = f32[2]{0} fusion(%p), kind=kLoop, metadata={op_name="jit(f)/layer1/add"}',
      '  ROOT %ynn_fusion = f32[2]{0} fusion(%q), metadata={op_name="jit(f)/transpose(g)/dot"}',
      '  %p = f32[2]{0} parameter(0)'])
  assert step_profile.op_names(hlo) == {'fusion.1': 'jit(f)/layer1/add',
                                        'ynn_fusion': 'jit(f)/transpose(g)/dot'}
  events = [{'ph': 'X', 'name': 'fusion.1', 'dur': 30}, {'ph': 'X', 'name': 'fusion.1', 'dur': 10},
            {'ph': 'X', 'name': 'ThunkExecutor::Execute', 'dur': 99},
            {'ph': 'M', 'name': 'thread_name'}, {'ph': 'X', 'name': 'ynn_fusion', 'dur': 4}]
  assert step_profile.fusion_times(events, calls=2) == {'fusion.1': 20.0, 'ynn_fusion': 2.0}


def test_methods_bench_pairs_each_method_with_its_pytorch_peer(tmp_path):
  """One method of each kind against its peer (captum, a PyTorch Score-CAM, pytorch-grad-cam)."""
  pytest.importorskip('captum')
  from benchmarks import methods_bench  # pylint: disable=g-import-not-at-top
  methods = ('integrated_gradients', 'scorecam:conv1', 'hirescam:layer1')
  out = tmp_path / 'methods.json'
  results = methods_bench.main(SMOKE_ARGS + [
      f'--methods={",".join(methods)}', '--ig_steps=3', '--chunk_size=8', f'--out={out}'])
  for name in methods:
    assert _finite_positive(results['jax'][name]['clips_per_s']), name
    assert _finite_positive(results['jax'][name]['compiled_bytes']['total']), name
    assert _finite_positive(results['torch'][name]['clips_per_s']), (name, results['torch'][name])
    assert _finite_positive(results['ratios'][name]), name
  assert results['memory_budget'] == {'scorecam:conv1': True}
  assert set(json.loads(out.read_text())['jax']) == set(methods)
  with pytest.raises(SystemExit):
    methods_bench.main(SMOKE_ARGS + ['--methods=scorecam'])       # a CAM needs its layer
