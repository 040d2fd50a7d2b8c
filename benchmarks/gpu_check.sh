#!/usr/bin/env bash
# GPU check (issues 7 and 16): JAX against PyTorch on ResNeXt-101, 16x112x112 clips, batch 32,
# bfloat16, one GPU: training step, explanation (stages and blocks), forward pass; then every
# explanation method against its PyTorch peer at batch 8 (benchmarks/methods_bench.py).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Writes $OUT/bench_gpu.json (every figure, see benchmarks/bench.py) and
# $OUT/bench_gpu.txt (the printed report), $OUT/methods_gpu.json and .txt. STEPS (default 10) sets the timed
# calls per variant; TORCH_COMPILE=0 skips the torch.compile variant (its
# compilation takes minutes on ResNeXt-101).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gla_bench}"
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python - <<'PY'
import jax
print('jax', jax.__version__, jax.devices())
if jax.default_backend() != 'gpu':
  raise SystemExit('JAX sees no GPU: install jax[cuda12] on this machine first.')
try:
  import torch
  print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
except ImportError:
  print('torch not installed: JAX figures only')
PY

compile_flag=--torch_compile
[[ "${TORCH_COMPILE:-1}" == 0 ]] && compile_flag=--no-torch_compile
python -m benchmarks.bench --preset=resnext101 --frames=16 --size=112 --batch=32 \
  --dtype=bfloat16 --device=gpu --steps="${STEPS:-10}" "$compile_flag" \
  --out="$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.txt"

# Issue 16: every explanation method against its PyTorch peer (captum, pytorch-grad-cam, Score-CAM
# and Ablation-CAM in PyTorch), ResNeXt-101 16x112x112 batch 8 bfloat16; and Score-CAM's compiled
# footprint against a 16 GB accelerator.
python -m benchmarks.methods_bench --preset=resnext101 --frames=16 --size=112 --batch=8 \
  --dtype=bfloat16 --device=gpu --steps="${METHOD_STEPS:-2}" --chunk_size=16 \
  --out="$OUT/methods_gpu.json" 2>&1 | tee "$OUT/methods_gpu.txt"
