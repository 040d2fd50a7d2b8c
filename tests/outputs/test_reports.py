"""The training reporter: metrics.jsonl, curves, progress lines, TensorBoard events."""
import importlib.util
import os

import cv2
import numpy as np
import pytest

from gla_jax.outputs import reports
from tests.outputs import events


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
  assert picture.shape == (reports.CURVE_SIZE[1], reports.CURVE_SIZE[0], 3)
  assert picture.std() > 10
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


def test_curves_png_draws_each_panel_with_matplotlib(tmp_path):
  records = [{'step': s, 'train/loss': 3.0 / s, 'train/accuracy': min(1.0, s / 40),
              'train/learning_rate': 0.1 * (1 - s / 50)} for s in range(1, 51)]
  records.append({'step': 50, 'eval/clip_accuracy': 0.6, 'eval/video_accuracy': 0.8,
                  'eval/loss': 1.0})
  path = reports.write_curves(records, str(tmp_path / 'curves.png'))
  picture = cv2.imread(path)[..., ::-1]
  width, height = reports.CURVE_SIZE
  assert picture.shape == (height, width, 3)
  # Each third of the picture (a panel) has the first curve's colour (matplotlib's C0).
  blue = np.all(np.abs(picture.astype(int) - (31, 119, 180)) < 40, axis=-1)
  for panel in np.array_split(blue, 3, axis=1):
    assert panel.sum() > 100
  # The second curve (C1, orange) is drawn in the loss and accuracy panels, not the last.
  orange = np.all(np.abs(picture.astype(int) - (255, 127, 14)) < 40, axis=-1)
  assert [int(part.sum() > 20) for part in np.array_split(orange, 3, axis=1)] == [1, 1, 0]


def test_tensorboard_images_and_a_warning_without_a_writer(tmp_path, monkeypatch, caplog):
  pytest.importorskip('tensorboardX')
  image = np.zeros((20, 30, 3), np.uint8)
  image[:, :10, 0] = 255
  assert reports.write_images(str(tmp_path), {'loc_eval/clip_0': image})
  assert events.images(str(tmp_path / reports.TENSORBOARD_DIR)) == {'loc_eval/clip_0': (20, 30)}
  with pytest.raises(ValueError, match='uint8'):
    reports.write_images(str(tmp_path), {'x': image.astype(np.float32)})
  # No writer library installed: a warning saying what to install, and no events.
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *args: None)
  with caplog.at_level('WARNING'):
    assert not reports.write_images(str(tmp_path / 'other'), {'x': image})
  assert 'tensorboardX is not installed' in caplog.text
  assert not (tmp_path / 'other').exists()
