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

Weights: explain, localize, eval and loc_eval use the workdir's (gla_jax/weights.py),
or `--checkpoint=PATH` (a training workdir, a converted directory or a .pth file;
outputs still go to --workdir). `--class_names=FILE` (one name per line) names the
classes stored at --mode=convert. An error you can fix prints one line and exits
with status 1; `--debug` shows its traceback.
"""
import linecache
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
# The package's folder: an error raised by code in it is the project's own.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'A shipped config by name (demo, tiny, ucf101, ucf101:folder, kinetics) '
    'or a config file (path.py[:arg]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and pictures go: a local folder '
                    'or a gs://, s3://, az:// or hf:// URI (see the README).')
flags.DEFINE_enum('mode', 'all', MODES, 'What to run.')
flags.DEFINE_string('video', None, 'What --mode=explain and --mode=localize explain: a video '
                    'file, a folder of frames (JPEG/PNG), several paths separated by commas, a '
                    'quoted glob or a folder of videos.')
flags.DEFINE_string('torch_checkpoint', None, 'PyTorch .pth file for --mode=convert.')
flags.DEFINE_bool('drop_head', False, 'Convert without the classifier (fine-tuning to new classes).')
flags.DEFINE_string('checkpoint', None, 'Weights for --mode=explain, localize, eval and loc_eval '
                    'instead of the workdir\'s: a training workdir, a converted directory or a '
                    'PyTorch .pth file (outputs still go to --workdir).')
flags.DEFINE_string('class_names', None, 'For --mode=convert: a text file of the class names, '
                    'one per line in label order, stored with the weights (default: the shipped '
                    'UCF101, HMDB51 or Kinetics-400 list, by class count).')
flags.DEFINE_bool('debug', False, 'Show the full traceback of an error (by default an error '
                  'you can fix prints one message).')
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


def is_user_error(error: BaseException) -> bool:
  """Whether `error` is one a user causes and fixes (bad flags, config, video, weights, data).

  Those are the errors the project raises on purpose, with a message that
  names the problem and the fix: the project's error classes (e.g.
  `video_io.VideoReadError`, `convert.CheckpointMismatchError`,
  `bad_data.BadDataError`) wherever they come from, any exception raised by a
  `raise` statement in gla_jax's own code (its ValueErrors for config values,
  missing weights, weights of another model), a flag error (`app.UsageError`),
  and any OSError (a missing file, a permission, a full disk). Anything else
  (an error inside a library, an assertion) is a bug and keeps its traceback.
  """
  if (isinstance(error, (app.UsageError, OSError)) or
      type(error).__module__.startswith('gla_jax.')):
    return True
  if not isinstance(error, Exception) or isinstance(error, AssertionError):
    return False
  last = error.__traceback__
  while last is not None and last.tb_next is not None:
    last = last.tb_next
  if last is None:
    return False
  filename = os.path.abspath(last.tb_frame.f_code.co_filename)
  if not filename.startswith(_PACKAGE_DIR + os.sep):
    return False
  return linecache.getline(filename, last.tb_lineno).lstrip().startswith('raise')


def error_message(error: BaseException) -> str:
  """The message of `error` as a user reads it (a KeyError's without its quotes)."""
  if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
    return error.args[0]
  return str(error) or type(error).__name__


def run(argv: Sequence[str]) -> None:
  """Runs the mode of the parsed flags (`app.run`'s main).

  An error a user causes (`is_user_error`) prints one message and exits with
  status 1; `--debug` shows its traceback instead.
  """
  try:
    _run_mode(argv)
  except Exception as error:  # pylint: disable=broad-except  (re-raised unless a user's)
    if FLAGS.debug or not is_user_error(error):
      raise
    sys.exit(f'Error: {error_message(error)}')


def _run_mode(argv: Sequence[str]) -> None:
  """The work of `run`."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietCheckpointing())
  config, workdir, mode = FLAGS.config, FLAGS.workdir, FLAGS.mode
  if FLAGS.class_names and mode != 'convert':
    raise app.UsageError('--class_names is for --mode=convert (the names are stored with the '
                         'weights, and every mode reads them from there).')
  try:
    storage.absolute(workdir)   # A URI of a scheme nothing reaches fails before any work.
  except ValueError as error:
    raise app.UsageError(f'--workdir: {error}') from None
  # Imported here so that `--help` and flag errors answer without loading JAX.
  from gla_jax import compile_cache  # pylint: disable=g-import-not-at-top
  from gla_jax import jobs  # pylint: disable=g-import-not-at-top
  compile_cache.enable(bool(config.get('compilation_cache', True)))   # Before any compile.
  if mode == 'convert':
    if not FLAGS.torch_checkpoint:
      raise app.UsageError('--mode=convert needs --torch_checkpoint=PATH.pth')
    if FLAGS.checkpoint:
      raise app.UsageError('--checkpoint is for --mode=explain, localize, eval and loc_eval; '
                           '--mode=convert reads --torch_checkpoint.')
    jobs.convert(config, workdir, FLAGS.torch_checkpoint, drop_head=FLAGS.drop_head,
                 class_names_file=FLAGS.class_names)
  elif mode in ('explain', 'localize'):
    if not FLAGS.video:
      raise app.UsageError(f'--mode={mode} needs --video=PATH')
    jobs.explain(config, workdir, FLAGS.video, with_localization=mode == 'localize',
                 checkpoint=FLAGS.checkpoint)
  elif mode in ('eval', 'loc_eval'):
    {'eval': jobs.evaluate, 'loc_eval': jobs.loc_eval}[mode](config, workdir,
                                                            checkpoint=FLAGS.checkpoint)
  else:
    if FLAGS.checkpoint:
      raise app.UsageError(f'--checkpoint is for --mode=explain, localize, eval and loc_eval; '
                           f'to start --mode={mode} from weights set '
                           '--config.train.init_checkpoint=PATH.')
    {'all': jobs.main_job, 'train': jobs.train}[mode](config, workdir)


def _show_flags_in_help(program: str) -> None:
  """`--help` lists this module's flags under the program's name (absl lists the main module's)."""
  for name in ('config', 'workdir', 'mode', 'video', 'checkpoint', 'torch_checkpoint',
               'drop_head', 'class_names', 'debug'):
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
  try:
    app.run(run, argv=argv)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    # Raised while the flags are parsed: a --config.<key>=value override of a
    # key the config lacks (ml_collections' "Did you mean" message).
    if FLAGS.is_parsed() or _wants_debug(argv):
      raise
    sys.exit(f'FATAL Flags parsing error: {_override_error(argv, error)}')


def _wants_debug(argv: Sequence[str]) -> bool:
  """Whether `argv` turns --debug on (its last --debug / --nodebug wins)."""
  wanted = False
  for arg in argv:
    if arg in ('--debug', '--debug=true', '--debug=True', '--debug=1'):
      wanted = True
    elif arg in ('--nodebug', '--debug=false', '--debug=False', '--debug=0'):
      wanted = False
  return wanted


def _override_error(argv: Sequence[str], error: BaseException) -> str:
  """One line for a config override that failed: the flag, and ml_collections' suggestion."""
  # ml_collections wraps its KeyError in an AttributeError: take the first text.
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = error_message(error)
  text = ' '.join(part.strip() for part in text.splitlines() if part.strip())
  key = text.split()[0].strip('\'"') if text.split() else ''
  flag = next((arg for arg in argv if arg.startswith('--config.') and key and
               arg.split('=', 1)[0].split('.')[-1] == key), None)
  if flag and key:
    section = flag.split('=', 1)[0][len('--'):].rsplit('.', 1)[0]
    rest = text.split(None, 1)[1] if len(text.split(None, 1)) > 1 else ''
    return f'{flag}: {section} has no key {key!r}. {rest}'.rstrip()
  return text
