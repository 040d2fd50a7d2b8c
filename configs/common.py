"""The keys every config has, with their defaults; the other configs override them.

Sections: `model`, `data` (see `gla_jax.input_pipeline.default_data_config`),
`train`, `eval`, `explain`. Durations are in steps. Every config is locked, so a
misspelt override (`--config.train.learning_rat=0.1`) fails instead of being
silently added.
"""
import ml_collections

from gla_jax import input_pipeline


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      preset='resnext101',     # resnext50 | resnext101 | resnext152 | tiny
      num_classes=101,
      dtype='float32',         # compute dtype: float32 | bfloat16 (parameters stay float32)
  ))
  config.data = input_pipeline.default_data_config()
  config.train = ml_collections.ConfigDict(dict(
      batch_size=32,           # global, over all devices and hosts
      num_steps=10_000,
      learning_rate=0.1,       # peak, after warm-up
      schedule='cosine',       # cosine | step | constant
      warmup_steps=0,
      step_boundaries=(),      # for schedule='step': steps where the rate drops
      step_decay=0.1,          # multiplier at each boundary
      momentum=0.9,
      nesterov=False,
      weight_decay=1e-3,       # L2 on every parameter, as Hara's SGD weight_decay
      seed=0,
      init_checkpoint='',      # a converted checkpoint dir, a training workdir or a .pth file
      drop_head=False,         # re-initialise the classifier (new class count)
      freeze_until='',         # '' | conv1 | layer1 .. layer4: train only what follows (Hara's ft_begin_index)
      log_every=50,
      eval_every=1000,
      checkpoint_every=1000,
      keep_checkpoints=3,
  ))
  config.eval = ml_collections.ConfigDict(dict(
      batch_size=32,
      max_batches=0,           # 0 = the whole evaluation split
  ))
  config.explain = ml_collections.ConfigDict(dict(
      method='gradcam',        # gradcam | gradcam_pp | layercam | elementwise
      layers='stages',         # stages | blocks | comma-separated tap names
      aggregate='mean',        # mean | max | product | sum
      pooling='global',        # global | time
      normalization='minmax',  # minmax | tanh
      batch_size=8,
      max_clips=16,            # validation clips explained by the main job
  ))
  config.num_devices = 0       # 0 = every visible device
  config.distributed = False   # call jax.distributed.initialize() (multi-host)
  return config
