r"""Plain versus gated backbone: the same recipe and seeds, Welch's test of the difference.

  python -m studies.gated_vs_plain --workdir=runs/gated_vs_plain

Trains `configs/demo.py` once per (difficulty, plain | gated, seed), each in
its own sub-folder of the workdir (so an interrupted study resumes from each
run's latest checkpoint), and writes `<workdir>/gated_vs_plain.md` and `.json`:
validation clip accuracy (mean and sample std over the seeds), parameters, the
median training step time, and per difficulty the gated - plain difference
with its 95 % confidence interval, Welch's t and p (`studies.statistics`).
With --loc_eval (default) the gated model of seed 0 also gets the localization
comparison (`--mode=loc_eval`, 32 clips, attention gates among the methods)
in its folder, linked from the table. The seed sets the initialisation and the
data order (`train.seed`); the data themselves are the same for every run.

Default: 5 seeds at 'demo' for 400 steps, where the plain model is between
chance and saturation (0.685 +- 0.173 over seeds 0-4, gated 0.701 +- 0.083;
0.902 at 600 steps; 'demo_medium' at 600 steps 0.383; docs/results.md section
3). A plain step takes 0.24-0.3 s and a gated one 0.38-0.5 s alone on a 2-core
CPU: the 10 runs and the localization table 27-30 min.
"""
import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

import jax
import ml_collections
import numpy as np

from configs import demo
from gla_jax import localization_eval
from gla_jax.models import building
from gla_jax.models import convert
from gla_jax.outputs import comparison_report
from gla_jax.outputs import reports
from gla_jax.training import loop
from studies import statistics

RESULT_NAME = 'gated_vs_plain'
DIFFICULTIES = ('demo', 'demo_medium', 'demo_hard')
# The default setting, where the plain model ends between chance and saturation (module docstring).
DEFAULT_DIFFICULTY = 'demo'
DEFAULT_STEPS = 400
DEFAULT_SEEDS = 5


def run_config(base: ml_collections.ConfigDict, difficulty: str, gated: bool, seed: int,
               steps: int) -> ml_collections.ConfigDict:
  """`base` with the difficulty, the gates and the seed of one run."""
  config = ml_collections.ConfigDict(base.to_dict())
  config.data.synthetic.difficulty = difficulty
  config.model.gated = gated
  config.train.seed = seed
  if steps:
    config.train.num_steps = steps
    config.train.warmup_steps = min(int(config.train.warmup_steps), steps // 2)
  # One evaluation at the end; checkpoints only there too.
  config.train.eval_every = 0
  config.train.checkpoint_every = 0
  config.lock()
  return config


def count_parameters(config: ml_collections.ConfigDict) -> int:
  params = convert.abstract_variables(building.create_model(config))['params']
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def run_once(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains (or resumes) in `workdir`; returns accuracy and the median step time.

  A run stopped by a signal ends the study with status 143 (as `main.py`
  does); the same command resumes it.
  """
  final = loop.train_and_evaluate(config, workdir)
  if final.get('interrupted'):
    print(f'Stopped by {final["interrupted"]} at step {final["step"]} of {workdir}; run the same '
          'command again to resume the study.', flush=True)
    sys.exit(143)
  rates = [record['train/steps_per_second'] for record in reports.read_metrics(workdir)
           if 'train/steps_per_second' in record]
  return dict(clip_accuracy=float(final['eval/clip_accuracy']), step=int(final['step']),
              step_time_s=1.0 / float(np.median(rates)) if rates else float('nan'))


def summarize(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """One row per (difficulty, model): accuracy mean and sample std over the seeds."""
  rows = []
  for difficulty in DIFFICULTIES:
    for model in ('plain', 'gated'):
      group = [r for r in runs if r['difficulty'] == difficulty and r['model'] == model]
      if not group:
        continue
      accuracies = [r['clip_accuracy'] for r in group]
      mean, std = statistics.mean_std(accuracies)
      rows.append(dict(
          difficulty=difficulty, model=model, seeds=[r['seed'] for r in group],
          clip_accuracy_mean=mean, clip_accuracy_std=std, clip_accuracies=accuracies,
          parameters=group[0]['parameters'],
          step_time_s=float(np.median([r['step_time_s'] for r in group]))))
  return rows


def compare(rows: List[Dict[str, Any]], confidence: float = 0.95) -> List[Dict[str, Any]]:
  """Per difficulty with both models and >= 2 seeds each: gated - plain accuracy, Welch's test.

  `statistics.welch`'s fields (mean_difference, ci_low, ci_high, t, dof,
  p_value, n_a = gated seeds, n_b = plain seeds) and the difficulty.
  """
  differences = []
  for difficulty in DIFFICULTIES:
    by_model = {r['model']: r['clip_accuracies'] for r in rows if r['difficulty'] == difficulty}
    if len(by_model.get('gated', ())) >= 2 and len(by_model.get('plain', ())) >= 2:
      differences.append(dict(statistics.welch(by_model['gated'], by_model['plain'], confidence),
                              difficulty=difficulty, confidence=confidence))
  return differences


def accuracy_cells(row: Dict[str, Any]) -> str:
  """A summary row's markdown cells: accuracy mean ± std (each seed's), parameters, step time."""
  each = ', '.join(f'{a:.3f}' for a in row['clip_accuracies'])
  spread = statistics.format_number(row['clip_accuracy_std'])
  return (f'{row["clip_accuracy_mean"]:.3f} ± {spread} ({each}) | {row["parameters"]:,} | '
          f'{row["step_time_s"]:.3f}')


def markdown(rows: List[Dict[str, Any]], differences: List[Dict[str, Any]], command: str,
             localization_tables: Optional[Dict[str, str]] = None) -> str:
  """The accuracy table, the gated - plain test per difficulty, links to the gate maps' tables."""
  lines = [f'Command: `{command}`', '',
           '| difficulty | model | validation clip accuracy, mean ± std (seeds) | parameters '
           '| step time (s) |', '| --- | --- | --- | --- | --- |']
  for row in rows:
    lines.append(f'| {row["difficulty"]} | {row["model"]} | {accuracy_cells(row)} |')
  if differences:
    lines += ['', 'Gated - plain validation clip accuracy, Welch\'s unequal-variance t-test '
              '(two-sided):', '',
              '| difficulty | gated - plain | confidence interval | Welch\'s t | dof | p '
              '| seeds (gated, plain) |', '| --- | --- | --- | --- | --- | --- | --- |']
    for d in differences:
      lines.append(f'| {d["difficulty"]} | {statistics.welch_cells(d)} |')
  if localization_tables:
    lines += ['', 'Localization of the gated model (seed 0), attention gates among the methods:',
              '']
    lines += [f'- {difficulty}: [{path}]({path})'
              for difficulty, path in localization_tables.items()]
  return '\n'.join(lines) + '\n'


def localization_config(config: ml_collections.ConfigDict, max_clips: int,
                        deletion_steps: int) -> ml_collections.ConfigDict:
  """`config` with a small localization comparison (`--mode=loc_eval`'s settings)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.localize.max_clips = max_clips
  config.localize.deletion_steps = deletion_steps
  config.lock()
  return config


def add_localization_arguments(parser: argparse.ArgumentParser, what: str) -> None:
  """--loc_eval (`what` it runs), --loc_clips and --loc_deletion_steps (`localization_config`)."""
  parser.add_argument('--loc_eval', action=argparse.BooleanOptionalAction, default=True,
                      help=what)
  parser.add_argument('--loc_clips', type=int, default=32,
                      help='evaluation clips of that comparison (localize.max_clips)')
  parser.add_argument('--loc_deletion_steps', type=int, default=5,
                      help='deletion/insertion curve steps there (localize.deletion_steps)')


def evaluate_localization(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`localization_eval.run` on `workdir`'s weights unless its table exists; the table's path."""
  table = os.path.join(workdir, comparison_report.OUTPUT_DIR, comparison_report.MARKDOWN_FILE)
  if not os.path.exists(os.path.join(workdir, comparison_report.OUTPUT_DIR,
                                     comparison_report.JSON_FILE)):
    localization_eval.run(config, workdir)
  return table


def main(argv=None) -> List[Dict[str, Any]]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--seeds', type=int, default=DEFAULT_SEEDS)
  parser.add_argument('--steps', type=int, default=DEFAULT_STEPS,
                      help='training steps of every run; 0 = the config\'s num_steps')
  parser.add_argument('--difficulties', default=DEFAULT_DIFFICULTY,
                      help=f'comma-separated, of {",".join(DIFFICULTIES)}')
  add_localization_arguments(parser, 'compare the localization methods, gates included, on the '
                             'gated model of seed 0 (<run>/loc_eval/comparison.md)')
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error('--seeds must be >= 1.')
  if args.steps < 0:
    parser.error('--steps must be >= 0 (0 = the config\'s num_steps).')
  difficulties = args.difficulties.split(',')
  unknown = set(difficulties) - set(DIFFICULTIES)
  if unknown:
    parser.error(f'Unknown difficulties {sorted(unknown)}; choose from {DIFFICULTIES}.')
  base = demo.get_config()
  runs, localization_tables = [], {}
  # The network does not depend on the difficulty or the seed.
  parameters = {gated: count_parameters(run_config(base, difficulties[0], gated, 0, args.steps))
                for gated in (False, True)}
  for difficulty in difficulties:
    for gated in (False, True):
      model = 'gated' if gated else 'plain'
      for seed in range(args.seeds):
        config = run_config(base, difficulty, gated, seed, args.steps)
        workdir = os.path.join(args.workdir, f'{difficulty}_{model}_seed{seed}')
        print(f'{difficulty} {model} seed {seed} -> {workdir}', flush=True)
        runs.append(dict(run_once(config, workdir), difficulty=difficulty, model=model,
                         seed=seed, parameters=parameters[gated]))
        if gated and seed == 0 and args.loc_eval:
          table = evaluate_localization(
              localization_config(config, args.loc_clips, args.loc_deletion_steps), workdir)
          localization_tables[difficulty] = os.path.relpath(table, args.workdir)
  rows = summarize(runs)
  differences = compare(rows)
  command = 'python -m studies.gated_vs_plain ' + ' '.join(argv if argv is not None
                                                          else sys.argv[1:])
  table = markdown(rows, differences, command, localization_tables)
  with open(os.path.join(args.workdir, RESULT_NAME + '.md'), 'w') as f:
    f.write(table)
  with open(os.path.join(args.workdir, RESULT_NAME + '.json'), 'w') as f:
    json.dump(dict(command=command, rows=rows, differences=differences, runs=runs,
                   localization_tables=localization_tables), f, indent=1)
  print(table)
  return rows


if __name__ == '__main__':
  main()
