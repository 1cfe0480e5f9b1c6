"""The jitted inference forward pass, sharded over every device of every process.

The batch of videos is split over the mesh's "data" axis (parameters replicated, or split over "model"
as in training); each row carries its V views, which the forward pass flattens into V clips. Outputs
come back replicated, so every process holds the whole global batch's per-view logits on the host and
multi-host results need no separate gather.

Inference always runs in float32, whatever `train.precision` the model was trained with: evaluation is a
small part of the cost, and `vivit predict --array` promises the model's exact float32 logits.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from vivit_cli.data.batches import pad_rows
from vivit_cli.errors import VivitError


def round_batch(requested: int, data_shards: int, processes: int) -> int:
    """The global batch: `requested` rounded up to a multiple of the data-parallel devices and processes
    (padding rows are masked), instead of refusing a batch size that does not divide evenly."""
    if requested <= 0:
        raise VivitError(f"--batch-size={requested}: must be positive")
    unit = math.lcm(data_shards, processes)
    return -(-requested // unit) * unit


def _mesh(cfg):
    import jax

    from vivit_cli.runtime import mesh as mesh_lib

    model_axis = cfg.train.mesh_model
    # A model axis sized for the training slice may not fit this machine; data parallelism alone always does.
    if jax.device_count() % model_axis or jax.local_device_count() % model_axis:
        model_axis = 1
    return mesh_lib.make_mesh(model_axis)


class Forward:
    """`Forward(cfg, params, num_classes)(local_video [b, V, T, H, W, 3]) -> host float32 [global_b, V, C]`.

    Every process calls it with its own `local_batch` rows at the same time (SPMD); the result is the
    global batch in process order. `extra` host arrays of shape [b] (labels, indices, masks) travel the
    same way and come back gathered (as do [b, ...] ones: a multi-head model's labels [b, H]).
    """

    def __init__(self, cfg, params, num_classes: int):
        import jax

        from vivit_cli import models
        from vivit_cli.runtime import mesh as mesh_lib

        self._jax, self._mesh_lib = jax, mesh_lib
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, precision="float32"))
        self.cfg, self.num_classes = cfg, num_classes
        self.mesh = _mesh(cfg)
        self.data_shards = int(self.mesh.shape["data"])
        self.processes = jax.process_count()
        self.param_shardings = mesh_lib.tree_shardings(self.mesh, params)
        self.params = mesh_lib.put_global(params, self.param_shardings)
        self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
        self.replicated = mesh_lib.replicated(self.mesh)
        model = models.build_model(cfg, num_classes)

        def forward(p, video, extra):
            b, v = video.shape[:2]
            logits = model.apply({"params": p}, video.reshape((b * v,) + video.shape[2:]), train=False)
            return logits.astype(jax.numpy.float32).reshape(b, v, -1), extra

        self._fn = jax.jit(forward, in_shardings=(self.param_shardings, self.batch_sharding, self.batch_sharding),
                           out_shardings=self.replicated)
        self._compiled: dict = {}
        self.compile_seconds = 0.0

    def global_batch(self, requested: int) -> int:
        return round_batch(requested, self.data_shards, self.processes)

    def local_batch(self, requested: int) -> int:
        return self.global_batch(requested) // self.processes

    def _program(self, shape, extra_keys):
        key = (tuple(shape), tuple(extra_keys))
        if key not in self._compiled:
            jax = self._jax
            t0 = time.perf_counter()
            g = shape[0] * self.processes
            video = jax.ShapeDtypeStruct((g,) + tuple(shape[1:]), np.float32, sharding=self.batch_sharding)
            extra = {k: jax.ShapeDtypeStruct((g, *tail), dt, sharding=self.batch_sharding)
                     for k, dt, tail in extra_keys}
            self._compiled[key] = self._fn.lower(self.params, video, extra).compile()
            self.compile_seconds += time.perf_counter() - t0
        return self._compiled[key]

    def compile(self, local_shape, extra: dict | None = None) -> None:
        """Compiles ahead of time, so that timings of the first batch measure the model, not XLA."""
        self._program(local_shape, _extra_keys({k: np.asarray(v) for k, v in (extra or {}).items()}))

    def __call__(self, local_video: np.ndarray, extra: dict | None = None):
        extra = {k: np.asarray(v) for k, v in sorted((extra or {}).items())}
        local_video = np.asarray(local_video, np.float32)
        program = self._program(local_video.shape, _extra_keys(extra))
        video = self._mesh_lib.global_batch({"video": local_video}, self.batch_sharding)["video"]
        extra_g = self._mesh_lib.global_batch(extra, self.batch_sharding) if extra else {}
        logits, extra_out = program(self.params, video, extra_g)
        return np.asarray(logits), {k: np.asarray(v) for k, v in extra_out.items()}


def _extra_keys(extra: dict) -> tuple:
    """What a compiled program depends on of the extra arrays: name, dtype and the shape after the batch axis
    (a multi-head model's labels are [b, H])."""
    return tuple((k, v.dtype, v.shape[1:]) for k, v in sorted(extra.items()))


def predict_rows(fwd: Forward, rows, n: int, batch_size: int) -> np.ndarray:
    """Per-view logits [N, V, C] of N inputs that every process can read whole: `rows(lo, hi)` returns
    float32 [hi - lo, V, T, H, W, 3]. Each process feeds its slice of every global batch; the tail is
    padded with zeros and dropped."""
    g = fwd.global_batch(min(batch_size, max(n, 1)))
    local = g // fwd.processes
    pid = fwd._jax.process_index()
    out = None
    for start in range(0, n, g):
        lo = min(start + pid * local, n)
        part = np.asarray(rows(lo, min(lo + local, n)), np.float32)
        if out is None:
            out = np.empty((n,) + part.shape[1:2] + (fwd.num_classes,), np.float32)
        logits, _ = fwd(pad_rows(part, local))
        take = min(g, n - start)
        out[start:start + take] = logits[:take]
    return out
