r"""UCF101-24: fine-tune on the 24 UCF101 classes with boxes, and score localization against them.

The videos are UCF101's (UCF-101/<class>/<file>.avi, 320 x 240); the boxes are
Singh et al.'s corrected `pyannot.pkl` (github.com/gurkirt/corrected-UCF101-Annots),
converted once into the project's annotation file and two split lists of the 24
classes' videos (UCF101's split 1 filtered to the videos the annotations have),
written beside the videos by default:
  python -m configs.ucf101_24 --pyannot=/data/pyannot.pkl \
      --lists=/data/ucfTrainTestlist --out=/data/UCF-101

Then, as configs/ucf101.py (Hara's Kinetics weights, a new 24-class head):
  python main.py --config=configs/ucf101_24.py --workdir=runs/ucf101_24 --mode=convert \
      --torch_checkpoint=resnext-101-kinetics.pth --drop_head
  python main.py --config=configs/ucf101_24.py --workdir=runs/ucf101_24 --mode=train \
      --config.data.root=/data/UCF-101
  python main.py --config=configs/ucf101_24.py --workdir=runs/ucf101_24 --mode=loc_eval \
      --config.data.root=/data/UCF-101
With the files elsewhere than the videos (--out=/data/ucf101_24), add
  --config.data.annotations=/data/ucf101_24/ucf101_24_annotations.json \
  --config.data.train_split_file=/data/ucf101_24/ucf101_24_trainlist01.txt \
  --config.data.eval_split_file=/data/ucf101_24/ucf101_24_testlist01.txt

Training is Hara's recipe of configs/ucf101.py on the ~2,300 training videos
(~80 epochs). `--mode=loc_eval` scores every method's boxes on the test
videos (localization accuracy, mean IoU, pointing game, frame-mAP@0.5 and
video-mAP@0.2/0.5, labelled with the predicted class as in a weakly
supervised detector). It holds every clip's maps in memory (16 x 112 x 112
float32, 0.8 MB per clip and method): `localize.max_clips` = 960 clips (about
90 of the 910 test videos, whole videos spread over the classes) is about
0.8 GB per method; the whole test split (`--config.localize.max_clips=0`,
about 10,000 clips) needs fewer methods (`--config.localize.methods=...`).
A frame's ground-truth box is the union of its actors' tubes
(`gla_jax.data.annotations.from_ucf101_24`), since the attention gives one box.
"""
import argparse
from typing import Dict, Optional, Sequence

import ml_collections

from gla_jax.data import annotations
from gla_jax.data import storage

try:              # Installed, the configs are gla_jax.configs; in a checkout, configs.
  from gla_jax.configs import ucf101  # pylint: disable=g-import-not-at-top
except ImportError:
  from configs import ucf101  # pylint: disable=g-import-not-at-top

# The UCF101-24 classes in the order of pyannot.pkl's labels.
CLASSES = ('Basketball', 'BasketballDunk', 'Biking', 'CliffDiving', 'CricketBowling', 'Diving',
           'Fencing', 'FloorGymnastics', 'GolfSwing', 'HorseRiding', 'IceDancing', 'LongJump',
           'PoleVault', 'RopeClimbing', 'SalsaSpin', 'SkateBoarding', 'Skiing', 'Skijet',
           'SoccerJuggling', 'Surfing', 'TennisSwing', 'TrampolineJumping', 'VolleyballSpiking',
           'WalkingWithDog')
# The files `prepare_files` writes, relative to data.root unless overridden.
ANNOTATIONS_FILE = 'ucf101_24_annotations.json'
TRAIN_LIST = 'ucf101_24_trainlist{split:02d}.txt'
TEST_LIST = 'ucf101_24_testlist{split:02d}.txt'


def get_config(arg: Optional[str] = None) -> ml_collections.ConfigDict:
  del arg   # No variants: the folder source is the only one with boxes.
  config = ucf101.get_config('folder')
  config.model.num_classes = len(CLASSES)

  data = config.data
  data.annotations = ANNOTATIONS_FILE
  data.train_split_file = TRAIN_LIST.format(split=1)
  data.eval_split_file = TEST_LIST.format(split=1)

  train = config.train
  train.num_steps = 1_500                  # ~80 epochs of split 1's ~2,300 training videos
  train.step_boundaries = (750, 1_125)
  train.eval_every = 250
  train.checkpoint_every = 250

  config.localize.max_clips = 960
  return config


def _video_names(list_path: str) -> Sequence[str]:
  """The '<class>/<file>' names (no extension) of a UCF101 split list, in its order."""
  names = []
  for line in storage.read_text(list_path).splitlines():
    if line.split():
      path = line.split()[0]
      names.append(path[:-len('.avi')] if path.endswith('.avi') else path)
  return names


def prepare_files(pyannot: str, lists: str, out: str, split: int = 1) -> Dict[str, str]:
  """Writes the annotation file and the two split lists of UCF101-24 into `out`.

  Args:
    pyannot: Singh et al.'s `pyannot.pkl` (unpickled: a file you trust).
    lists: UCF101's ucfTrainTestlist folder (trainlist0<split>.txt, testlist0<split>.txt).
    out: the folder to write into (created if missing): the videos' folder
      for the config's relative defaults.
    split: UCF101's split, 1 to 3.

  Returns:
    {'annotations', 'train', 'test'}: the paths written.

  Raises:
    ValueError: pyannot.pkl's labels do not follow `CLASSES`, or a list has
      no annotated video.
  """
  if split not in (1, 2, 3):
    raise ValueError(f'split={split}: UCF101 has splits 1, 2 and 3.')
  annots = annotations.load_ucf101_24_pickle(pyannot)
  listed = {}
  for part, name in (('train', 'trainlist'), ('test', 'testlist')):
    names = [n for n in _video_names(storage.join(lists, f'{name}{split:02d}.txt'))
             if n in annots]
    if not names:
      raise ValueError(f'{name}{split:02d}.txt in {lists!r} lists none of the {len(annots)} '
                       f'videos of {pyannot!r}; check both files.')
    listed[part] = names
  data = annotations.from_ucf101_24(annots, CLASSES, videos=listed['train'] + listed['test'])
  for video in data['videos']:
    folder = video['path'].split('/')[0]
    if CLASSES[video['label']] != folder:
      raise ValueError(f'{video["path"]!r} has label {video["label"]} ({CLASSES[video["label"]]})'
                       f' but lies in {folder!r}: the labels of {pyannot!r} do not follow '
                       'configs/ucf101_24.CLASSES.')
  paths = dict(annotations=storage.join(out, ANNOTATIONS_FILE),
               train=storage.join(out, TRAIN_LIST.format(split=split)),
               test=storage.join(out, TEST_LIST.format(split=split)))
  annotations.save(data, paths['annotations'])
  for part in ('train', 'test'):
    storage.write_text(paths[part], ''.join(f'{name}.avi\n' for name in listed[part]))
  return paths


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=prepare_files.__doc__.splitlines()[0])
  parser.add_argument('--pyannot', required=True, help="Singh et al.'s pyannot.pkl")
  parser.add_argument('--lists', required=True, help="UCF101's ucfTrainTestlist folder")
  parser.add_argument('--out', required=True, help='where to write (the videos folder)')
  parser.add_argument('--split', type=int, default=1, help='UCF101 split, 1 to 3')
  args = parser.parse_args(argv)
  for part, path in prepare_files(args.pyannot, args.lists, args.out, args.split).items():
    print(f'{part}: {path}')


if __name__ == '__main__':
  main()
