"""One function per mode of the command line; each validates the whole config first.

Each job is one library call (or a short sequence of them) followed by a
summary of where the outputs are, so the command line stays thin and every
step can also be called from Python. The main job (`--mode=all`, the README's
first command) trains and evaluates, compares every attention method's
localization against the ground truth, and on synthetic data localizes the
action in a long video (`gla_jax.demo`).
"""
import json
import sys
import time
from typing import Any, Dict, List, Optional

from absl import logging
import jax
import ml_collections

from gla_jax import demo
from gla_jax import localization_eval
from gla_jax import validation
from gla_jax import video_explanation
from gla_jax import weights
from gla_jax.data import storage
from gla_jax.models import building
from gla_jax.outputs import comparison_report
from gla_jax.training import checkpoints
from gla_jax.training import evaluate as evaluate_lib
from gla_jax.training import loop as train_loop


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
  validation.validate(config)
  final = train_loop.train_and_evaluate(config, workdir)
  if final.get('interrupted'):
    _print_outputs(f'Stopped by {final["interrupted"]} at step {final["step"]}; run the same '
                   'command again to resume from:',
                   [storage.join(workdir, checkpoints.CHECKPOINTS_DIR)])
    # 128 + SIGTERM, the status a shell reports for a terminated process.
    sys.exit(143)
  eval_metrics = {key.split('/', 1)[1]: value for key, value in final.items()
                  if key.startswith('eval/')}
  split = config.eval.split
  _print_outputs(f'Trained to step {final["step"]}: ' + _accuracy_line(eval_metrics), [
      f'checkpoints:   {storage.join(workdir, checkpoints.CHECKPOINTS_DIR)}',
      f'metrics:       {storage.join(workdir, "metrics.jsonl")}',
      f'curves:        {storage.join(workdir, "curves.png")}',
      f'evaluation:    {evaluate_lib.results_path(workdir, split)}',
  ])
  return final


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """`--mode=eval`: evaluates the weights (`weights.for_config`) on `config.eval.split`."""
  validation.validate(config)
  result = evaluate_lib.evaluate(config, workdir)
  _print_outputs(f'Evaluation at step {result["step"]}: ' + _accuracy_line(result), [
      f'results: {evaluate_lib.results_path(workdir, config.eval.split)}'])
  return result


def convert(config: ml_collections.ConfigDict, workdir: str, torch_checkpoint: str,
            drop_head: bool = False) -> Dict[str, Any]:
  """`--mode=convert`: a published PyTorch checkpoint into `<workdir>/converted`."""
  validation.validate(config)
  directory = storage.join(workdir, weights.CONVERTED_DIR)
  metadata = weights.convert_checkpoint(torch_checkpoint, building.create_model(config),
                                        directory, drop_head=drop_head)
  logging.info('Converted %s into %s', torch_checkpoint, directory)
  _print_outputs(f'Converted {torch_checkpoint}:', [f'weights: {directory}'])
  return metadata


def explain(config: ml_collections.ConfigDict, workdir: str, video: str,
            with_localization: bool = True) -> str:
  """`--mode=explain` and `--mode=localize`: a video file's maps (and boxes and segments)."""
  validation.validate(config)
  out_dir = video_explanation.explain_video_file(config, workdir, video,
                                                 with_localization=with_localization)
  _print_outputs(f'{"Localization" if with_localization else "Explanations"} of {video}:',
                 [f'outputs: {out_dir}'])
  return out_dir


def loc_eval(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """`--mode=loc_eval`: every attention method's localization against ground truth."""
  validation.validate(config)
  result = localization_eval.run(config, workdir)
  _print_outputs('Localization comparison:', [f'table: {result["files"]["markdown"]}'])
  return result


def main_job(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """`--mode=all`: train, evaluate, compare the attention methods' localization, draw."""
  validation.validate(config)   # Every section, so nothing fails after training.
  start = time.perf_counter()
  final = train(config, workdir)
  trained = time.perf_counter()
  localization_eval.run(config, workdir)     # Writes the table and pictures.
  long_video_result: Optional[Dict[str, Any]] = None
  if config.data.source == 'synthetic' and _is_main_process():
    long_video_result = demo.localize_demo_video(config, workdir)
  elapsed = time.perf_counter() - start
  summary = dict(
      wall_time_s=round(elapsed, 1), train_wall_time_s=round(trained - start, 1),
      step=final['step'],
      **{key: final[key] for key in final if key.startswith(('eval/', 'best/'))},
      localization_table=storage.join(workdir, comparison_report.OUTPUT_DIR,
                                      comparison_report.MARKDOWN_FILE),
      long_video=long_video_result)
  if _is_main_process():
    storage.write_text(storage.join(workdir, 'main_job.json'),
                       json.dumps(summary, indent=1, default=str))
  lines = [f'localization comparison: {summary["localization_table"]}']
  if long_video_result is not None:
    found = long_video_result
    lines.append(
        f'long video ({found["num_frames"]} frames, {found["class_name"]} in frames '
        f'{found["segment"][0]}-{found["segment"][1] - 1}): predicted {found["predicted_class"]}, '
        f'segments {found["predicted_segments"]}, temporal IoU {found["temporal_iou"]:.2f}')
    lines.append(f'  overlay video, panels, localization.json: {found["output"]}')
  lines.append(f'summary: {storage.join(workdir, "main_job.json")}')
  _print_outputs(f'Main job done in {elapsed / 60:.1f} min '
                 f'(training and evaluation {(trained - start) / 60:.1f} min).', lines)
  logging.info('Main job summary: %s', summary)
  return summary
