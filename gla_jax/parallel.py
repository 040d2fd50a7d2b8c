"""Data parallelism with `jax.jit` and named shardings (no `pmap`).

The batch is split over the leading axis across a 1-D mesh with axis `'data'`;
parameters, optimizer state and BatchNorm statistics are replicated. Under
`jit` with a globally sharded batch, XLA inserts the gradient all-reduce and
BatchNorm's batch statistics are already global, so the model code needs no
`axis_name`. `initialize_distributed` starts a multi-host run.
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


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree (parameters, optimizer state) on every device of the mesh."""
  return jax.device_put(tree, replicated_sharding(mesh))
