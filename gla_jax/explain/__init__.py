"""Global-local attention: per-layer maps, their aggregation, localization and its evaluation.

`from gla_jax import explain` gives the compiled explanation (`explain.explain`,
`explain.make_explainer`, the per-layer map functions: `attention`) and the
input attributions (`explain.attribute`: saliency, integrated gradients,
SmoothGrad, occlusion: `attribution`); the submodules hold localization
(`localize`), its metrics (`loc_metrics`, `perturbation`), the method
comparison (`comparison`) and long videos (`long_video`). Computation only:
arrays in, arrays out; the files are written by `gla_jax.outputs`.
"""
from gla_jax.explain.attention import (AGGREGATES, LAYER_SETS, METHODS, NORMALIZATIONS,
                                       POOLINGS, Explanation, aggregate_maps, check_clips,
                                       explain, layer_map, make_explainer, minmax, normalize,
                                       resolve_layers, tap_gradients)
from gla_jax.explain.attribution import ATTRIBUTION_METHODS, Attribution, attribute
from gla_jax.explain.cam_methods import (GRADIENT_METHODS, MASKED_METHODS, METHOD_ALIASES,
                                         canonical_method)
from gla_jax.explain.upsampling import UPSAMPLINGS, upsample
