r"""gla_jax command line: one library call per mode.

  python main.py --config=configs/demo.py --workdir=runs/demo --mode=all
  python main.py --config=configs/ucf101.py --workdir=runs/ucf101 --mode=convert \
      --torch_checkpoint=resnext-101-kinetics.pth
  python main.py --config=configs/demo.py --workdir=runs/demo --mode=explain --video=clip.avi

Modes:
  all      the main job: train, evaluate, explain validation clips, write pictures;
  train    train and evaluate (resumes from the workdir's latest checkpoint);
  eval     evaluate the workdir's weights on the evaluation split;
  convert  convert a published PyTorch checkpoint into <workdir>/converted;
  explain  explain the video file given by --video.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and pictures go.')
flags.DEFINE_enum('mode', 'all', ['all', 'train', 'eval', 'convert', 'explain'], 'What to run.')
flags.DEFINE_string('video', None, 'Video file for --mode=explain.')
flags.DEFINE_string('torch_checkpoint', None, 'PyTorch .pth file for --mode=convert.')
flags.DEFINE_bool('drop_head', False, 'Convert without the classifier (fine-tuning to new classes).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so that `--help` and flag errors answer without loading JAX.
  from gla_jax import convert, inference

  config, workdir = FLAGS.config, FLAGS.workdir
  if FLAGS.mode == 'convert':
    if not FLAGS.torch_checkpoint:
      raise app.UsageError('--mode=convert needs --torch_checkpoint=PATH.pth')
    directory = f'{workdir}/{inference.CONVERTED_DIR}'
    convert.convert_checkpoint(FLAGS.torch_checkpoint, inference.build_model(config), directory,
                               drop_head=FLAGS.drop_head)
    logging.info('Converted %s into %s', FLAGS.torch_checkpoint, directory)
    print(f'Converted weights: {directory}')
  elif FLAGS.mode == 'explain':
    if not FLAGS.video:
      raise app.UsageError('--mode=explain needs --video=PATH')
    print(f'Explanations: {inference.explain_video_file(config, workdir, FLAGS.video)}')
  else:
    from gla_jax import jobs
    {'train': jobs.train, 'eval': jobs.evaluate, 'all': jobs.main_job}[FLAGS.mode](config, workdir)


if __name__ == '__main__':
  app.run(main)
