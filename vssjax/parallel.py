"""Device mesh, shardings, and the hop from process-local numpy batches to global jax.Arrays.

One place decides how arrays are laid out over devices, so that the train step, the checkpoint
restore target and the data path always agree. Data parallelism over a `data` axis; parameters and
optimizer state are replicated.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(data: int = -1, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over `data` devices (-1 = all). `Auto` axes: GSPMD propagates the rest."""
  devices = list(devices if devices is not None else jax.devices())
  size = len(devices) if data == -1 else data
  if size > len(devices) or size < 1:
    raise ValueError(f"mesh.data={data} but {len(devices)} devices are available")
  return jax.make_mesh(
      (size,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:size])


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`; the other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh) -> None:
  """Fails early, naming the numbers, when the batch cannot be split evenly."""
  devices = mesh.shape[DATA_AXIS]
  if global_batch % devices:
    raise ValueError(
        f"data.batch_size={global_batch} is not divisible by the {devices} devices of the mesh's "
        f"'{DATA_AXIS}' axis")
  if global_batch % jax.process_count():
    raise ValueError(
        f"data.batch_size={global_batch} is not divisible by the {jax.process_count()} processes")


def to_global(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Each process contributes its local rows; the result is one global array per key."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def replicate_tree(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))
