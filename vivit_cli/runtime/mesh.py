"""The device mesh and how arrays are laid out on it.

One `Mesh` over every device of every process, axes ("data", "model"). The global batch is split over
"data"; parameters are replicated, or, with `train.mesh_model > 1`, each large tensor is split along one
dimension over "model" (fully sharded data parallel within a model group, for ViViT-L/H). XLA's SPMD
partitioner inserts the collectives: the step is written as if for one device.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vivit_cli.errors import VivitError

# Tensors smaller than this stay replicated even on a model axis: splitting them saves nothing and costs
# a collective each.
MIN_SHARDED_SIZE = 2**14


def make_mesh(model_axis: int = 1) -> Mesh:
    devices = np.array(jax.devices())
    if devices.size % model_axis:
        raise VivitError(f"train.mesh_model={model_axis} does not divide the {devices.size} devices")
    if jax.local_device_count() % model_axis:
        # A model group spanning processes would make each process feed partial rows of the batch.
        raise VivitError(f"train.mesh_model={model_axis} must divide the {jax.local_device_count()} devices "
                         "per process")
    return Mesh(devices.reshape(devices.size // model_axis, model_axis), ("data", "model"))


def check_batch(mesh: Mesh, batch_size: int, key: str = "train.batch_size") -> int:
    """The per-process batch; the global batch must split evenly over data shards and processes."""
    shards, procs = mesh.shape["data"], jax.process_count()
    if batch_size % shards or batch_size % procs:
        raise VivitError(f"{key}={batch_size} must be divisible by the {shards} data-parallel devices "
                         f"and {procs} processes")
    return batch_size // procs


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def leaf_sharding(mesh: Mesh, shape) -> NamedSharding:
    """Sharding of one parameter-like leaf: replicated, or its largest divisible dim over "model"."""
    m = mesh.shape["model"]
    size = int(np.prod(shape)) if len(shape) else 1
    if m == 1 or len(shape) < 2 or size < MIN_SHARDED_SIZE:
        return replicated(mesh)
    dims = [i for i, d in enumerate(shape) if d % m == 0]
    if not dims:
        return replicated(mesh)
    spec = [None] * len(shape)
    spec[max(dims, key=lambda i: shape[i])] = "model"
    return NamedSharding(mesh, P(*spec))


def tree_shardings(mesh: Mesh, tree):
    """Shardings for a pytree of arrays or ShapeDtypeStructs. The rule depends on the shape alone, so
    optimizer moments land exactly where their parameters are."""
    return jax.tree.map(lambda x: leaf_sharding(mesh, np.shape(x)), tree)


def put_global(tree, shardings):
    """Host arrays (identical on every process) -> global jax.Arrays with the given shardings."""

    def one(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(one, tree, shardings)


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """This process's rows of the global batch -> global arrays split over "data"."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
