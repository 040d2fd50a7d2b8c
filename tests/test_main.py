"""The command line: convert a published-layout checkpoint, then explain and localize a video.

Its usage errors (no --video, no weights, misspelt keys) are tested in one process by
tests/test_reliability.py.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gla_jax.data import synthetic
from gla_jax.data import synthetic_settings
from gla_jax.data import video_io

torch_resnext = pytest.importorskip('tests.torch_resnext')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config=tiny',   # a shipped config by name
        '--config.model.preset=tiny',
        '--config.model.num_classes=8', '--config.data.crop_size=32',
        '--config.data.num_frames=8', '--config.explain.batch_size=2']


def _main(*args):
  return subprocess.run([sys.executable, 'main.py', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)


def test_convert_then_explain_a_video_file(tmp_path):
  net = torch_resnext.create('tiny', num_classes=8)
  torch_resnext.randomize_(net, seed=1)
  torch_resnext.save_published_checkpoint(net, tmp_path / 'tiny.pth', arch='resnext-tiny')
  # 21 frames of 48 x 64: not a multiple of the clip length, not square.
  clip = synthetic.generate_video(synthetic_settings.SyntheticConfig(height=48, width=64), 0,
                                  num_frames=21)
  video_io.write_video(str(tmp_path / 'walk.avi'), clip.video)
  workdir = str(tmp_path / 'work')

  done = _main(*TINY, f'--workdir={workdir}', '--mode=convert',
               f'--torch_checkpoint={tmp_path / "tiny.pth"}')
  assert done.returncode == 0, done.stderr[-3000:]
  assert os.path.isdir(os.path.join(workdir, 'converted'))

  done = _main(*TINY, f'--workdir={workdir}', '--mode=explain', f'--video={tmp_path / "walk.avi"}')
  assert done.returncode == 0, done.stderr[-3000:]
  out = os.path.join(workdir, 'explain', 'walk')
  attention = np.load(os.path.join(out, 'attention.npy'))
  assert attention.shape == (21, 32, 32)
  assert 0 <= attention.min() and attention.max() <= 1
  assert np.load(os.path.join(out, 'layers', 'layer2.npy')).shape == (21, 32, 32)
  info = json.load(open(os.path.join(out, 'clips.json')))
  # 8-frame clips every 4 frames, the last one ending at the last frame.
  assert [c['start_frame'] for c in info['clips']] == [0, 4, 8, 12, 13]
  assert os.path.getsize(os.path.join(out, 'panel_0.png')) > 1000
  assert not os.path.exists(os.path.join(out, 'localization.json'))

  done = _main(*TINY, f'--workdir={workdir}', '--mode=localize',
               f'--video={tmp_path / "walk.avi"}', '--config.localize.video_codec=MJPG')
  assert done.returncode == 0, done.stderr[-3000:]
  out = os.path.join(workdir, 'localize', 'walk')
  assert len(json.load(open(os.path.join(out, 'localization.json')))['frames']) == 21
  assert video_io.read_video(os.path.join(out, 'overlay.avi')).shape == (21, 48, 64, 3)

