"""Global-local attention: per-layer maps, their aggregation, localization and its evaluation.

`from gla_jax import explain` gives the compiled explanation (`explain.explain`,
`explain.make_explainer`, the per-layer map functions); the submodules hold
localization (`localize`), its metrics, the method comparison and long videos.
"""
from gla_jax.explain.attention import (AGGREGATES, LAYER_SETS, METHODS, NORMALIZATIONS,
                                       POOLINGS, Explanation, aggregate_maps, check_clips,
                                       explain, layer_map, make_explainer, minmax, normalize,
                                       resolve_layers, tap_gradients, upsample)
