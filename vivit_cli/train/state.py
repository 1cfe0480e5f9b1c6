"""The train state {"step", "params", "opt_state"} as the train step holds it: per tensor, or flat.

Per tensor (the default): params and optimizer moments are pytrees shaped like the model's params.

Flat, where several CPU devices share one process (`VIVIT_NUM_CPU_DEVICES`, `vivit bench --cpu-devices`) and
nothing is split over a model axis: the params are two f32 vectors, {"decayed", "other"} (the tensors that
take weight decay and those that do not, so optax's mask still applies per buffer), and so is each optimizer
moment. The model reads its tensors as `jnp.split` pieces of them and the gradient comes back as two vectors, so the
clipping norm, AdamW and the update run as a few fused loops instead of a few small ops per tensor (72 tensors
in the tiny model). On a CPU shared by two devices those small ops cost each device a tenth of a tiny train
step (32-34 -> 28-30 ms measured, benchmarks/RESULTS.md); on one device the slices' copies make the flat layout
a few percent slower (the pieces are copies there), so one device keeps the per-tensor layout.

Checkpoints always hold the per-tensor layout (`to_saved` / `from_saved`): a run saved under one layout resumes
under the other, and eval, init-from and interop never see a flat vector.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp

GROUPS = ("decayed", "other")


def _is_flat(x) -> bool:
    return isinstance(x, dict) and tuple(sorted(x)) == GROUPS


def wants_flat(mesh) -> bool:
    """Several CPU devices in this process, no model axis: where the flat layout was measured to pay."""
    return (mesh.shape["model"] == 1 and jax.default_backend() == "cpu" and jax.local_device_count() > 1)


class Layout:
    """How the step holds the state, and the optimizer for it; from the params' shapes (`models.param_shapes`)
    and `cfg.train`."""

    def __init__(self, param_shapes, train_cfg, flat: bool):
        from . import optim

        leaves, self._treedef = jax.tree.flatten(param_shapes)
        self._shapes = [tuple(x.shape) for x in leaves]
        self._groups = [GROUPS[0] if d else GROUPS[1] for d in jax.tree.leaves(optim.decay_mask(param_shapes))]
        self.flat = bool(flat) and len({jnp.dtype(x.dtype) for x in leaves}) == 1  # one vector needs one dtype
        self.param_shapes = param_shapes
        self._jitted: dict = {}
        # The same optax chain either way (so the states match leaf for leaf); flat, weight decay masks groups.
        self._saved_tx, self.schedule = optim.make_optimizer(train_cfg)
        self.tx = optim.make_optimizer(train_cfg, mask=lambda p: {"decayed": True, "other": False})[0] \
            if self.flat else self._saved_tx

    # ---- params --------------------------------------------------------------------------------------
    def ravel(self, params) -> dict:
        """Per-tensor params (or any tree shaped like them) -> {"decayed": vector, "other": vector}."""
        leaves = jax.tree.leaves(params)
        dtype = leaves[0].dtype
        return {g: jnp.concatenate([jnp.ravel(x) for x, gx in zip(leaves, self._groups) if gx == g]
                                   or [jnp.zeros((0,), dtype)]) for g in GROUPS}

    def unravel(self, flat: dict):
        # One split per group, not a slice per tensor: the gradient of a split is one concatenate, that of N
        # slices N zero-padded vectors summed (tiny model, 2 CPU devices: 37 vs 30 ms a step).
        parts = {}
        for g in GROUPS:
            sizes = [math.prod(s) for s, gx in zip(self._shapes, self._groups) if gx == g]
            parts[g] = iter(jnp.split(flat[g], list(itertools.accumulate(sizes))[:-1]) if sizes else [])
        return self._treedef.unflatten([next(parts[g]).reshape(s) for s, g in zip(self._shapes, self._groups)])

    def model_params(self, held):
        """The params as the model takes them, from the step's own (traceable)."""
        return self.unravel(held) if self.flat else held

    # ---- states --------------------------------------------------------------------------------------
    def held_abstract(self):
        params = jax.eval_shape(self.ravel, self.param_shapes) if self.flat else self.param_shapes
        return {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params,
                "opt_state": jax.eval_shape(self.tx.init, params)}

    def saved_abstract(self):
        """The per-tensor state's shapes: what checkpoints hold."""
        return {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": self.param_shapes,
                "opt_state": jax.eval_shape(self._saved_tx.init, self.param_shapes)}

    def to_saved(self, held: dict) -> dict:
        """The held state in the per-tensor layout (traceable; identity when not flat)."""
        if not self.flat:
            return held
        return {"step": held["step"], "params": self.unravel(held["params"]),
                "opt_state": jax.tree.map(lambda x: self.unravel(x) if _is_flat(x) else x, held["opt_state"],
                                          is_leaf=_is_flat)}

    def from_saved(self, saved: dict) -> dict:
        """A per-tensor state in the held layout (traceable). Each flat group pair of the held optimizer state
        is filled from the per-tensor moment at the same place of the (identically built) chain's state."""
        if not self.flat:
            return saved
        return {"step": saved["step"], "params": self.ravel(saved["params"]),
                "opt_state": jax.tree.map(lambda a, s: self.ravel(s) if _is_flat(a) else s,
                                          self.held_abstract()["opt_state"], saved["opt_state"], is_leaf=_is_flat)}

    def shardings(self, mesh, saved: bool = False):
        """Shardings of the held (or saved) state: replicated when flat, else the per-tensor rule."""
        from vivit_cli.runtime import mesh as mesh_lib

        if self.flat and not saved:
            return jax.tree.map(lambda _: mesh_lib.replicated(mesh), self.held_abstract())
        abstract = self.saved_abstract()
        return {"step": mesh_lib.replicated(mesh), "params": mesh_lib.tree_shardings(mesh, abstract["params"]),
                "opt_state": mesh_lib.tree_shardings(mesh, abstract["opt_state"])}

    def _fresh(self, params):
        held = self.ravel(params) if self.flat else params
        return {"step": jnp.int32(0), "params": held, "opt_state": self.tx.init(held)}

    def init(self, params, mesh):
        """A fresh held state (step 0) from per-tensor params on the devices."""
        return self._on(mesh, "init", self._fresh, self.shardings(mesh))(params)

    def _on(self, mesh, name: str, fn, out_shardings):
        """`fn` jitted once per mesh (evals and checkpoints call these again and again)."""
        key = (name, mesh)
        if key not in self._jitted:
            self._jitted[key] = jax.jit(fn, out_shardings=out_shardings)
        return self._jitted[key]

    def tree_params(self, held_params, mesh):
        """The held params as per-tensor arrays on the devices (for an eval)."""
        if not self.flat:
            return held_params
        return self._on(mesh, "unravel", self.unravel, self.shardings(mesh, saved=True)["params"])(held_params)

    def held_from_saved(self, saved: dict, mesh):
        """A restored per-tensor state (on the devices) -> the held state."""
        if not self.flat:
            return saved
        return self._on(mesh, "from_saved", self.from_saved, self.shardings(mesh))(saved)

    def saved_from_held(self, held: dict, mesh):
        """The held state -> per-tensor arrays on the devices, for a checkpoint."""
        if not self.flat:
            return held
        return self._on(mesh, "to_saved", self.to_saved, self.shardings(mesh, saved=True))(held)


def layout_for(mesh, param_shapes, train_cfg) -> Layout:
    return Layout(param_shapes, train_cfg, flat=wants_flat(mesh))
