r"""Fine-tune ResNeXt-101 from Hara's Kinetics weights on UCF101 (split 1), Hara's recipe.

From TFDS (`ucf101/ucf101_1`, the config that keeps the 320x240 frames, prepared in
TFDS's data_dir as ArrayRecord; no download happens here):
  python main.py --config=configs/ucf101.py --workdir=runs/ucf101 --mode=convert \
      --torch_checkpoint=resnext-101-kinetics.pth --drop_head
  python main.py --config=configs/ucf101.py --workdir=runs/ucf101 --mode=train \
      --config.data.tfds_data_dir=/data/tensorflow_datasets

From the raw videos (UCF-101/<class>/<file>.avi and ucfTrainTestlist/):
  python main.py --config=configs/ucf101.py:folder --workdir=runs/ucf101 --mode=train \
      --config.data.root=/data/UCF-101 \
      --config.data.train_split_file=/data/ucfTrainTestlist/trainlist01.txt \
      --config.data.eval_split_file=/data/ucfTrainTestlist/testlist01.txt

Recipe (Hara et al. CVPR 2018, 3D-ResNets-PyTorch): 16 x 112 x 112 clips,
multi-scale corner crops and flips, the ActivityNet mean subtracted from
[0, 255] pixels (what the published weights expect), SGD with momentum 0.9,
dampening 0.9 and weight decay 1e-3 (his main.py's defaults: a step of lr * g
under a steady gradient, a tenth of undamped SGD's), learning rate 0.1 lowered
tenfold as training plateaus (here at fixed steps), and only layer4 and the
classifier trained
(`ft_begin_index=4` = `freeze_until='layer3'`). Batch 128 on the accelerators
of one host; bfloat16 compute. Evaluation: clip accuracy, and video accuracy
over every non-overlapping clip (Hara's test protocol); published: 90.7 %.
`init_checkpoint` reads `<workdir>/converted` written by the convert command;
point it at the .pth file instead to convert on the fly.
"""
import ml_collections

from gla_jax import defaults

SOURCES = ('tfds', 'folder')


def get_config(source: str = 'tfds') -> ml_collections.ConfigDict:
  if source not in SOURCES:
    raise ValueError(f'configs/ucf101.py:{source}: choose one of {SOURCES} after the colon.')
  config = defaults.base_config()
  config.model.update(preset='resnext101', num_classes=101, dtype='bfloat16')

  data = config.data
  data.source = source
  data.tfds_name = 'ucf101/ucf101_1'       # split 1, undistorted (ucf101 alone: 256x256 squares)
  data.num_frames = 16
  data.crop_size = 112
  data.workers = 16

  train = config.train
  train.batch_size = 128
  train.num_steps = 6_000                  # ~80 epochs of split 1's 9,537 videos
  train.learning_rate = 0.1
  train.schedule = 'step'
  train.step_boundaries = (3_000, 4_500)
  train.step_decay = 0.1
  train.dampening = 0.9                    # Hara's --dampening (the default, stated here)
  train.weight_decay = 1e-3
  train.init_checkpoint = 'converted'      # relative: <workdir>/converted (see the docstring)
  train.drop_head = True
  train.freeze_until = 'layer3'
  train.log_every = 50
  train.eval_every = 750
  train.checkpoint_every = 250

  config.eval.batch_size = 128
  config.explain.batch_size = 32
  config.lock()
  return config
