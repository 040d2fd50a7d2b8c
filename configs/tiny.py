r"""A seconds-long training run for tests: tiny ResNeXt on 8 x 16 x 16 synthetic clips.

  python main.py --config=configs/tiny.py --workdir=/tmp/tiny --mode=train

Not meant to learn anything: it exercises every part of training (sharding,
checkpoints, resume, evaluation, reporting) at the smallest clip the network
takes (layer4 is 1 x 1 x 1; a warning says the clip is below the strides).
"""
import ml_collections

from gla_jax import defaults


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg   # No variants.
  config = defaults.base_config()
  config.model.preset = 'tiny'
  config.model.num_classes = 8          # synthetic_settings.CLASS_NAMES

  data = config.data
  data.source = 'synthetic'
  data.num_frames = 8
  data.crop_size = 16
  data.train_scales = (1.0,)
  data.workers = 0                      # Tests run examples in the caller's thread.
  data.prefetch = 1
  data.synthetic.update(train_size=32, val_size=12, num_frames=8, height=16, width=16)

  train = config.train
  train.batch_size = 8
  train.num_steps = 4
  train.learning_rate = 0.05
  train.schedule = 'cosine'
  train.warmup_steps = 1
  train.weight_decay = 1e-4
  train.log_every = 2
  train.eval_every = 2
  train.checkpoint_every = 2
  train.keep_checkpoints = 2
  train.tensorboard = False             # Importing a writer costs seconds per test.

  config.eval.batch_size = 8
  config.lock()
  return config
