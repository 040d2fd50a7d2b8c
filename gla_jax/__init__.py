"""gla_jax: global-local attention of 3D CNNs in JAX/Flax.

A reimplementation of Yudistira, Kavitha and Kurita, "Weakly-Supervised Action
Localization and Action Recognition using Global-Local Attention of 3D CNN"
(IJCV 2022, arXiv 2012.09542).
"""
