"""`--mode=localize` on several videos: one run, a summary per video, a table, summary.jsonl."""
import json
import os
import subprocess
import sys

import cv2
import jax

from gla_jax import models
from gla_jax import weights
from gla_jax.data import synthetic
from gla_jax.data import synthetic_settings
from gla_jax.data import video_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/test_main.py's model and clips: its run's compiles are read back from the cache.
TINY = ['--config=tiny', '--config.model.num_classes=8', '--config.data.crop_size=32',
        '--config.data.num_frames=8', '--config.explain.batch_size=2',
        '--config.localize.video_codec=MJPG']


def test_localize_two_videos_prints_their_answers_and_writes_summary_jsonl(tmp_path):
  model = models.create('tiny', num_classes=8)
  converted = str(tmp_path / 'weights')
  weights.save_variables(converted, models.init_variables(model, jax.random.key(0),
                                                          (1, 8, 32, 32, 3)),
                         {'preset': 'tiny', 'num_classes': 8,
                          'class_names': list(synthetic_settings.CLASS_NAMES)})
  clip = synthetic.generate_video(synthetic_settings.SyntheticConfig(height=32, width=40), 1,
                                  num_frames=12)
  video_io.write_video(str(tmp_path / 'walk.avi'), clip.video, fps=8.0)
  frames = tmp_path / 'jump'                                 # a folder of frames: one video
  frames.mkdir()
  for t, frame in enumerate(clip.video[:9]):
    cv2.imwrite(str(frames / f'image_{t + 1:05d}.png'), frame[..., ::-1])
  workdir = tmp_path / 'work'
  done = subprocess.run(
      [sys.executable, 'main.py', *TINY, f'--workdir={workdir}', '--mode=localize',
       f'--checkpoint={converted}', f'--video={tmp_path / "walk.avi"},{frames}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]

  records = [json.loads(line) for line in open(workdir / 'localize' / 'summary.jsonl')]
  assert [r['video'] for r in records] == [str(tmp_path / 'walk.avi'), str(frames)]
  assert [r['num_frames'] for r in records] == [12, 9] and [r['fps'] for r in records] == [8.0,
                                                                                          None]
  for record, name in zip(records, ('walk', 'jump')):
    assert record['output'] == str(workdir / 'localize' / name)
    assert os.path.isfile(os.path.join(record['output'], 'localization.json'))
    assert record['class_name'] in synthetic_settings.CLASS_NAMES      # the weights' names
    assert [t['class_name'] for t in record['top']][0] == record['class_name']
    assert len(record['top']) == 3 and record['top'][0]['probability'] == record['probability']
    fps = record['fps'] or 25.0                                        # unknown: 25 assumed
    for segment in record['segments']:
      assert segment['start_s'] == round(segment['start_frame'] / fps, 3)
      assert segment['end_s'] == round(segment['end_frame'] / fps, 3)

  out = done.stdout
  first = records[0]
  assert (f'Localization of {tmp_path / "walk.avi"}: {first["class_name"]} '
          f'(p={first["probability"]:.2f})') in out
  assert 'top 3:    ' + ', '.join(f'{t["class_name"]} {t["probability"]:.2f}'
                                  for t in first['top']) in out
  if first['segments']:
    segment = first['segments'][0]
    assert (f'{segment["start_s"]:.2f}-{segment["end_s"]:.2f} s (frames '
            f'{segment["start_frame"]}-{segment["end_frame"] - 1})') in out
  assert 'frame rate unknown: 25 fps assumed' in out                   # the folder of frames
  assert f'outputs:  {workdir / "localize" / "jump"}' in out
  table = out[out.index('Summary of 2 videos'):].splitlines()
  assert str(workdir / 'localize' / 'summary.jsonl') in table[0]
  assert table[1].split()[:3] == ['video', 'class', 'p']
  assert table[2].split()[:3] == ['walk.avi', first['class_name'], f'{first["probability"]:.2f}']
  assert table[3].split()[0] == 'jump'
  assert 'Explaining 2 videos' in done.stderr and '4/4' in done.stderr.replace(' ', '')   # clips
