r"""Plain versus gated backbone: the same recipe and seeds at two synthetic difficulties.

  python -m studies.gated_vs_plain --workdir=runs/gated_vs_plain

Trains `configs/demo.py` once per (difficulty, plain | gated, seed), each in
its own sub-folder of the workdir (so an interrupted study resumes from each
run's latest checkpoint), and writes
`<workdir>/gated_vs_plain.md` and `.json`: validation clip accuracy (mean and
standard deviation over the seeds), parameters, and the median training
step time. The seed sets the initialisation and the data order
(`train.seed`); the data themselves are the same for every run.

A plain run takes the demo's training time (about 7 minutes on a 2-core CPU),
a gated one about 11: one difficulty's 6 runs took 56 minutes there, the
default study of 2 difficulties x 2 models x 3 seeds about 2 hours;
--steps shortens every run, --difficulties picks one. Results: docs/results.md.
"""
import argparse
import json
import os
import statistics
import sys
from typing import Any, Dict, List

import jax
import ml_collections

from configs import demo
from gla_jax.models import building
from gla_jax.models import convert
from gla_jax.outputs import reports
from gla_jax.training import loop

RESULT_NAME = 'gated_vs_plain'
DIFFICULTIES = ('demo', 'demo_hard')


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
              step_time_s=1.0 / statistics.median(rates) if rates else float('nan'))


def summarize(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """One row per (difficulty, model): accuracy mean and spread over the seeds."""
  rows = []
  for difficulty in DIFFICULTIES:
    for model in ('plain', 'gated'):
      group = [r for r in runs if r['difficulty'] == difficulty and r['model'] == model]
      if not group:
        continue
      accuracies = [r['clip_accuracy'] for r in group]
      rows.append(dict(
          difficulty=difficulty, model=model, seeds=[r['seed'] for r in group],
          clip_accuracy_mean=statistics.fmean(accuracies),
          clip_accuracy_std=statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
          clip_accuracies=accuracies, parameters=group[0]['parameters'],
          step_time_s=statistics.median(r['step_time_s'] for r in group)))
  return rows


def markdown(rows: List[Dict[str, Any]], command: str) -> str:
  lines = [f'Command: `{command}`', '',
           '| difficulty | model | validation clip accuracy, mean ± std (seeds) | parameters '
           '| step time (s) |', '| --- | --- | --- | --- | --- |']
  for row in rows:
    each = ', '.join(f'{a:.3f}' for a in row['clip_accuracies'])
    lines.append(f'| {row["difficulty"]} | {row["model"]} | {row["clip_accuracy_mean"]:.3f} ± '
                 f'{row["clip_accuracy_std"]:.3f} ({each}) | {row["parameters"]:,} | '
                 f'{row["step_time_s"]:.3f} |')
  return '\n'.join(lines) + '\n'


def main(argv=None) -> List[Dict[str, Any]]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=0, help='0 = the config\'s num_steps')
  parser.add_argument('--difficulties', default=','.join(DIFFICULTIES))
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error('--seeds must be >= 1.')
  difficulties = args.difficulties.split(',')
  unknown = set(difficulties) - set(DIFFICULTIES)
  if unknown:
    parser.error(f'Unknown difficulties {sorted(unknown)}; choose from {DIFFICULTIES}.')
  base = demo.get_config()
  runs = []
  for difficulty in difficulties:
    for gated in (False, True):
      model = 'gated' if gated else 'plain'
      for seed in range(args.seeds):
        config = run_config(base, difficulty, gated, seed, args.steps)
        workdir = os.path.join(args.workdir, f'{difficulty}_{model}_seed{seed}')
        print(f'{difficulty} {model} seed {seed} -> {workdir}', flush=True)
        runs.append(dict(run_once(config, workdir), difficulty=difficulty, model=model,
                         seed=seed, parameters=count_parameters(config)))
  rows = summarize(runs)
  command = 'python -m studies.gated_vs_plain ' + ' '.join(argv if argv is not None
                                                          else sys.argv[1:])
  table = markdown(rows, command)
  with open(os.path.join(args.workdir, RESULT_NAME + '.md'), 'w') as f:
    f.write(table)
  with open(os.path.join(args.workdir, RESULT_NAME + '.json'), 'w') as f:
    json.dump(dict(command=command, rows=rows, runs=runs), f, indent=1)
  print(table)
  return rows


if __name__ == '__main__':
  main()
