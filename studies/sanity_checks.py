r"""Sanity checks of every attention method (Adebayo et al. 2018): randomised weights and labels.

  python -m studies.sanity_checks --workdir=runs/sanity --trained=runs/demo [--clips=16]

Explains `--clips` validation clips (`config.eval.split`, whole videos chosen
with `config.localize.seed`) with every method of `config.localize.methods`
(`explain.comparison.compared_names`) three ways:
  * with the trained weights of `--trained` (a training workdir or a converted
    directory; its saved config, or `--config`);
  * cascading randomisation: the same clips with the classifier, then also
    layer4, ..., down to the stem re-initialised (`explain.sanity`); column
    `layer3` has the classifier, layer4 and layer3 random;
  * data randomisation: a model trained with the same recipe on fixed random
    training labels (`config.data.random_labels_seed`) in
    `<workdir>/shuffled_labels` (resumed if there; `--steps` shortens it).
Each map is compared with the trained model's map of the same clip (every
model explains its own predicted class): mean Spearman rank correlation, of
|map| too (its table only where it differs), and mean SSIM over the clips. A
method FAILS when its mean Spearman correlation stays >= SPEARMAN_FAIL_THRESHOLD
with the whole network randomised: its maps then show the input, not what the
model learnt. Writes `<workdir>/sanity_checks.md`, `.json` and `.png`
(Spearman against the cascade stage).

Reference:
  Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. "Sanity Checks for Saliency
    Maps", NeurIPS 2018.
"""
import argparse
import importlib.util
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import jax
import ml_collections
import numpy as np

from gla_jax import cli
from gla_jax import model_loading
from gla_jax import weights
from gla_jax.data import loader
from gla_jax.explain import comparison
from gla_jax.explain import sanity
from gla_jax.outputs import pictures
from gla_jax.training import loop

RESULT_NAME = 'sanity_checks'
SHUFFLED_DIR = 'shuffled_labels'
SHUFFLED = 'shuffled labels'
# A method whose maps keep this mean Spearman correlation with the trained model's after the
# whole network is re-initialised fails the cascading randomisation test.
SPEARMAN_FAIL_THRESHOLD = 0.5
# config.data.random_labels_seed of the shuffled-label model.
SHUFFLED_LABELS_SEED = 0
METRICS = (('spearman', 'Spearman rank correlation'),
           ('spearman_abs', 'Spearman rank correlation of |map|'),
           ('ssim', 'SSIM (per frame, mean over the clip)'))


def config_from_file(value: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file (`path.py[:arg]` or a shipped config's name)."""
  path, _, arg = cli.config_file(value).partition(':')
  spec = importlib.util.spec_from_file_location('sanity_checks_config', path)
  if spec is None or not os.path.isfile(path):
    raise ValueError(f'--config={value}: no such config file; pass a .py file with get_config() '
                     'or a shipped config name (e.g. demo).')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def read_clips(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
  """uint8 [N, T, S, S, 3]: the first `count` clips of `config.eval.split`'s seeded subset."""
  batches = loader.eval_batches(config.data, config.eval.split, int(config.localize.batch_size),
                                max_clips=count, seed=int(config.localize.seed))
  videos: List[np.ndarray] = []
  try:
    for batch in batches:
      videos.extend(batch['video'][np.asarray(batch['mask'], bool)])
      if len(videos) >= count:
        break
  finally:
    batches.close()
  if not videos:
    raise ValueError(f'The {config.eval.split!r} split has no readable clips to explain.')
  return np.stack(videos[:count])


def explain(config: ml_collections.ConfigDict, model: Any, variables: Dict[str, Any],
            video: np.ndarray) -> Dict[str, np.ndarray]:
  """{method: [N, T, S, S]} of `compared_names(config, model)`, in batches of one shape."""
  batch_size = int(config.localize.batch_size)
  names = comparison.compared_names(config, model)
  parts: Dict[str, List[np.ndarray]] = {name: [] for name in names}
  for start in range(0, len(video), batch_size):
    chunk = video[start:start + batch_size]
    padded = np.zeros((batch_size, *video.shape[1:]), video.dtype)   # One compiled shape.
    padded[:len(chunk)] = chunk
    maps, _, _ = comparison.method_maps(
        model, variables, padded, config.data.mean, config.data.std, config.explain.pooling,
        config.explain.normalization, names=names,
        own_upsampling=comparison.own_upsampling(config),
        chunk_size=int(config.explain.get('chunk_size', 32)))
    for name in names:
      parts[name].append(np.asarray(maps[name])[:len(chunk)])
  return {name: np.concatenate(value) for name, value in parts.items()}


def _defined_mean(values: np.ndarray) -> Optional[float]:
  """The mean of the values that are not NaN; None (JSON null) when there are none."""
  defined = values[~np.isnan(values)]
  return float(defined.mean()) if len(defined) else None


def similarity(reference: Dict[str, np.ndarray], other: Dict[str, np.ndarray]
               ) -> Dict[str, Dict[str, Any]]:
  """{method: mean Spearman, of |map|, SSIM, and the clips whose correlation is undefined}.

  A clip whose map is constant in either model has no rank correlation: it is
  left out of the Spearman means (None when every clip is).
  """
  result = {}
  for name, maps in reference.items():
    rho = sanity.spearman(maps, other[name])
    result[name] = dict(
        spearman=_defined_mean(rho),
        spearman_abs=_defined_mean(sanity.spearman(maps, other[name], absolute=True)),
        ssim=float(np.mean(sanity.ssim(maps, other[name]))),
        undefined_clips=int(np.isnan(rho).sum()))
  return result


def verdict(spearman_randomized: Optional[float]) -> str:
  """FAILS when the whole network's randomisation leaves the maps correlated, else passes."""
  if spearman_randomized is None:
    return 'undefined (constant maps)'
  return 'FAILS' if spearman_randomized >= SPEARMAN_FAIL_THRESHOLD else 'passes'


def shuffled_config(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  """`config`'s recipe on fixed random training labels; `steps` > 0 shortens it."""
  shuffled = ml_collections.ConfigDict(config.to_dict())
  shuffled.data.random_labels_seed = SHUFFLED_LABELS_SEED
  if steps:
    shuffled.train.num_steps = steps
    shuffled.train.warmup_steps = min(int(shuffled.train.warmup_steps), steps // 2)
  shuffled.train.eval_every = 0            # One evaluation at the end, checkpoints there too.
  shuffled.train.checkpoint_every = 0
  shuffled.lock()
  return shuffled


def train_shuffled(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains (or resumes) the shuffled-label model in `workdir`; its final metrics.

  A run stopped by a signal ends the study with status 143; the same command resumes it.
  """
  final = loop.train_and_evaluate(config, workdir)
  if final.get('interrupted'):
    print(f'Stopped by {final["interrupted"]} at step {final["step"]} of {workdir}; run the same '
          'command again to resume the study.', flush=True)
    sys.exit(143)
  return final


def _same_as_spearman(result: Dict[str, Any]) -> bool:
  """Whether the |map| correlation equals the plain one everywhere (maps without a sign)."""
  return all(measures['spearman_abs'] == measures['spearman']
             for entry in result['methods'].values()
             for measures in [*entry['states'].values(), entry['shuffled_labels']])


def markdown(result: Dict[str, Any]) -> str:
  """One table per measure: methods x (cascade stages, shuffled labels); verdicts."""
  states = [*result['stages'], SHUFFLED]
  lines = [f'Command: `{result["command"]}`', '',
           f'{result["num_clips"]} `{result["split"]}` clips; trained weights: '
           f'`{result["trained"]}`; shuffled-label model: `{result["shuffled"]["workdir"]}` '
           f'(step {result["shuffled"]["step"]}, validation clip accuracy '
           f'{result["shuffled"]["clip_accuracy"]:.3f}). Column `<stage>`: every stage from the '
           'classifier down to it re-initialised (cascading randomisation). A method fails when '
           'its mean Spearman correlation with the whole network randomised (column '
           f'`{result["stages"][-1]}`) is >= {SPEARMAN_FAIL_THRESHOLD} (Adebayo et al. 2018).']
  for key, title in METRICS:
    if key == 'spearman_abs' and _same_as_spearman(result):
      lines += ['', f'{title}: equal to the Spearman rank correlation for every method and '
                'model (their maps are >= 0), so its table is left out.']
      continue
    lines += ['', f'**{title}** with the trained model\'s maps (mean over the clips)', '',
              '| method | ' + ' | '.join(states) + (' | verdict |' if key == 'spearman' else ' |'),
              '| --- ' * (len(states) + 1 + (key == 'spearman')) + '|']
    for name, entry in result['methods'].items():
      cells = [entry['states'][state][key] for state in result['stages']]
      cells.append(entry['shuffled_labels'][key])
      row = f'| {name} | ' + ' | '.join('n/a' if v is None else f'{v:.3f}' for v in cells)
      lines.append(row + (f' | {entry["verdict"]} |' if key == 'spearman' else ' |'))
  undefined = {name: entry['states'][result['stages'][-1]]['undefined_clips']
               for name, entry in result['methods'].items()}
  if any(undefined.values()):
    lines += ['', 'Clips left out of the Spearman means (a constant map) with the whole network '
              'randomised: ' + ', '.join(f'{n} {k}' for n, k in undefined.items() if k) + '.']
  return '\n'.join(lines) + '\n'


def plot(result: Dict[str, Any]) -> np.ndarray:
  """uint8 RGB [H, W, 3]: mean Spearman correlation against the cascade stage, a line per method."""
  fig, canvas = pictures.plot_figure((900, 520))
  axes = fig.subplots()
  stages = result['stages']
  positions = np.arange(len(stages))
  for index, (name, entry) in enumerate(result['methods'].items()):
    values = [entry['states'][s]['spearman'] for s in stages]
    # Past the colour cycle's 10 colours, other markers and dashes tell the lines apart.
    style = dict(marker='o') if index < 10 else dict(marker='s', linestyle=':')
    axes.plot(positions, [math.nan if v is None else v for v in values], label=name, **style)
  axes.axhline(SPEARMAN_FAIL_THRESHOLD, color='0.4', linestyle='--',
               label=f'fail threshold {SPEARMAN_FAIL_THRESHOLD:g}')
  axes.set_xticks(positions, stages)
  axes.set(title='cascading randomisation (Adebayo et al. 2018)',
           xlabel='re-initialised from the classifier down to', ylim=(-0.2, 1.05),
           ylabel='Spearman correlation with the trained maps')
  axes.grid(True, color='0.9')
  axes.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize='small', frameon=False)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--trained', required=True,
                      help='a training workdir or a converted directory of the trained model')
  parser.add_argument('--config', default='',
                      help='its config (a file or a shipped name); default: the saved one')
  parser.add_argument('--clips', type=int, default=16)
  parser.add_argument('--steps', type=int, default=0,
                      help='training steps of the shuffled-label model; 0 = the config\'s')
  args = parser.parse_args(argv)
  if args.clips < 1 or args.steps < 0:
    parser.error('--clips must be >= 1 and --steps >= 0.')
  try:
    loaded = model_loading.load_model(
        args.trained, config=config_from_file(args.config) if args.config else None)
  except (FileNotFoundError, ValueError) as error:   # a wrong --trained or --config
    parser.error(str(error))
  config, model, variables = loaded.config, loaded.model, loaded.variables
  video = read_clips(config, args.clips)
  print(f'Explaining {len(video)} clips with the trained weights of {loaded.source}', flush=True)
  trained_maps = explain(config, model, variables, video)

  cascade = sanity.cascade_stages(variables['params'])
  stage_names = [stage for stage, _ in cascade]
  rng = jax.random.fold_in(jax.random.key(int(config.train.seed)), 1)   # Not training's init.
  states = {}
  for k, stage in enumerate(stage_names):
    print(f'Re-initialised from the classifier down to {stage}', flush=True)
    randomized = sanity.randomize(variables, stage_names[:k + 1], rng, model)
    states[stage] = similarity(trained_maps, explain(config, model, randomized, video))

  shuffled_workdir = os.path.join(args.workdir, SHUFFLED_DIR)
  print(f'Shuffled-label model -> {shuffled_workdir}', flush=True)
  final = train_shuffled(shuffled_config(config, args.steps), shuffled_workdir)
  shuffled_variables = weights.read(shuffled_workdir).variables
  shuffled = similarity(trained_maps, explain(config, model, shuffled_variables, video))

  command = 'python -m studies.sanity_checks ' + ' '.join(argv if argv is not None
                                                         else sys.argv[1:])
  result = dict(
      command=command, trained=str(loaded.source), split=config.eval.split,
      num_clips=len(video), spearman_fail_threshold=SPEARMAN_FAIL_THRESHOLD,
      stages=stage_names, cascade={stage: list(modules) for stage, modules in cascade},
      shuffled=dict(workdir=shuffled_workdir, step=int(final['step']),
                    random_labels_seed=SHUFFLED_LABELS_SEED,
                    clip_accuracy=float(final['eval/clip_accuracy'])),
      methods={name: dict(states={stage: states[stage][name] for stage in stage_names},
                          shuffled_labels=shuffled[name],
                          verdict=verdict(states[stage_names[-1]][name]['spearman']))
               for name in trained_maps})
  os.makedirs(args.workdir, exist_ok=True)
  table = markdown(result)
  base = os.path.join(args.workdir, RESULT_NAME)
  with open(base + '.md', 'w') as f:
    f.write(table)
  pictures.write_image(base + '.png', plot(result))
  with open(base + '.json', 'w') as f:
    json.dump(result, f, indent=1)
  print(table)
  return result


if __name__ == '__main__':
  main()
