"""Test set-up for CPU: 4 simulated devices and fast compiles.

4 simulated CPU devices, so multi-device code is tested on CPU. Most XLA
optimizations are off (docs/design.md, JAX facts: compiling, not running, dominates the
tests' time, and this halves it); every numeric comparison in the tests is
between computations compiled with the same setting, or against PyTorch and
finite differences with tolerances that hold either way.
"""
import jax

jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_disable_most_optimizations', True)
