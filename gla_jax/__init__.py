"""gla_jax: global-local attention of 3D CNNs in JAX/Flax.

A reimplementation of Yudistira, Kavitha and Kurita, "Weakly-Supervised Action
Localization and Action Recognition using Global-Local Attention of 3D CNN"
(IJCV 2022, arXiv 2012.09542). `from gla_jax import convert, explain, localize,
models` gives the core, `gla_jax.explain_video(video, checkpoint=...)` a
video's answer in one call (`gla_jax.preprocess`: the model's input from
frames); the subpackages are loaded when first used, so the command line
answers `--help` without loading JAX.
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


# Public functions and classes -> the modules that hold them.
_ATTRIBUTES = {
    'explain_video': 'gla_jax.video_explanation',
    'VideoExplanation': 'gla_jax.video_explanation',
    'preprocess': 'gla_jax.video_inputs',
}


def __getattr__(name):
  if name in _MODULES:
    return importlib.import_module(_MODULES[name])
  if name in _ATTRIBUTES:
    return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
