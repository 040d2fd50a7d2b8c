"""Class names that travel with weights: a names file, or the lists shipped for published files.

Weights store the names of their classifier's outputs (`metadata.json` of a
converted directory, the metadata of a training checkpoint), so overlays,
panels and results say `Archery`, not `class_2`. The names come from:
  a names file   `--class_names=FILE`: one name per line, in label order (blank
                 lines skipped; UCF101's `classInd.txt`, `<index> <name>` per
                 line, is read too);
  the data       the data source's classes (training, `--drop_head` conversion);
  shipped lists  for the published PyTorch files, chosen by class count:
                 UCF101 (101, classInd.txt order), HMDB51 (51, sorted) and
                 Kinetics-400 (400, sorted, the order of Hara et al.'s labels).
"""
import importlib.resources
import re
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import ml_collections

from gla_jax.data import sources
from gla_jax.data import storage

# Class count -> (dataset, the shipped file in gla_jax/labels/).
SHIPPED = {101: ('UCF101', 'ucf101.txt'), 51: ('HMDB51', 'hmdb51.txt'),
           400: ('Kinetics-400', 'kinetics400.txt')}
_INDEXED_LINE = re.compile(r'^\d+\s+(\S.*)$')


def shipped(num_classes: int) -> Optional[List[str]]:
  """The shipped list of `num_classes` names (101, 51 or 400), else None."""
  if num_classes not in SHIPPED:
    return None
  text = importlib.resources.files('gla_jax').joinpath('labels', SHIPPED[num_classes][1])
  return text.read_text(encoding='utf-8').splitlines()


def parse(text: str, source: str) -> List[str]:
  """The names of a names file's `text` (`source` names it in errors).

  Raises:
    ValueError: no name, or a name given twice.
  """
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if lines and all(_INDEXED_LINE.match(line) for line in lines):
    lines = [_INDEXED_LINE.match(line).group(1).strip() for line in lines]   # classInd.txt.
  if not lines:
    raise ValueError(f'{source} holds no class name; write one name per line, in label order.')
  seen, repeated = set(), []
  for name in lines:
    if name in seen and name not in repeated:
      repeated.append(name)
    seen.add(name)
  if repeated:
    raise ValueError(f'{source} names {", ".join(map(repr, repeated))} more than once; each '
                     'class needs its own line and name.')
  return lines


def read_file(path: str) -> List[str]:
  """The names in the file at `path` (local or a URI), one per line (`parse`).

  Raises:
    FileNotFoundError: no such file.
    ValueError: no name, or a name given twice.
  """
  if not storage.is_file(path):
    raise FileNotFoundError(f'--class_names={path}: no such file; give a text file with one '
                            'class name per line, in label order.')
  return parse(storage.read_text(path), f'--class_names={path}')


def check_count(names: Sequence[str], num_classes: int, source: str) -> List[str]:
  """`names` as a list, if there is one per class.

  Raises:
    ValueError: another count, with both counts and the fix.
  """
  if len(names) != num_classes:
    raise ValueError(
        f'{source} has {len(names)} class names but the model has {num_classes} classes '
        f'(config.model.num_classes); give one name per class, in label order, or set '
        f'--config.model.num_classes={len(names)} if the model has {len(names)} classes.')
  return list(names)


def of_data(data_config: ml_collections.ConfigDict, num_classes: int) -> Optional[List[str]]:
  """The training data's class names if it opens and has `num_classes` classes, else None."""
  try:
    names = list(sources.create_source(data_config, 'train').class_names)
  except (OSError, ValueError, ImportError) as error:
    logging.warning('The class names of the data are unavailable (%s).', error)
    return None
  if len(names) != num_classes:
    logging.warning('The data has %d classes, the model %d: no class names stored.',
                    len(names), num_classes)
    return None
  return names


def of_metadata(metadata: Dict[str, Any], num_classes: Optional[int] = None
                ) -> Optional[List[str]]:
  """The `class_names` that weights' metadata stores (None without, or for another count)."""
  names = metadata.get('class_names')
  if not isinstance(names, (list, tuple)) or not names:
    return None
  if num_classes is not None and len(names) != num_classes:
    logging.warning('The weights store %d class names for %d classes; ignoring them.',
                    len(names), num_classes)
    return None
  return [str(name) for name in names]
