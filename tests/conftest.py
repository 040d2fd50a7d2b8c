"""Test set-up: 4 simulated CPU devices, so multi-device code is tested on CPU."""
import jax

jax.config.update('jax_num_cpu_devices', 4)
