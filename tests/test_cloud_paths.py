"""Workdirs, datasets and outputs on URIs (gla_jax.data.storage): gs:// kept, written, read back.

The end-to-end test runs tests/fake_gcs_worker.py against a fake GCS server on the
loopback, without TensorFlow (as requirements.txt installs); the others need no server.
"""
import json
import os
import subprocess
import sys

import pytest

from configs import tiny
from gla_jax import validation
from gla_jax.data import storage
from gla_jax.outputs import reports
from gla_jax.training import checkpoints
from gla_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_uri_stays_a_uri_and_a_local_path_becomes_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert storage.absolute('gs://bucket/runs/x') == 'gs://bucket/runs/x'
  assert storage.absolute('runs/x') == os.path.join(str(tmp_path), 'runs', 'x')
  assert storage.join('gs://bucket/runs', 'checkpoints', '3') == 'gs://bucket/runs/checkpoints/3'
  assert storage.join('runs/x', 'a') == os.path.join('runs', 'x', 'a')   # Stays relative.
  assert storage.is_absolute('s3://b/k') and not storage.is_absolute('runs/x')
  assert storage.scheme('GS://b/x') == 'gs' and storage.scheme('/data/x') == ''
  assert storage.absolute('GS://b/x') == 'gs://b/x'


def test_a_uri_nothing_reaches_is_refused_with_the_schemes_that_work():
  with pytest.raises(ValueError, match=r"ftp://.*gs://, s3://, az://, hf://"):
    storage.absolute('ftp://host/runs')
  config = tiny.get_config()
  config.unlock()
  config.data.update(source='folder', root='ftp://host/videos')
  with pytest.raises(ValueError, match=r'config\.data\.root: .*ftp://'):
    validation.validate(config)
  config = tiny.get_config()
  config.train.init_checkpoint = 'memory://weights'
  with pytest.raises(ValueError, match=r'config\.train\.init_checkpoint: .*memory://'):
    validation.validate(config)


def test_train_and_evaluate_checkpoints_into_the_uri_workdir(monkeypatch):
  # Before: os.path.abspath made it <cwd>/gs:/bucket/runs/x/checkpoints.
  opened = []

  class Opened(Exception):
    pass

  def manager(directory, **kwargs):
    del kwargs
    opened.append(directory)
    raise Opened()

  monkeypatch.setattr(checkpoints, 'TrainCheckpointManager', manager)
  with pytest.raises(Opened):
    loop.train_and_evaluate(tiny.get_config(), 'gs://bucket/runs/x')
  assert opened == ['gs://bucket/runs/x/checkpoints']


def test_local_text_files_are_replaced_whole_and_appended(tmp_path):
  target = tmp_path / 'new' / 'metrics.jsonl'
  storage.write_text(target, 'a\n')              # The folder is created.
  storage.append_text(target, 'b\n')
  storage.write_text(tmp_path / 'new' / 'eval.json', '{}')
  assert target.read_text() == 'a\nb\n'
  assert sorted(os.listdir(tmp_path / 'new')) == ['eval.json', 'metrics.jsonl']   # No .tmp.
  with storage.local_file_for_writing(str(target)) as local, storage.local_copy(
      str(target)) as copy:
    assert local == copy == str(target)           # Local paths are used as they are.


def test_tensorboard_is_skipped_where_no_writer_reaches(caplog):
  # pylint: disable-next=protected-access
  board = reports._TensorBoard('az://container/runs/x/tensorboard')
  assert not board.active
  assert 'local folders, gs:// and s3://' in caplog.text


def test_a_run_on_fake_gcs_writes_and_reads_everything_there(tmp_path):
  pytest.importorskip('gcsfs', reason='gcsfs (requirements-test.txt) reaches the fake server')
  pytest.importorskip('gcp_storage_emulator', reason='the fake GCS server (requirements-test.txt)')
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  report_path = tmp_path / 'report.json'
  result = subprocess.run(
      [sys.executable, '-m', 'tests.fake_gcs_worker', str(report_path), str(tmp_path)],
      cwd=cwd, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-6000:]
  report = json.loads(report_path.read_text())
  gs = 'gs://bucket/runs/tiny'
  assert not report['tensorflow_found']           # epath went through fsspec (gcsfs).
  assert report['local_litter'] == [] and os.listdir(cwd) == []   # No <cwd>/gs:/...
  assert report['metrics_steps'] == [1, 2]        # Lines after the resumed step 2 dropped.
  assert report['curves_png'] == b'\x89PNG\r\n\x1a\n'.hex()
  assert report['eval']['path'] == f'{gs}/eval_eval.json'
  assert report['eval']['record'] == {'clip_accuracy': 0.5, 'confusion': [[1.0, 0.0], [0.0, 1.0]],
                                      'split': 'eval', 'class_names': ['a', 'b'], 'step': 2}
  assert [report[f'checkpoints_{when}'] for when in
          ('before', 'unfinished', 'complete', 'removed')] == [False, False, True, False]
  assert report['manager_directory'] == f'{gs}/checkpoints'
  assert report['weights'] == {'kind': 'converted', 'path': str(tmp_path / 'converted')}
  assert report['folder']['gs'] == report['folder']['local']   # Same classes, videos, frames.
  assert report['folder']['gs']['paths'] == [
      'move_left/move_left_000000.avi', 'move_right/move_right_000001.avi',
      'move_up/move_up_000002.avi']
  demo = report['demo']
  assert demo['video'] == f'{gs}/videos/synthetic_long_video.avi' == demo['clips_video']
  assert demo['output'] == f'{gs}/localize/synthetic_long_video'
  config = tiny.get_config()
  panels = [name for name in demo['files'] if name.startswith('panel_')]
  assert len(panels) == 4 and 'panel_0.png' in panels     # max_panels clips, the first kept.
  assert sorted(set(demo['files']) - set(panels)) == [
      'attention.npy', 'clips.json', 'layers', 'localization.json', 'overlay.gif', 'overlay.mp4']
  assert demo['layers'] == ['conv1.npy', 'layer1.npy', 'layer2.npy', 'layer3.npy', 'layer4.npy']
  assert demo['attention_shape'] == [demo['num_frames'], config.data.crop_size,
                                     config.data.crop_size]
  assert demo['gif'] == 'GIF89a'
  assert report['listing'] == ['curves.png', 'eval_eval.json', 'localize', 'metrics.jsonl',
                               'videos']


def test_the_command_refuses_a_workdir_uri_nothing_reaches(tmp_path):
  done = subprocess.run([sys.executable, os.path.join(REPO, 'main.py'), '--config=tiny',
                         '--workdir=ftp://host/runs', '--mode=train'], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, GLA_JAX_HUGE_PAGES='0'), check=False)
  assert done.returncode != 0
  assert "--workdir: 'ftp://host/runs': no file system is reached by ftp://" in done.stderr
  assert 'Traceback' not in done.stderr and os.listdir(tmp_path) == []
