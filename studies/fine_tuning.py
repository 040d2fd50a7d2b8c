r"""Pretrain, then fine-tune on a small natural-image set: scratch vs fine-tuned, plain vs gated.

  python -m studies.fine_tuning --workdir=runs/fine_tuning --pretrained=runs/demo --seeds=5
  (--arms=plain_scratch,gated_fine_tuned runs some of the four arms)

The paper's setting (a backbone pretrained on a large set, fine-tuned on a
small one) end to end on synthetic data. Pretraining is a plain model of
`configs/demo.py` on the 'demo' difficulty: `--pretrained` names that run's
workdir (`main.py --config=configs/demo.py --workdir=runs/demo`), else it is
trained in `<workdir>/pretrain`. The target is the 'natural' difficulty
(photographs filmed by a moving camera, textured actor and moving
distractors, `synthetic_settings.SyntheticConfig.natural`) with a small train
split (`--train_size`, 320 videos) and 256 validation videos, the demo's
recipe otherwise. Per seed, four arms, each in its own sub-folder (an
interrupted study resumes from each run's latest checkpoint):

  plain_scratch     plain model, random initialisation;
  plain_fine_tuned  plain model from the pretrained checkpoint;
  gated_scratch     gated model, random initialisation;
  gated_fine_tuned  gated model: the pretrained plain backbone, fresh gates.

Both fine-tuned arms start with a fresh classifier (`train.drop_head=True`):
the gated model's classifier reads the gates' features besides the global one,
so the plain one cannot be kept there, and the plain arm drops its own too so
that the two fine-tuned arms differ only by the gates. The seed sets the random
initialisation (the classifier and gates of the fine-tuned arms) and the data order; the data
are the same for every run. `<workdir>/fine_tuning.md` and `.json` hold the
validation clip accuracy per arm (mean ± std over the seeds), fine-tuned -
scratch (plain, gated) and gated - plain (fine-tuned, scratch) with Welch's
t-test and the 95 % confidence interval of the difference
(`studies.statistics.welch`), and for seed 0 of each arm the localization of
Grad-CAM and of the best global-local method on validation clips
(`localization_eval.run`: loc acc, mean IoU, pointing game).

Measured on a 2-core CPU shared with other jobs (load about 8): a median
training step of 0.72 s (plain) and 0.98 s (gated) at batch 16, so a run of
the default 300 steps takes about 4-5 minutes there; the demo's figures on an
idle machine (about 0.35 s and 0.55 s per step) give about 2 and 3 minutes,
and the default study of 4 arms x 5 seeds about 50 minutes plus the
pretraining when --pretrained is not given.
"""
import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import ml_collections
import numpy as np

from configs import demo
from gla_jax.outputs import comparison_report
from gla_jax.training import checkpoints
from studies import gated_vs_plain
from studies import statistics

RESULT_NAME = 'fine_tuning'
PRETRAIN_DIFFICULTY = 'demo'
TARGET_DIFFICULTY = 'natural'
# (model, initialisation) of each arm, in the tables' order.
ARMS = (('plain', 'scratch'), ('plain', 'fine_tuned'), ('gated', 'scratch'),
        ('gated', 'fine_tuned'))
DEFAULT_STEPS = 300
DEFAULT_TRAIN_SIZE = 320
DEFAULT_VAL_SIZE = 256
# The localization summary's keys reported per method.
LOCALIZATION_KEYS = ('loc_acc@0.5', 'mean_iou', 'pointing_game')


def arm_name(model: str, init: str) -> str:
  return f'{model}_{init}'


def pretrain_config(base: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  """The plain model on the 'demo' difficulty, the demo's recipe (`steps` 0: its num_steps)."""
  return gated_vs_plain.run_config(base, PRETRAIN_DIFFICULTY, False, 0, steps)


def arm_config(base: ml_collections.ConfigDict, model: str, init: str, seed: int, steps: int,
               train_size: int, val_size: int,
               pretrained: Optional[str]) -> ml_collections.ConfigDict:
  """One run on the small 'natural' set; `pretrained` (a workdir) for the fine-tuned arms,
  which keep its backbone and start a fresh classifier (and fresh gates)."""
  config = gated_vs_plain.run_config(base, TARGET_DIFFICULTY, model == 'gated', seed, steps)
  config.data.synthetic.train_size = train_size
  config.data.synthetic.val_size = val_size
  if init == 'fine_tuned':
    if not pretrained:
      raise ValueError('A fine-tuned arm needs the pretrained workdir; pass pretrained=PATH.')
    config.train.init_checkpoint = os.path.abspath(pretrained)
    config.train.drop_head = True   # The module docstring says why.
  return config


def summarize(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """One row per arm: validation clip accuracy mean and sample std over the seeds."""
  rows = []
  for model, init in ARMS:
    group = [r for r in runs if r['model'] == model and r['init'] == init]
    if not group:
      continue
    accuracies = [r['clip_accuracy'] for r in group]
    mean, std = statistics.mean_std(accuracies)
    rows.append(dict(arm=arm_name(model, init), model=model, init=init,
                     seeds=[r['seed'] for r in group], clip_accuracy_mean=mean,
                     clip_accuracy_std=std, clip_accuracies=accuracies,
                     parameters=group[0]['parameters'],
                     step_time_s=float(np.median([r['step_time_s'] for r in group]))))
  return rows


# (a, b) arms of each reported difference a - b.
COMPARISONS = ((('plain', 'fine_tuned'), ('plain', 'scratch')),
               (('gated', 'fine_tuned'), ('gated', 'scratch')),
               (('gated', 'fine_tuned'), ('plain', 'fine_tuned')),
               (('gated', 'scratch'), ('plain', 'scratch')))


def compare(rows: List[Dict[str, Any]], confidence: float = 0.95) -> List[Dict[str, Any]]:
  """Each difference of COMPARISONS whose two arms have >= 2 seeds: Welch's test of a - b.

  `statistics.welch`'s fields (n_a, n_b: the seeds of a and b), 'a', 'b' (arm
  names) and 'confidence'.
  """
  accuracies = {row['arm']: row['clip_accuracies'] for row in rows}
  differences = []
  for a, b in COMPARISONS:
    a_name, b_name = arm_name(*a), arm_name(*b)
    if len(accuracies.get(a_name, ())) >= 2 and len(accuracies.get(b_name, ())) >= 2:
      differences.append(dict(statistics.welch(accuracies[a_name], accuracies[b_name],
                                               confidence),
                              a=a_name, b=b_name, confidence=confidence))
  return differences


def localization_summary(workdir: str) -> Dict[str, Any]:
  """Grad-CAM's (the baseline) and the best global-local method's LOCALIZATION_KEYS from
  `<workdir>/loc_eval/comparison.json`."""
  with open(os.path.join(workdir, comparison_report.OUTPUT_DIR,
                         comparison_report.JSON_FILE)) as f:
    result = json.load(f)
  summary = {}
  for role in ('baseline', 'best_global_local'):
    method = result[role]
    scores = result['methods'][method]['summary']
    summary[role] = dict(method=method, **{
        key: float('nan') if scores.get(key) is None else float(scores[key])
        for key in LOCALIZATION_KEYS})
  summary['num_clips'] = int(result['num_clips'])
  return summary


def markdown(rows: List[Dict[str, Any]], differences: List[Dict[str, Any]],
             localization: Dict[str, Dict[str, Any]], command: str, pretrained: str,
             settings: Dict[str, Any]) -> str:
  """The accuracy table, the differences with Welch's test, the seed-0 localization table."""
  number = statistics.format_number
  lines = [f'Command: `{command}`', '',
           f'Pretrained plain backbone: `{pretrained}` ({PRETRAIN_DIFFICULTY} difficulty). '
           f'Target: {TARGET_DIFFICULTY} difficulty, {settings["train_size"]} training and '
           f'{settings["val_size"]} validation videos, {settings["steps"]} steps per run.', '',
           '| arm | validation clip accuracy, mean ± std (seeds) | parameters | step time (s) |',
           '| --- | --- | --- | --- |']
  for row in rows:
    lines.append(f'| {row["arm"]} | {gated_vs_plain.accuracy_cells(row)} |')
  if differences:
    lines += ['', 'Differences of validation clip accuracy, Welch\'s unequal-variance t-test '
              '(two-sided):', '',
              '| a - b | difference | confidence interval | Welch\'s t | dof | p | seeds (a, b) |',
              '| --- | --- | --- | --- | --- | --- | --- |']
    for d in differences:
      lines.append(f'| {d["a"]} - {d["b"]} | {statistics.welch_cells(d)} |')
  if localization:
    lines += ['', 'Localization on validation clips, seed 0 of each arm (`--mode=loc_eval`; '
              'loc acc: frames with IoU >= 0.5):', '',
              '| arm | method | loc acc | mean IoU | pointing game | clips |',
              '| --- | --- | --- | --- | --- | --- |']
    for arm, summary in localization.items():
      for role in ('baseline', 'best_global_local'):
        entry = summary[role]
        lines.append(f'| {arm} | `{entry["method"]}` | {number(entry["loc_acc@0.5"])} | '
                     f'{number(entry["mean_iou"])} | {number(entry["pointing_game"])} | '
                     f'{summary["num_clips"]} |')
  return '\n'.join(lines) + '\n'


def _json_safe(value: Any) -> Any:
  """NaN and infinities as null (strict JSON)."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--pretrained', default='',
                      help='workdir of a plain demo run (configs/demo.py); '
                           "'' = train one in <workdir>/pretrain")
  parser.add_argument('--pretrain_steps', type=int, default=0,
                      help='steps of that pretraining; 0 = the demo config\'s num_steps')
  parser.add_argument('--seeds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=DEFAULT_STEPS,
                      help='training steps of every arm\'s run')
  parser.add_argument('--train_size', type=int, default=DEFAULT_TRAIN_SIZE,
                      help='training videos of the natural difficulty')
  parser.add_argument('--val_size', type=int, default=DEFAULT_VAL_SIZE,
                      help='validation videos of the natural difficulty')
  all_arms = [arm_name(model, init) for model, init in ARMS]
  parser.add_argument('--arms', default=','.join(all_arms),
                      help='comma-separated arms to run (default: all four)')
  gated_vs_plain.add_localization_arguments(
      parser, 'localization of seed 0 of each arm (<run>/loc_eval/comparison.md)')
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error('--seeds must be >= 1.')
  for name in ('steps', 'train_size', 'val_size'):
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be >= 1.')
  arms = args.arms.split(',')
  if set(arms) - set(all_arms) or not arms:
    parser.error(f'--arms={args.arms}: choose from {",".join(all_arms)}.')
  if args.pretrain_steps < 0:
    parser.error('--pretrain_steps must be >= 0 (0 = the demo config\'s num_steps).')
  if args.pretrained and not checkpoints.has_training_checkpoints(args.pretrained):
    parser.error(f'--pretrained={args.pretrained}: no training checkpoint there; give the '
                 'workdir of a plain configs/demo.py run, or leave it out to pretrain here.')
  os.makedirs(args.workdir, exist_ok=True)
  base = demo.get_config()
  pretrained = args.pretrained
  if not pretrained:
    pretrained = os.path.join(args.workdir, 'pretrain')
    print(f'pretraining -> {pretrained}', flush=True)
    gated_vs_plain.run_once(pretrain_config(base, args.pretrain_steps), pretrained)

  runs, localization = [], {}
  for model, init in ARMS:
    if arm_name(model, init) not in arms:
      continue
    for seed in range(args.seeds):
      config = arm_config(base, model, init, seed, args.steps, args.train_size, args.val_size,
                          pretrained)
      workdir = os.path.join(args.workdir, f'{arm_name(model, init)}_seed{seed}')
      print(f'{arm_name(model, init)} seed {seed} -> {workdir}', flush=True)
      runs.append(dict(gated_vs_plain.run_once(config, workdir), model=model, init=init,
                       arm=arm_name(model, init), seed=seed,
                       parameters=gated_vs_plain.count_parameters(config)))
      if seed == 0 and args.loc_eval:
        gated_vs_plain.evaluate_localization(gated_vs_plain.localization_config(
            config, args.loc_clips, args.loc_deletion_steps), workdir)
        localization[arm_name(model, init)] = localization_summary(workdir)
  rows = summarize(runs)
  differences = compare(rows)
  command = 'python -m studies.fine_tuning ' + ' '.join(argv if argv is not None
                                                       else sys.argv[1:])
  settings = dict(steps=args.steps, train_size=args.train_size, val_size=args.val_size,
                  pretrain_steps=args.pretrain_steps, seeds=args.seeds)
  table = markdown(rows, differences, localization, command, pretrained, settings)
  with open(os.path.join(args.workdir, RESULT_NAME + '.md'), 'w') as f:
    f.write(table)
  result = dict(command=command, pretrained=os.path.abspath(pretrained), settings=settings,
                rows=rows, differences=differences, localization=localization, runs=runs)
  with open(os.path.join(args.workdir, RESULT_NAME + '.json'), 'w') as f:
    json.dump(_json_safe(result), f, indent=1)
  print(table)
  return result


if __name__ == '__main__':
  main()
