"""Reading published PyTorch checkpoints (`.pth`) into numpy state dicts.

PyTorch is imported only inside these functions: the package, and the
conversion of already loaded arrays (`gla_jax.models.convert`), work without it.
"""
import os
import re
from typing import Any, Dict, Mapping
import warnings

import numpy as np

DATA_PARALLEL_PREFIX = 'module.'


def load_torch_file(path) -> Any:
  """`torch.load` of `path` on the CPU, as safely as the file allows."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'Reading a PyTorch checkpoint needs PyTorch: `pip install torch` (the CPU build '
        'is enough). Everything else in gla_jax works without it.') from e
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'PyTorch checkpoint {path!r} does not exist or is not a file.')
  try:
    return torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    # weights_only refuses files that pickle classes beyond tensors and
    # containers ("Unsupported global: GLOBAL argparse.Namespace"); any other
    # failure (also a weights-only one) means torch cannot read the file at all.
    refused = re.search(r'Unsupported (?:global|class):?\s*(?:GLOBAL )?([\w.]+)', str(e))
    if not refused:
      raise ValueError(
          f'Could not read {path!r} as a PyTorch checkpoint ({type(e).__name__}: '
          f'{_torch_error_summary(e)}). Is the file complete (re-download it) and written '
          'by `torch.save`?') from e
  warnings.warn(
      f'{path!r} pickles {refused.group(1)}, which torch.load(weights_only=True) refuses. '
      'Loading it with weights_only=False, which runs code from the file: only do this for '
      'files from a source you trust.', stacklevel=3)
  try:
    return torch.load(path, map_location='cpu', weights_only=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'Could not read {path!r} as a PyTorch checkpoint '
                     f'({type(e).__name__}: {_torch_error_summary(e)}).') from e


def _torch_error_summary(error: Exception) -> str:
  """The informative line of a `torch.load` error (its messages are paragraphs of advice)."""
  text = str(error)
  detail = re.search(r'WeightsUnpickler error:\s*(.+)', text)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return detail.group(1).strip() if detail else (lines[0] if lines else repr(error))


def state_dict_of(obj: Any, path) -> Dict[str, np.ndarray]:
  """The tensors of a loaded checkpoint as float32 numpy arrays, prefix stripped."""
  import torch  # pylint: disable=g-import-not-at-top  # Loaded by `load_torch_file` already.
  if isinstance(obj, Mapping) and 'state_dict' in obj:
    obj = obj['state_dict']
  if not isinstance(obj, Mapping):
    raise ValueError(f'{os.fspath(path)!r} holds a {type(obj).__name__}, not a state dict '
                     "or a dict with a 'state_dict' entry.")
  state = {}
  for key, value in obj.items():
    if not isinstance(value, torch.Tensor):
      continue   # e.g. 'epoch', 'arch' of a bare dict; never weights.
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()    # numpy has no bfloat16; the model keeps float32 weights.
    state[strip_prefix(str(key))] = value.numpy()
  if not state:
    keys = sorted(map(str, obj))
    raise ValueError(f'{os.fspath(path)!r} contains no tensors (top-level keys: '
                     f'{", ".join(keys[:10])}{", ..." if len(keys) > 10 else ""}); expected '
                     'a state dict.')
  return state


def load_torch_checkpoint(path) -> Dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint into `{name: numpy array}` without the `module.` prefix.

  Accepts Hara's published layout (`{'epoch', 'arch', 'state_dict', 'optimizer'}`)
  or a bare state dict. Entries that are not tensors are dropped; floating
  point tensors become float32.

  Args:
    path: the `.pth` file.

  Returns:
    The state dict as numpy arrays, keyed like `model.state_dict()` of the
    unwrapped PyTorch model (`conv1.weight`, `layer1.0.bn1.running_var`, ...).

  Raises:
    ImportError: PyTorch is not installed.
    FileNotFoundError: `path` does not exist.
    ValueError: the file is not a readable PyTorch checkpoint.
  """
  return state_dict_of(load_torch_file(path), path)


def strip_prefix(key: str) -> str:
  """A state-dict key without `nn.DataParallel`'s `module.` prefix."""
  return key[len(DATA_PARALLEL_PREFIX):] if key.startswith(DATA_PARALLEL_PREFIX) else key
