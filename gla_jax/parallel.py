"""Data parallelism with `jax.jit` and named shardings (no `pmap`).

The batch is split over the leading axis across a 1-D mesh with axis `'data'`;
parameters, optimizer state and BatchNorm statistics are replicated. Under
`jit` with a globally sharded batch, XLA inserts the gradient all-reduce and
BatchNorm's batch statistics are already global, so the model code needs no
`axis_name`. `initialize_distributed` starts a multi-host run; `make_local_mesh`
is a process's own devices, for work that needs no other process.
"""
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """`jax.distributed.initialize()` when `config.distributed` and not done yet.

  Must run before any JAX computation. Without arguments JAX reads the
  coordinator and process ids from the cluster (SLURM, Open MPI, TPU pods,
  Kubernetes); a launcher may also initialise it itself before calling us.
  """
  if config.distributed and not jax.distributed.is_initialized():
    jax.distributed.initialize()


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
  """A 1-D `'data'` mesh over the first `num_devices` devices (all by default)."""
  available = jax.device_count()
  num_devices = num_devices or available
  if num_devices > available:
    raise ValueError(f'Asked for {num_devices} devices but only {available} are visible; '
                     'lower the device count or run on a larger machine.')
  # Auto axis types: the default (Explicit) would demand `jax.set_mesh` around
  # every computation, which plain data parallelism does not need.
  return jax.make_mesh((num_devices,), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_devices])


def make_local_mesh() -> Mesh:
  """A 1-D `'data'` mesh over this process's own devices.

  Computations on it need no other process: each process of a multi-host run
  may compute alone on it (loc_eval).
  """
  return jax.make_mesh((jax.local_device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=jax.local_devices())


def any_process(flags: np.ndarray) -> np.ndarray:
  """bool [N]: `flags` or-ed over every process (all must call it, with the same N).

  How the processes agree on what some of them could not read (unreadable
  evaluation videos), so that all plan the same batches.
  """
  flags = np.asarray(flags, bool)
  if jax.process_count() == 1:
    return flags
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  gathered = multihost_utils.process_allgather(flags.astype(np.int32))     # [P, N]
  return np.asarray(gathered).reshape(jax.process_count(), -1).any(axis=0)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `'data'`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raises a clear error when the batch cannot be split evenly over the mesh."""
  devices = mesh.devices.size
  if batch_size % devices:
    raise ValueError(
        f'Batch size {batch_size} is not divisible by the {devices} devices of the mesh; '
        f'use a multiple of {devices} (e.g. {devices * max(1, batch_size // devices)}).')


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a host batch (pytree of arrays with a leading batch axis) on the mesh.

  On one process this is a `device_put`; with several processes each passes its
  own rows and `jax.make_array_from_process_local_data` assembles the global batch.
  """
  sharding = data_sharding(mesh)
  leaves = jax.tree.leaves(batch)
  if leaves:
    check_batch_size(np.shape(leaves[0])[0] * jax.process_count(), mesh)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def shard_local_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a host batch on a mesh of this process's devices (`make_local_mesh`).

  Rows are padded to a multiple of the device count by repeating the last row,
  with `mask` False on the added rows (consumers select rows by `mask`).
  """
  rows = np.shape(jax.tree.leaves(batch)[0])[0]
  extra = -rows % mesh.devices.size
  if extra:
    batch = {key: np.concatenate([np.asarray(value), np.repeat(np.asarray(value)[-1:], extra, 0)])
             for key, value in batch.items()}
    batch['mask'][rows:] = False
  return jax.device_put(batch, data_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree (parameters, optimizer state) on every device of the mesh."""
  return jax.device_put(tree, replicated_sharding(mesh))
