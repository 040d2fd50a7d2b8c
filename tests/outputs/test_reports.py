"""The training reporter: metrics.jsonl, curves, progress lines, TensorBoard events."""
import os

import cv2
import pytest

from gla_jax.outputs import reports


def test_reporter_files(tmp_path):
  reporter = reports.Reporter(str(tmp_path), total_steps=4, clips_per_step=8,
                              tensorboard=False)
  for step in range(1, 5):
    reporter.tick(step)
    reporter.write(step, {'train/loss': 2.0 / step, 'train/accuracy': step / 4,
                          'train/learning_rate': 0.1})
  reporter.write(4, {'eval/clip_accuracy': 0.5, 'eval/video_accuracy': 0.75, 'eval/loss': 1.0})
  reporter.close()
  records = reports.read_metrics(str(tmp_path))
  assert [r['step'] for r in records] == [1, 2, 3, 4, 4]
  assert records[-1]['eval/video_accuracy'] == 0.75
  picture = cv2.imread(str(tmp_path / reports.CURVES_FILE))
  assert picture.shape == (270, 3 * 360, 3) and picture.std() > 10
  # A run resumed at step 2 drops the lines the interrupted run wrote after it.
  reports.Reporter(str(tmp_path), total_steps=4, start_step=2, tensorboard=False).close()
  assert [r['step'] for r in reports.read_metrics(str(tmp_path))] == [1, 2]


def test_metric_lines_do_not_break_the_progress_bar(tmp_path, capsys):
  reporter = reports.Reporter(str(tmp_path), total_steps=4, clips_per_step=8,
                              tensorboard=False)
  for step in range(1, 5):
    reporter.tick(step)
    reporter.write(step, {'train/loss': 2.0 / step})
  reporter.close()
  lines = [line.split('\r')[-1] for line in capsys.readouterr().err.split('\n')]
  # Each metric line is whole, on its own line, not spliced into a bar refresh.
  assert [line for line in lines if 'train/loss' in line] == [
      f'step {step}: train/loss {2.0 / step:.5g}' for step in range(1, 5)]


def test_tensorboard_events(tmp_path):
  pytest.importorskip('tensorboardX')
  reporter = reports.Reporter(str(tmp_path), total_steps=1, tensorboard=True)
  reporter.write(1, {'train/loss': 1.5})
  reporter.close()
  events = os.listdir(tmp_path / reports.TENSORBOARD_DIR)
  assert any(name.startswith('events.out.tfevents') for name in events)
