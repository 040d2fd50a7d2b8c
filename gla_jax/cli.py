r"""The `gla-jax` command (and the checkout's `main.py`): flags, then one job per mode.

  gla-jax --config=demo --workdir=runs/demo                  # the main job
  gla-jax --config=ucf101 --workdir=runs/ucf101 --mode=convert \
      --torch_checkpoint=resnext-101-kinetics.pth --drop_head
  gla-jax --config=demo --workdir=runs/demo --mode=localize --video=clip.avi
  python main.py --config=configs/demo.py --workdir=runs/demo  # the same, from a checkout

`--config` takes the name of a shipped config (`demo`, `tiny`, `ucf101`,
`ucf101:folder`, `kinetics`) or the path of a config file (`my_config.py[:arg]`);
`--config.<section>.<key>=value` overrides a key.

Modes:
  all       the main job: train, evaluate, compare the attention methods'
            localization, and (synthetic data) localize the action in a long video;
  train     train and evaluate (resumes from the workdir's latest checkpoint);
  eval      evaluate the weights on the evaluation split;
  convert   convert a published PyTorch checkpoint into <workdir>/converted;
  explain   explain the video file given by --video: maps and panels in
            <workdir>/explain/<name>/;
  localize  explain and localize it: also boxes and segments (localization.json)
            and the overlay video, in <workdir>/localize/<name>/;
  loc_eval  compare the attention methods' localization on evaluation clips with
            ground truth: <workdir>/loc_eval/comparison.md and .json, pictures.
"""
import logging as std_logging
import os
import pathlib
import sys
from typing import List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gla_jax import hugepages
from gla_jax.data import storage

MODES = ('all', 'train', 'eval', 'convert', 'explain', 'localize', 'loc_eval')

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'A shipped config by name (demo, tiny, ucf101, ucf101:folder, kinetics) '
    'or a config file (path.py[:arg]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and pictures go: a local folder '
                    'or a gs://, s3://, az:// or hf:// URI (see the README).')
flags.DEFINE_enum('mode', 'all', MODES, 'What to run.')
flags.DEFINE_string('video', None, 'Video file for --mode=explain and --mode=localize.')
flags.DEFINE_string('torch_checkpoint', None, 'PyTorch .pth file for --mode=convert.')
flags.DEFINE_bool('drop_head', False, 'Convert without the classifier (fine-tuning to new classes).')
flags.mark_flags_as_required(['config', 'workdir'])


def shipped_configs_dir() -> pathlib.Path:
  """The folder of the shipped configs: `gla_jax.configs` when installed, else the checkout's."""
  try:
    from gla_jax import configs  # pylint: disable=g-import-not-at-top  (only when installed)
    return pathlib.Path(configs.__file__).parent
  except ImportError:
    return pathlib.Path(__file__).resolve().parent.parent / 'configs'


def shipped_config_names() -> List[str]:
  return sorted(path.stem for path in shipped_configs_dir().glob('*.py')
                if path.stem != '__init__')


def config_file(value: str) -> str:
  """`--config`'s value as a file: a shipped config's name becomes its path.

  `demo` and `demo:arg` name `configs/demo.py`; anything with a path separator
  or a `.py` ending is a file of the user's and is returned as it is.

  Raises:
    app.UsageError: a name that no shipped config has.
  """
  name, colon, arg = value.partition(':')
  if os.sep in name or '/' in name or name.endswith('.py'):
    return value
  path = shipped_configs_dir() / f'{name}.py'
  if not path.is_file():
    raise app.UsageError(f'--config={value}: no shipped config is named {name!r} (shipped: '
                         f'{", ".join(shipped_config_names())}); for your own config pass its '
                         'path, e.g. --config=my_config.py.')
  return str(path) + colon + arg


def with_config_files(argv: Sequence[str]) -> List[str]:
  """`argv` with the value of `--config=NAME` (or `--config NAME`) made a file path."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      argv[i] = '--config=' + config_file(arg[len('--config='):])
    elif arg == '--config' and i + 1 < len(argv):
      argv[i + 1] = config_file(argv[i + 1])
  return argv


class _QuietCheckpointing(std_logging.Filter):
  """Drops orbax's INFO lines (several per checkpoint); its warnings and errors pass."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def run(argv: Sequence[str]) -> None:
  """Runs the mode of the parsed flags (`app.run`'s main)."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietCheckpointing())
  config, workdir, mode = FLAGS.config, FLAGS.workdir, FLAGS.mode
  try:
    storage.absolute(workdir)   # A URI of a scheme nothing reaches fails before any work.
  except ValueError as error:
    raise app.UsageError(f'--workdir: {error}') from None
  # Imported here so that `--help` and flag errors answer without loading JAX.
  from gla_jax import jobs  # pylint: disable=g-import-not-at-top
  if mode == 'convert':
    if not FLAGS.torch_checkpoint:
      raise app.UsageError('--mode=convert needs --torch_checkpoint=PATH.pth')
    jobs.convert(config, workdir, FLAGS.torch_checkpoint, drop_head=FLAGS.drop_head)
  elif mode in ('explain', 'localize'):
    if not FLAGS.video:
      raise app.UsageError(f'--mode={mode} needs --video=PATH')
    jobs.explain(config, workdir, FLAGS.video, with_localization=mode == 'localize')
  else:
    {'all': jobs.main_job, 'train': jobs.train, 'eval': jobs.evaluate,
     'loc_eval': jobs.loc_eval}[mode](config, workdir)


def _show_flags_in_help(program: str) -> None:
  """`--help` lists this module's flags under the program's name (absl lists the main module's)."""
  for name in ('config', 'workdir', 'mode', 'video', 'torch_checkpoint', 'drop_head'):
    FLAGS.register_key_flag_for_module(program, FLAGS[name])
  sys.modules['__main__'].__doc__ = __doc__   # The usage text `--help` prints.


def main(argv: Optional[Sequence[str]] = None) -> None:
  """Entry point of `gla-jax` and `main.py`."""
  hugepages.restart_with_huge_pages()   # Faster XLA:CPU calls; see gla_jax/hugepages.py.
  argv = list(sys.argv if argv is None else argv)
  _show_flags_in_help(argv[0])
  try:
    argv = with_config_files(argv)
  except app.UsageError as error:
    sys.exit(f'FATAL Flags parsing error: {error}')
  app.run(run, argv=argv)
