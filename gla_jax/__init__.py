"""gla_jax: global-local attention of 3D CNNs in JAX/Flax.

A reimplementation of Yudistira, Kavitha and Kurita, "Weakly-Supervised Action
Localization and Action Recognition using Global-Local Attention of 3D CNN"
(IJCV 2022, arXiv 2012.09542).
"""
__version__ = '0.2.0'

from gla_jax import explain
from gla_jax import models
from gla_jax.explain import localize
from gla_jax.models import convert
