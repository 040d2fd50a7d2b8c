r"""The main job on a CPU: train a tiny 3D ResNeXt on synthetic actions, then explain.

  python main.py --config=configs/demo.py --workdir=runs/demo --mode=all

Tiny preset on 8-class synthetic clips (`gla_jax.synthetic`, default
difficulty) rendered at the crop size, so no resize and no cut-off actor.
"""
import ml_collections

from configs import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg   # No variants.
  config = common.get_config()
  config.model.preset = 'tiny'
  config.model.num_classes = 8          # synthetic.CLASS_NAMES

  data = config.data
  data.source = 'synthetic'
  data.num_frames = 8
  data.crop_size = 32
  data.train_scales = (1.0, 0.841)
  # A mirrored clip of move_left shows move_right (and rotate_cw shows
  # rotate_ccw): flipping without swapping labels would teach contradictions.
  data.flip = False
  data.synthetic.update(train_size=4096, val_size=256, num_frames=8, height=32, width=32)

  train = config.train
  train.batch_size = 16
  train.num_steps = 300
  train.learning_rate = 0.1
  train.schedule = 'cosine'
  train.warmup_steps = 20
  train.weight_decay = 5e-4
  train.log_every = 10
  train.eval_every = 50
  train.checkpoint_every = 100

  config.eval.batch_size = 32
  config.lock()
  return config
