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

from gla_jax import class_names
from gla_jax import demo
from gla_jax import localization_eval
from gla_jax import validation
from gla_jax import video_explanation
from gla_jax import video_inputs
from gla_jax import weights
from gla_jax.data import storage
from gla_jax.explain import long_video
from gla_jax.models import building
from gla_jax.outputs import comparison_report
from gla_jax.outputs import explanation_files
from gla_jax.outputs import reports
from gla_jax.outputs import video_summary
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


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             checkpoint: Optional[str] = None) -> Dict[str, Any]:
  """`--mode=eval`: evaluates the weights (`weights.for_config`) on `config.eval.split`.

  `checkpoint` (`--checkpoint`) replaces the workdir's weights; the results
  still go to `workdir`.
  """
  validation.validate(config)
  result = evaluate_lib.evaluate(config, workdir, checkpoint=checkpoint)
  _print_outputs(f'Evaluation at step {result["step"]}: ' + _accuracy_line(result), [
      f'results: {evaluate_lib.results_path(workdir, config.eval.split)}'])
  return result


def convert(config: ml_collections.ConfigDict, workdir: str, torch_checkpoint: str,
            drop_head: bool = False, class_names_file: Optional[str] = None) -> Dict[str, Any]:
  """`--mode=convert`: a published PyTorch checkpoint into `<workdir>/converted`.

  The class names stored with the weights are those of `class_names_file`
  (`--class_names`, one per line), else with `drop_head` those of the data
  (the new classifier's), else the shipped list of the file's class count
  (UCF101, HMDB51, Kinetics-400; `gla_jax.class_names`).
  """
  validation.validate(config)
  model = building.create_model(config)
  names = None
  if class_names_file:
    names = class_names.check_count(class_names.read_file(class_names_file),
                                    model.num_classes, f'--class_names={class_names_file}')
  elif drop_head:
    names = class_names.of_data(config.data, model.num_classes)
  directory = storage.join(workdir, weights.CONVERTED_DIR)
  metadata = weights.convert_checkpoint(torch_checkpoint, model, directory, drop_head=drop_head,
                                        class_names=names, config=config)
  logging.info('Converted %s into %s', torch_checkpoint, directory)
  stored = metadata['class_names']
  _print_outputs(f'Converted {torch_checkpoint}:', [
      f'weights: {directory}',
      f'classes: {len(stored)} names ({", ".join(stored[:3])}, ...)' if stored else
      'classes: no names stored (give --class_names=FILE, one name per line)'])
  return metadata


def explain(config: ml_collections.ConfigDict, workdir: str, video: str,
            with_localization: bool = True, checkpoint: Optional[str] = None
            ) -> List[Dict[str, Any]]:
  """`--mode=explain` and `--mode=localize`: each video's maps (and boxes and segments).

  `video` is `--video`: a path, several separated by commas, a glob or a
  folder of videos (`video_inputs.video_paths`). Each video's files go to
  `<workdir>/{localize,explain}/<name>/` (`VideoExplanation.save`); one
  progress bar runs over all clips; a summary of each video is printed, with
  several a table at the end, and `summary.jsonl` (one JSON object per
  video) is written next to the folders. With several videos one that cannot
  be read is reported and skipped; a single one raises.

  Returns:
    The summary records (`VideoExplanation.summary()` with `output`).
  """
  validation.validate(config)
  paths = video_inputs.video_paths(video)
  loaded = video_explanation.load_for_workdir(config, workdir, checkpoint)
  root = video_explanation.output_root(workdir, with_localization)
  estimates = [video_inputs.estimated_frames(path) for path in paths]
  bar = reports.progress(sum(long_video.num_clips(n, config) for n in estimates if n),
                         f'Explaining {len(paths)} video{"s" * (len(paths) > 1)}', unit='clip',
                         enabled=_is_main_process())
  records: List[Dict[str, Any]] = []
  used = set()
  try:
    for path, estimate in zip(paths, estimates):
      try:
        frames = video_inputs.read_video_input(path)
      except (OSError, ValueError) as error:
        if len(paths) == 1:
          raise
        logging.error('Skipping %s: %s', path, error)
        bar.total -= long_video.num_clips(estimate, config) if estimate else 0
        records.append(dict(video=path, error=str(error)))
        _print_outputs(video_summary.title(records[-1], with_localization), [])
        continue
      clips = long_video.num_clips(len(frames.frames), config)
      bar.total += clips - (long_video.num_clips(estimate, config) if estimate else 0)
      bar.refresh()
      result = video_explanation.explain_video(
          frames, model=loaded.model, variables=loaded.variables, config=config,
          class_names=loaded.class_names, with_localization=with_localization, progress=bar)
      name = explanation_files.video_name(path)
      out_dir, copy = storage.join(root, name), 1
      while out_dir in used:            # Two videos of one name in different folders.
        copy += 1
        out_dir = storage.join(root, f'{name}_{copy}')
      used.add(out_dir)
      records.append(dict(result.summary(), output=result.save(out_dir)))
      bar.clear()
      _print_outputs(video_summary.title(records[-1], with_localization),
                     video_summary.lines(records[-1]))
  finally:
    bar.close()
  summary_path = storage.join(root, video_summary.SUMMARY_FILE)
  if _is_main_process():
    video_summary.write_jsonl(summary_path, records)
    if len(paths) > 1:
      _print_outputs(f'Summary of {len(paths)} videos ({summary_path}):',
                     video_summary.table(records))
  return records


def loc_eval(config: ml_collections.ConfigDict, workdir: str,
             checkpoint: Optional[str] = None) -> Dict[str, Any]:
  """`--mode=loc_eval`: every attention method's localization against ground truth.

  `checkpoint` (`--checkpoint`) replaces the workdir's weights.
  """
  validation.validate(config)
  result = localization_eval.run(config, workdir, checkpoint=checkpoint)
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
