"""Saving and loading model variables with Orbax.

A variables checkpoint is a directory:

  <directory>/variables/      the `{'params', 'batch_stats'}` pytree (Orbax)
  <directory>/metadata.json   what the variables are: model preset, classes, source

A save never leaves a half-written checkpoint under `directory`, nor destroys
a complete one there: it writes a hidden sibling directory and swaps it in
with renames once both parts are on disk.
"""
import json
import os
import shutil
from typing import Any, Dict, Optional, Tuple
import uuid

import orbax.checkpoint as ocp

VARIABLES_DIR = 'variables'
METADATA_FILE = 'metadata.json'


def _checkpointer() -> ocp.Checkpointer:
  # Synchronous: `save` returns with everything on disk or raises, so a failed
  # save can be cleaned up without racing Orbax's background threads.
  return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def save_variables(directory, variables: Any, metadata: Optional[Dict[str, Any]] = None
                   ) -> str:
  """Writes `variables` (any pytree of arrays) and JSON `metadata` to `directory`.

  Args:
    directory: the checkpoint directory; an existing checkpoint there is
      replaced only after the new one is completely written.
    variables: pytree of numpy or jax arrays, e.g. `{'params', 'batch_stats'}`.
    metadata: JSON-serialisable dict (e.g. `preset`, `num_classes`, `source`).

  Returns:
    The absolute path of the checkpoint directory.
  """
  directory = os.path.abspath(os.fspath(directory))
  parent, name = os.path.split(directory)
  text = json.dumps(metadata or {}, indent=2, sort_keys=True)   # Fail before any I/O.
  os.makedirs(parent, exist_ok=True)
  # Staging and backup live next to `directory`, on the same file system, so
  # the swaps below are renames, not copies.
  staging = os.path.join(parent, f'.{name}.saving-{uuid.uuid4().hex[:8]}')
  try:
    os.makedirs(staging)
    checkpointer = _checkpointer()
    try:
      checkpointer.save(os.path.join(staging, VARIABLES_DIR), variables)
    finally:
      checkpointer.close()
    with open(os.path.join(staging, METADATA_FILE), 'w') as f:
      f.write(text)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  backup = None
  if os.path.exists(directory):
    backup = os.path.join(parent, f'.{name}.replaced-{uuid.uuid4().hex[:8]}')
    os.rename(directory, backup)
  try:
    os.rename(staging, directory)
  except BaseException:
    if backup:
      os.rename(backup, directory)
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if backup:
    shutil.rmtree(backup, ignore_errors=True)
  return directory


def load_variables(directory) -> Tuple[Any, Dict[str, Any]]:
  """Reads a checkpoint written by `save_variables`.

  Args:
    directory: the checkpoint directory.

  Returns:
    `(variables, metadata)`: the pytree as saved (numpy arrays stay numpy,
    jax arrays come back as jax arrays) and the metadata dict.
  """
  directory = os.path.abspath(os.fspath(directory))
  variables_dir = os.path.join(directory, VARIABLES_DIR)
  metadata_path = os.path.join(directory, METADATA_FILE)
  if not (os.path.isdir(variables_dir) and os.path.isfile(metadata_path)):
    raise FileNotFoundError(
        f'{directory!r} is not a variables checkpoint: expected {VARIABLES_DIR}/ and '
        f'{METADATA_FILE} inside it (written by gla_jax.checkpoint.save_variables, e.g. by '
        '`main.py --mode=convert`).')
  with open(metadata_path) as f:
    metadata = json.load(f)
  checkpointer = _checkpointer()
  try:
    variables = checkpointer.restore(variables_dir)
  finally:
    checkpointer.close()
  return variables, metadata
