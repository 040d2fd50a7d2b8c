"""Explaining video files with a trained or converted model (the `explain` mode).

The numeric work is `explain.explain`; this module finds the weights, cuts a
video of any length and resolution into clips, explains them in fixed-size
batches (one compilation) and writes the maps and pictures to the workdir.
"""
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gla_jax import checkpoint, explain, input_pipeline, models, video_io, visualize

CONVERTED_DIR = 'converted'


def build_model(config: ml_collections.ConfigDict) -> models.ResNeXt3D:
  """The model that `config.model` describes."""
  dtypes = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
  if config.model.dtype not in dtypes:
    raise ValueError(f'config.model.dtype={config.model.dtype!r}; use one of {sorted(dtypes)}.')
  return models.create(config.model.preset, num_classes=config.model.num_classes,
                       dtype=dtypes[config.model.dtype])


def load_variables(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Weights for inference: the workdir's latest training checkpoint, else its converted ones."""
  restore = getattr(checkpoint, 'restore_inference_variables', None)
  if restore is not None:
    variables = restore(workdir)
    if variables is not None:
      return variables
  converted = os.path.join(workdir, CONVERTED_DIR)
  if os.path.isdir(converted):
    variables, _ = checkpoint.load_variables(converted)
    return variables
  raise FileNotFoundError(
      f'No weights in {workdir}: neither a training checkpoint nor {converted}. Train with '
      '--mode=train, or convert published weights with --mode=convert --torch_checkpoint=PATH, '
      'using the same --workdir.')


def class_names(config: ml_collections.ConfigDict) -> List[str]:
  """Class names of the evaluation source, or `class_<k>` where the source cannot be opened."""
  try:
    names = list(input_pipeline.create_source(config.data, 'eval').class_names)
  except (OSError, ValueError, ImportError) as error:
    logging.warning('Class names unavailable (%s); using indices.', error)
    names = []
  if len(names) != config.model.num_classes:
    names = [f'class_{k}' for k in range(config.model.num_classes)]
  return names


def cut_clips(num_frames: int, clip_frames: int) -> Tuple[np.ndarray, np.ndarray]:
  """Non-overlapping clips covering a video: (starts [N], frame indices [N, clip_frames]).

  The last clip is loop-padded (Hara's test-time LoopPadding); a video shorter
  than a clip gives one clip.
  """
  starts = input_pipeline.eval_clip_starts(num_frames, clip_frames, 1)
  indices = np.stack([input_pipeline.eval_frame_indices(num_frames, s, clip_frames, 1)
                      for s in starts])
  return starts, indices


def explain_clips(model: models.ResNeXt3D, variables: Dict[str, Any], clips: np.ndarray,
                  explain_config: ml_collections.ConfigDict) -> Dict[str, np.ndarray]:
  """Explains float32 clips [N, T, S, S, 3] in batches of `explain_config.batch_size`.

  The last batch is padded to the full size so every batch reuses one compiled
  function. Returns numpy arrays: attention [N, T, S, S], layer maps, logits,
  target, has_signal.
  """
  batch_size = int(explain_config.batch_size)
  layers = explain_config.layers
  if ',' in layers:
    layers = tuple(name.strip() for name in layers.split(','))
  outputs: Dict[str, List[np.ndarray]] = {}
  for first in range(0, len(clips), batch_size):
    batch = clips[first:first + batch_size]
    rows = len(batch)
    if rows < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - rows, *batch.shape[1:]), batch.dtype)])
    result = explain.explain(model, variables, batch, method=explain_config.method,
                             layers=layers, aggregate=explain_config.aggregate,
                             pooling=explain_config.pooling,
                             normalization=explain_config.normalization)
    pieces = dict(attention=result.attention, logits=result.logits, target=result.target,
                  has_signal=result.has_signal,
                  **{f'layer/{name}': result.layer_maps[name] for name in result.layer_names})
    for key, value in pieces.items():
      outputs.setdefault(key, []).append(np.asarray(value)[:rows])
  return {key: np.concatenate(values) for key, values in outputs.items()}


def explain_video_file(config: ml_collections.ConfigDict, workdir: str, video_path: str,
                       max_panels: int = 4) -> str:
  """Explains a whole video file and writes the results under `<workdir>/explain/<name>/`.

  Writes `attention.npy` (float32 [frames, S, S], the global-local map of every
  frame of the video at the model's crop resolution), `layers/<name>.npy`
  (the same per layer), `clips.json` (per clip: first frame, explained class,
  probability) and `panel_<k>.png` pictures (frames, the attention and each
  layer's map, global to local) for the first `max_panels` clips.

  Returns:
    The output folder.
  """
  model = build_model(config)
  variables = load_variables(config, workdir)
  frames = video_io.read_video(video_path)                          # uint8 [N, H, W, 3]
  crops, normalised = input_pipeline.center_clip(frames, config.data)
  clip_frames = int(config.data.num_frames)
  starts, indices = cut_clips(len(frames), clip_frames)
  result = explain_clips(model, variables, normalised[indices], config.explain)

  out_dir = os.path.join(workdir, 'explain', os.path.splitext(os.path.basename(video_path))[0])
  os.makedirs(os.path.join(out_dir, 'layers'), exist_ok=True)
  # Clips do not overlap: each video frame is the first occurrence in its clip.
  keep = [(k, t) for k, start in enumerate(starts) for t in range(clip_frames)
          if start + t < len(frames)]
  rows, cols = np.array([k for k, _ in keep]), np.array([t for _, t in keep])
  np.save(os.path.join(out_dir, 'attention.npy'), result['attention'][rows, cols])
  layer_keys = [key for key in result if key.startswith('layer/')]
  for key in layer_keys:
    np.save(os.path.join(out_dir, 'layers', key.split('/', 1)[1] + '.npy'), result[key][rows, cols])

  names = class_names(config)
  probabilities = np.asarray(jax.nn.softmax(result['logits'], axis=-1))
  clip_info = []
  for k, start in enumerate(starts):
    target = int(result['target'][k])
    clip_info.append(dict(start_frame=int(start), target=target, class_name=names[target],
                          probability=float(probabilities[k, target]),
                          has_signal=bool(result['has_signal'][k])))
    if k < max_panels:
      maps = {'attention': result['attention'][k],
              **{key.split('/', 1)[1]: result[key][k] for key in layer_keys}}
      title = f'frames {start}-{start + clip_frames - 1}: {names[target]} ' \
              f'p={probabilities[k, target]:.2f}'
      visualize.write_image(os.path.join(out_dir, f'panel_{k}.png'),
                            visualize.panel(crops[indices[k]], maps, title=title))
  with open(os.path.join(out_dir, 'clips.json'), 'w') as f:
    json.dump(dict(video=os.path.abspath(video_path), num_frames=len(frames),
                   crop_size=int(config.data.crop_size), clips=clip_info,
                   explain=config.explain.to_dict()), f, indent=1)
  if not all(info['has_signal'] for info in clip_info):
    logging.warning('Some clips of %s have no attention signal (all gradients zero); their '
                    'maps are zeros.', video_path)
  return out_dir
