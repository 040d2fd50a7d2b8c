"""The command-line jobs `main.py` runs: train, evaluate, and the main job.

Each job is one library call (or a short sequence of them) followed by a
summary of where the outputs are, so the command line stays thin and every
step can also be called from Python.

The main job (`--mode=all`, the README's first command) runs the whole story
on the config's data:
  1. train and evaluate (resuming from the workdir's latest checkpoint);
  2. compare every attention method's localization against the ground truth
     on validation clips (`loc_eval`), writing the table and example panels;
  3. for the synthetic source: write one long validation video with a known
     action segment, explain it with sliding clips and localize the action in
     it (`long_video.explain_video_file`), writing the overlay video.
"""
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

from absl import logging
import jax
import ml_collections

from gla_jax.training import checkpoints
from gla_jax.training import evaluate as evaluate_lib
from gla_jax.training import train as train_lib

# The long demo video: clips of the config's length, this many clips long.
DEMO_VIDEO_CLIPS = 4
DEMO_VIDEO_NAME = 'synthetic_long_video'


def _is_main_process() -> bool:
  return jax.process_index() == 0


def _print_outputs(title: str, lines: List[str]) -> None:
  if _is_main_process():
    print(f'\n{title}\n' + '\n'.join(f'  {line}' for line in lines), flush=True)


def _accuracy_line(result: Dict[str, Any]) -> str:
  return (f'clip accuracy {result["clip_accuracy"]:.4f} (top-5 {result["clip_top5"]:.4f}), '
          f'video accuracy {result["video_accuracy"]:.4f} (top-5 {result["video_top5"]:.4f})')


def train(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """`--mode=train`: trains and evaluates in `workdir` (resuming), prints where things are."""
  final = train_lib.train_and_evaluate(config, workdir)
  if final.get('interrupted'):
    _print_outputs(f'Stopped by {final["interrupted"]} at step {final["step"]}; run the same '
                   'command again to resume from:',
                   [os.path.join(workdir, checkpoints.CHECKPOINTS_DIR)])
    # 128 + SIGTERM, the status a shell reports for a terminated process.
    sys.exit(143)
  eval_metrics = {key.split('/', 1)[1]: value for key, value in final.items()
                  if key.startswith('eval/')}
  split = config.eval.split
  _print_outputs(f'Trained to step {final["step"]}: ' + _accuracy_line(eval_metrics), [
      f'checkpoints:   {os.path.join(workdir, checkpoints.CHECKPOINTS_DIR)}',
      f'metrics:       {os.path.join(workdir, "metrics.jsonl")}',
      f'curves:        {os.path.join(workdir, "curves.png")}',
      f'evaluation:    {evaluate_lib.results_path(workdir, split)}',
  ])
  return final


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """`--mode=eval`: evaluates the workdir's weights on `config.eval.split`."""
  result = evaluate_lib.evaluate(config, workdir)
  _print_outputs(f'Evaluation at step {result["step"]}: ' + _accuracy_line(result), [
      f'results: {evaluate_lib.results_path(workdir, config.eval.split)}'])
  return result


def write_demo_video(config: ml_collections.ConfigDict, path: str) -> Dict[str, Any]:
  """A long synthetic validation video with one action segment, as a video file.

  The video is `DEMO_VIDEO_CLIPS` clip lengths long; the action segment is one
  clip length (`config.data.num_frames`) at the training speeds.

  Returns:
    Its ground truth: label, class name, the segment and the number of frames.
  """
  # Imported here: only the synthetic main job needs them.
  from gla_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from gla_jax.data import synthetic
  from gla_jax.data import video_io
  generator = input_pipeline.SyntheticSource(config.data, 'eval').config
  clip_frames = int(config.data.num_frames)
  num_frames = DEMO_VIDEO_CLIPS * clip_frames
  # The action lasts one clip length, as in training: a longer segment makes the
  # generator slow the motion to keep the actor in the frame (a 16-frame
  # move_left in the demo's 32-pixel frames ran at 0.97 px/frame, against the
  # 1.9-3.8 the network learned from, and the demo model called it grow).
  clip = synthetic.generate_video(generator, index=0, num_frames=num_frames, split='val',
                                  segment_frames=(clip_frames, clip_frames))
  video_io.write_video(path, clip.video, fps=25.0, codec='MJPG')
  start, end = (int(v) for v in clip.segment)
  return dict(video=path, label=int(clip.label), class_name=clip.class_name,
              segment=[start, end], num_frames=num_frames)


def localize_demo_video(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Writes the long demo video, localizes the action in it, and compares with its truth."""
  from gla_jax.explain import long_video  # pylint: disable=g-import-not-at-top
  from gla_jax.explain import localize
  os.makedirs(os.path.join(workdir, 'videos'), exist_ok=True)
  truth = write_demo_video(config, os.path.join(workdir, 'videos', DEMO_VIDEO_NAME + '.avi'))
  out_dir = long_video.explain_video_file(config, workdir, truth['video'])
  with open(os.path.join(out_dir, 'localization.json')) as f:
    found = json.load(f)
  segments = [(s['start_frame'], s['end_frame']) for s in found['segments']]
  return dict(truth, output=out_dir, predicted_class=found['video_class']['class_name'],
              predicted_segments=segments,
              temporal_iou=float(localize.temporal_iou(segments, [tuple(truth['segment'])])))


def main_job(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """`--mode=all`: train, evaluate, compare the attention methods' localization, draw."""
  from gla_jax.explain import long_video  # pylint: disable=g-import-not-at-top
  from gla_jax.explain import comparison
  long_video.check_video_settings(config)    # Used after training: refuse bad values before it.
  start = time.perf_counter()
  final = train(config, workdir)
  trained = time.perf_counter()
  comparison.run(config, workdir)     # Writes the table and pictures.
  demo: Optional[Dict[str, Any]] = None
  if config.data.source == 'synthetic' and _is_main_process():
    demo = localize_demo_video(config, workdir)
  elapsed = time.perf_counter() - start
  summary = dict(
      wall_time_s=round(elapsed, 1), train_wall_time_s=round(trained - start, 1),
      step=final['step'],
      **{key: final[key] for key in final if key.startswith(('eval/', 'best/'))},
      localization_table=os.path.join(workdir, comparison.OUTPUT_DIR, comparison.MARKDOWN_FILE),
      long_video=demo)
  if _is_main_process():
    with open(os.path.join(workdir, 'main_job.json'), 'w') as f:
      json.dump(summary, f, indent=1, default=str)
  lines = [f'localization comparison: {summary["localization_table"]}']
  if demo is not None:
    lines.append(
        f'long video ({demo["num_frames"]} frames, {demo["class_name"]} in frames '
        f'{demo["segment"][0]}-{demo["segment"][1] - 1}): predicted {demo["predicted_class"]}, '
        f'segments {demo["predicted_segments"]}, temporal IoU {demo["temporal_iou"]:.2f}')
    lines.append(f'  overlay video, panels, localization.json: {demo["output"]}')
  lines.append(f'summary: {os.path.join(workdir, "main_job.json")}')
  _print_outputs(f'Main job done in {elapsed / 60:.1f} min '
                 f'(training and evaluation {(trained - start) / 60:.1f} min).', lines)
  logging.info('Main job summary: %s', summary)
  return summary
