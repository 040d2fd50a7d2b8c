"""gla_jax: global-local attention of 3D CNNs in JAX/Flax.

A reimplementation of Yudistira, Kavitha and Kurita, "Weakly-Supervised Action
Localization and Action Recognition using Global-Local Attention of 3D CNN"
(IJCV 2022, arXiv 2012.09542). `from gla_jax import convert, explain, localize,
models` gives the core; the subpackages are loaded when first used, so the
command line answers `--help` without loading JAX.
"""
import importlib

__version__ = '0.2.0'

# Public names -> the modules that hold them.
_MODULES = {
    'convert': 'gla_jax.models.convert',
    'explain': 'gla_jax.explain',
    'localize': 'gla_jax.explain.localize',
    'models': 'gla_jax.models',
}


def __getattr__(name):
  if name in _MODULES:
    return importlib.import_module(_MODULES[name])
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
