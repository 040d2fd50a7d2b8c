r"""Train ResNeXt-101 from scratch on Kinetics-400 at scale (folder of videos).

  python main.py --config=configs/kinetics.py --workdir=gs://bucket/runs/kinetics --mode=train \
      --config.data.root=/data/kinetics400/train --config.data.eval_root=/data/kinetics400/val

Multi-host (TPU pods, SLURM, ...): add `--config.distributed=True` and start
the same command on every host; each host decodes its own rows of every
global batch. Videos are `<root>/<class>/<file>`; the class order is the
sorted folder names unless `data.annotations` gives one.

Recipe (Hara et al. CVPR 2018, adapted to large batches): 16 x 112 x 112
clips, multi-scale corner crops and flips, ActivityNet mean subtracted; SGD
with momentum 0.9, dampening 0.9 and weight decay 1e-3 (his main.py's
defaults); his learning rate, 0.1 for 128 clips, scaled linearly with the
batch (Goyal et al.), with a linear warm-up and a cosine decay; bfloat16
compute, float32 parameters and BatchNorm statistics. (Dampening 0.9 makes a
step a tenth of undamped SGD's: 0.8 here moves as undamped SGD at 0.08.)
"""
import ml_collections

from gla_jax import defaults


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg   # No variants.
  config = defaults.base_config()
  config.model.update(preset='resnext101', num_classes=400, dtype='bfloat16')

  data = config.data
  data.source = 'folder'
  data.num_frames = 16
  data.crop_size = 112
  data.workers = 32
  data.prefetch = 4

  train = config.train
  train.batch_size = 1024                  # global, over every device and host
  train.num_steps = 47_000                 # ~200 epochs of Kinetics-400's ~240k videos (Hara)
  train.learning_rate = 0.8                # Hara's 0.1 per 128 clips
  train.dampening = 0.9                    # Hara's --dampening (the default, stated here)
  train.schedule = 'cosine'
  train.warmup_steps = 2_500
  train.weight_decay = 1e-3
  train.log_every = 100
  train.eval_every = 5_000
  train.checkpoint_every = 1_000
  train.keep_checkpoints = 3

  config.eval.batch_size = 1024
  config.eval.max_batches = 50             # a seeded sample of whole videos across the classes;
                                           # --mode=eval too: --config.eval.max_batches=0 reads all
  config.lock()
  return config
