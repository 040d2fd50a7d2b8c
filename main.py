r"""gla_jax command line: one library call per mode.

  python main.py --config=configs/demo.py --workdir=runs/demo --mode=all
  python main.py --config=configs/ucf101.py --workdir=runs/ucf101 --mode=convert \
      --torch_checkpoint=resnext-101-kinetics.pth
  python main.py --config=configs/demo.py --workdir=runs/demo --mode=explain --video=clip.avi
  python main.py --config=configs/demo.py --workdir=runs/demo --mode=localize --video=clip.avi
  python main.py --config=configs/demo.py --workdir=runs/demo --mode=loc_eval

Modes:
  all       the main job: train, evaluate, explain validation clips, write pictures;
  train     train and evaluate (resumes from the workdir's latest checkpoint);
  eval      evaluate the workdir's weights on the evaluation split;
  convert   convert a published PyTorch checkpoint into <workdir>/converted;
  explain   explain the video file given by --video: maps and panels in
            <workdir>/explain/<name>/;
  localize  explain and localize it: also boxes and segments (localization.json)
            and the overlay video, in <workdir>/localize/<name>/;
  loc_eval  compare the attention methods' localization on evaluation clips with
            ground truth: <workdir>/loc_eval/comparison.md and .json, pictures.
"""
import logging as std_logging

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and pictures go.')
flags.DEFINE_enum('mode', 'all', ['all', 'train', 'eval', 'convert', 'explain', 'localize',
                                  'loc_eval'], 'What to run.')
flags.DEFINE_string('video', None, 'Video file for --mode=explain and --mode=localize.')
flags.DEFINE_string('torch_checkpoint', None, 'PyTorch .pth file for --mode=convert.')
flags.DEFINE_bool('drop_head', False, 'Convert without the classifier (fine-tuning to new classes).')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietCheckpointing(std_logging.Filter):
  """Drops orbax's INFO lines (several per checkpoint); its warnings and errors pass."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietCheckpointing())
  # Imported here so that `--help` and flag errors answer without loading JAX.
  from gla_jax.models import convert
  from gla_jax.explain import long_video
  from gla_jax.explain import comparison

  config, workdir = FLAGS.config, FLAGS.workdir
  if FLAGS.mode == 'convert':
    if not FLAGS.torch_checkpoint:
      raise app.UsageError('--mode=convert needs --torch_checkpoint=PATH.pth')
    directory = f'{workdir}/{long_video.CONVERTED_DIR}'
    convert.convert_checkpoint(FLAGS.torch_checkpoint, long_video.build_model(config), directory,
                               drop_head=FLAGS.drop_head)
    logging.info('Converted %s into %s', FLAGS.torch_checkpoint, directory)
    print(f'Converted weights: {directory}')
  elif FLAGS.mode in ('explain', 'localize'):
    if not FLAGS.video:
      raise app.UsageError(f'--mode={FLAGS.mode} needs --video=PATH')
    with_localization = FLAGS.mode == 'localize'
    out_dir = long_video.explain_video_file(config, workdir, FLAGS.video,
                                           with_localization=with_localization)
    print(f'{"Localization" if with_localization else "Explanations"}: {out_dir}')
  elif FLAGS.mode == 'loc_eval':
    result = comparison.run(config, workdir)
    print(f'Localization comparison: {result["files"]["markdown"]}')
  else:
    from gla_jax import jobs
    {'train': jobs.train, 'eval': jobs.evaluate, 'all': jobs.main_job}[FLAGS.mode](config, workdir)


if __name__ == '__main__':
  from gla_jax import hugepages
  hugepages.restart_with_huge_pages()   # Faster XLA:CPU calls; see gla_jax/hugepages.py.
  app.run(main)
