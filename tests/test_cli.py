"""Tests of gla_jax/cli.py and the packaging: configs by name, the wheel, the installed command."""
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

from absl import app
import numpy as np
import pytest

from configs import tiny
import gla_jax
from gla_jax import cli
from gla_jax import validation
from gla_jax.data import bad_data

REPO = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = ('demo', 'kinetics', 'tiny', 'ucf101', 'ucf101_24')


def test_shipped_configs_are_found_by_name():
  assert cli.shipped_config_names() == sorted(SHIPPED)
  assert cli.config_file('demo') == str(REPO / 'configs' / 'demo.py')
  assert cli.config_file('ucf101:folder') == str(REPO / 'configs' / 'ucf101.py') + ':folder'


def test_paths_to_config_files_are_kept():
  for value in ('configs/demo.py', 'my_config.py', 'my_config.py:arg', '/abs/c.py',
                'sub/dir/config'):
    assert cli.config_file(value) == value


def test_unknown_config_name_lists_the_shipped_ones():
  with pytest.raises(app.UsageError, match=r"no shipped config is named 'demoo' \(shipped: "
                     r'demo, kinetics, tiny, ucf101, ucf101_24\).*--config=my_config.py'):
    cli.config_file('demoo')


def test_both_flag_forms_are_rewritten():
  demo = str(REPO / 'configs' / 'demo.py')
  assert cli.with_config_files(['prog', '--config=demo', '--workdir=w']) == [
      'prog', f'--config={demo}', '--workdir=w']
  assert cli.with_config_files(['prog', '--config', 'demo', '--config.train.seed=1']) == [
      'prog', '--config', demo, '--config.train.seed=1']


def test_main_py_refuses_an_unknown_config_name_without_a_traceback(tmp_path):
  done = subprocess.run([sys.executable, str(REPO / 'main.py'), '--config=nope',
                         f'--workdir={tmp_path}'], capture_output=True, text=True, timeout=60,
                        env=dict(os.environ, GLA_JAX_HUGE_PAGES='0'), check=False)
  assert done.returncode != 0
  assert "no shipped config is named 'nope'" in done.stderr
  assert 'Traceback' not in done.stderr


def test_pyproject_lists_every_subpackage_and_nothing_else():
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())
  packages = project['tool']['setuptools']['packages']
  on_disk = sorted('.'.join(path.parent.relative_to(REPO).parts)
                   for path in (REPO / 'gla_jax').rglob('__init__.py'))
  assert sorted(packages) == sorted(on_disk + ['gla_jax.configs'])
  assert project['tool']['setuptools']['package-dir'] == {'gla_jax.configs': 'configs'}
  assert project['project']['scripts'] == {'gla-jax': 'gla_jax.cli:main'}


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  """A wheel built from a copy of the sources (the checkout gets no build/ folder)."""
  source = tmp_path_factory.mktemp('source')
  for name in ('pyproject.toml', 'README.md', 'LICENSE'):
    shutil.copy(REPO / name, source / name)
  for name in ('gla_jax', 'configs'):
    shutil.copytree(REPO / name, source / name,
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
  out = tmp_path_factory.mktemp('wheel')
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                  '-q', '-w', str(out), str(source)], check=True, capture_output=True,
                 timeout=300)
  (path,) = out.glob('gla_jax-*.whl')
  return path


def test_wheel_installs_only_gla_jax_with_its_configs_and_command(wheel):
  assert wheel.name.startswith(f'gla_jax-{gla_jax.__version__}-')
  names = zipfile.ZipFile(wheel).namelist()
  assert {name.split('/')[0] for name in names} == {
      'gla_jax', f'gla_jax-{gla_jax.__version__}.dist-info'}
  for config in SHIPPED:
    assert f'gla_jax/configs/{config}.py' in names
  for labels in ('ucf101', 'hmdb51', 'kinetics400'):   # The class names of published weights.
    assert f'gla_jax/labels/{labels}.txt' in names
  entry_points = zipfile.ZipFile(wheel).read(
      f'gla_jax-{gla_jax.__version__}.dist-info/entry_points.txt').decode()
  assert 'gla-jax = gla_jax.cli:main' in entry_points


def test_installed_package_runs_from_any_folder(wheel, tmp_path):
  target, elsewhere = tmp_path / 'site', tmp_path / 'elsewhere'
  elsewhere.mkdir()
  subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target',
                  str(target), str(wheel)], check=True, capture_output=True, timeout=300)
  env = dict(os.environ, PYTHONPATH=str(target), GLA_JAX_HUGE_PAGES='0')
  code = ('import gla_jax; from gla_jax import cli, convert, explain, localize, models; '
          'from gla_jax import class_names; '
          "print(gla_jax.__version__, cli.config_file('demo'), models.ResNeXt3D101.func.__name__,"
          ' explain.explain.__name__, localize.localize.__name__, '
          'convert.torch_to_flax.__name__, class_names.shipped(400)[-1])')
  done = subprocess.run([sys.executable, '-c', code], cwd=elsewhere, env=env,
                        capture_output=True, text=True, timeout=120, check=True)
  version, demo, *names = done.stdout.split()
  assert version == gla_jax.__version__
  assert demo == str(target / 'gla_jax' / 'configs' / 'demo.py')
  assert names == ['ResNeXt3D', 'explain', 'localize', 'torch_to_flax', 'zumba']
  done = subprocess.run([str(target / 'bin' / 'gla-jax'), '--help'], cwd=elsewhere, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  # absl's --help exits with status 1 after printing the usage.
  assert 'gla-jax --config=demo' in done.stdout, done.stderr
  assert '--config' in done.stdout and 'loc_eval' in done.stdout


def test_user_errors_are_the_projects_own_and_os_errors_not_bugs():
  """Which errors `cli.run` prints as one message (the rest keep their traceback)."""
  config = tiny.get_config()
  config.train.learning_rate = -1.0
  with pytest.raises(ValueError) as raised:
    validation.validate(config)   # Raised by the project, on purpose.
  assert cli.is_user_error(raised.value)
  assert cli.is_user_error(bad_data.BadDataError('2 of 10 videos are unreadable'))
  assert cli.is_user_error(FileNotFoundError(2, 'No such file', 'x.avi'))
  assert cli.is_user_error(app.UsageError('--mode=convert needs --torch_checkpoint'))
  with pytest.raises(ValueError) as raised:
    np.zeros(3).reshape(2)   # A bug: raised inside a library.
  assert not cli.is_user_error(raised.value)
  with pytest.raises(KeyError) as raised:
    {}['key']  # pylint: disable=pointless-statement
  assert not cli.is_user_error(raised.value)
  assert cli.error_message(KeyError('config has no "x"')) == 'config has no "x"'
