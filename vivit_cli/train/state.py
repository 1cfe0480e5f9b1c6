"""The train state {"step", "params", "opt_state"}: the params and every optimizer moment are pytrees shaped like
the model's params, each leaf laid out on the mesh by its shape (`runtime.mesh.tree_shardings`), so an
optimizer moment lands where its parameter is. Checkpoints hold exactly this tree.

One layout since 2026-12-01: a flat one (params and moments as two vectors, over several CPU devices) measured
no faster when re-measured interleaved against this one (benchmarks/RESULTS.md), so it was removed.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp


def init_state(params, tx) -> dict:
    """A fresh state (step 0) of `params` for the optax transformation `tx` (traceable)."""
    return {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params)}


@dataclasses.dataclass(frozen=True)
class TrainState:
    """How a config's train state is built on a mesh (`build_state`): the trainer's and `vivit bench`'s."""

    tx: Any  # the optax transformation (`train.optim.make_optimizer`)
    schedule: Callable  # step -> learning rate
    shardings: dict  # where each leaf of the state lives
    abstract: dict  # the state's ShapeDtypeStructs with those shardings: what a checkpoint restores into
    init: Callable  # params on the devices -> a fresh state (step 0), compiled once


def build_state(cfg, num_classes: int, mesh) -> TrainState:
    from vivit_cli import models
    from vivit_cli.runtime import mesh as mesh_lib

    from . import optim

    tx, schedule = optim.make_optimizer(cfg.train)
    shapes = models.param_shapes(cfg, num_classes)
    abstract = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": shapes,
                "opt_state": jax.eval_shape(tx.init, shapes)}
    # Replicated, or split over the "model" axis by the leaf's shape (scalars, such as the step, replicated).
    shardings = {"step": mesh_lib.replicated(mesh), "params": mesh_lib.tree_shardings(mesh, abstract["params"]),
                 "opt_state": mesh_lib.tree_shardings(mesh, abstract["opt_state"])}
    spec = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return TrainState(tx=tx, schedule=schedule, shardings=shardings, abstract=spec,
                      init=jax.jit(partial(init_state, tx=tx), out_shardings=shardings))
