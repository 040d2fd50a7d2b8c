"""Speed benchmarks: run each as `python -m benchmarks.<name>` from the repository root.

bench (JAX against PyTorch), step_profile (where one step's time goes),
conv_bench (per-layer convolutions), explain_time (one explanation batch),
input_bench (the input pipeline); harness holds what they share. Results:
docs/results.md.
"""
