"""`run(cfg) -> dict`: what one configured model costs on the current devices.

The train step measured is the trainer's own (`train.step.compile_train_step`: the whole update as one XLA
program, state donated, sharded over the same mesh as `vivit train`), fed a synthetic batch that already lives
on the devices, so the figure is the model's and the step's, not the input pipeline's. The forward pass is the
jitted `model.apply(train=False)` on the same batch; its time per clip is the paper's "runtime" column.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vivit_cli.errors import VivitError
from vivit_cli.runtime import cpu
from vivit_cli.runtime.timing import compile_timed, time_calls, time_stateful

from . import peak as peak_lib

TRAIN_FLOPS_PER_FORWARD = 3  # backward = 2x forward (grads w.r.t. activations and weights): the MFU convention


def model_flops_per_clip(cfg, num_classes: int) -> float:
    """Forward FLOPs of one clip as our model runs it: 2 x the analytic multiply-adds, with a class-token
    readout's last block counted as the one row it computes (`models.flops`). The paper's convention (every
    token through every block) is `describe`'s gflops, a few percent higher for models 1 and 2."""
    from vivit_cli.models.flops import gmacs

    return 2.0 * gmacs(cfg, num_classes, executed=True) * 1e9


def mfu(clips_per_s: float, flops_per_clip: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: useful FLOP/s over the measured peak FLOP/s."""
    if peak_flops <= 0:
        raise ValueError("peak_flops must be positive")
    return clips_per_s * flops_per_clip / peak_flops


def peak_dtype(cfg) -> str:
    """The matmul peak that bounds `cfg`'s train step: bf16 when it trains in bfloat16, else f32."""
    return "bfloat16" if cfg.train.precision == "bfloat16" else "float32"


def devices_peak(per_device: float, devices) -> float:
    """The peak of all `devices` from one device's. The CPU devices of one process (VIVIT_NUM_CPU_DEVICES, the
    tests' fake devices) share its cores and one of them alone already uses all of them: a process counts once
    (one process per host assumed; a slice emulated by several processes on one host is overcounted)."""
    if devices and devices[0].platform == "cpu":
        return per_device * len({d.process_index for d in devices})
    return per_device * len(devices)


def memory(compiled, device) -> dict[str, Any]:
    """peak_memory_bytes: the allocator's high-water mark where the device reports one (GPU/TPU; it covers the
    whole process so far), else XLA's buffer assignment for this program (CPU), which is what the program needs
    at its peak. program_memory_bytes: always the latter, per program."""
    program = None
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        m = None
    if m is not None:
        program = getattr(m, "peak_memory_in_bytes", 0) or (
            m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
        program = int(program) or None
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        stats = None
    if stats and stats.get("peak_bytes_in_use"):
        return {"peak_memory_bytes": int(stats["peak_bytes_in_use"]), "peak_memory_source": "device allocator peak",
                "program_memory_bytes": program}
    return {"peak_memory_bytes": program, "peak_memory_source": "XLA buffer assignment" if program else "unavailable",
            "program_memory_bytes": program}


def _xla_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


@dataclass
class Prepared:
    """Everything a measurement needs, built once: the model, params and a batch already on the devices, and
    the compiled train step / forward pass (compiled lazily, the compile timed)."""

    cfg: Any
    batch: int
    num_classes: int
    model: Any
    params: Any
    data: dict
    mesh: Any
    param_shardings: Any
    seed: int = 0
    compile_seconds: float | None = None
    forward_compile_seconds: float | None = None
    _train: Any = None
    _train_data: Any = None
    _forward: Any = None
    _rng: Any = None
    _state: Any = None

    def state(self):
        """How the trainer builds its train state on this mesh (`train.state.build_state`): its optimizer and
        shardings; built once, so its compiled init is reused by every fresh state."""
        from vivit_cli.train import state as state_lib

        if self._state is None:
            self._state = state_lib.build_state(self.cfg, self.num_classes, self.mesh)
        return self._state

    def train_state(self):
        """A fresh train state (step 0, a copy of the params, a new optimizer state): the step donates it."""
        import jax
        import jax.numpy as jnp

        return self.state().init(jax.tree.map(jnp.copy, self.params))

    def train_step(self):
        """`step(state) -> (state, metrics)`: the trainer's compiled step on this batch."""
        import jax
        import numpy as np

        from vivit_cli.data import pipeline
        from vivit_cli.runtime import mesh as mesh_lib
        from vivit_cli.train import step as step_lib

        if self._train is None:
            repl, bsh = mesh_lib.replicated(self.mesh), mesh_lib.batch_sharding(self.mesh)
            ts = self.state()
            keys = pipeline.train_batch_keys(self.cfg)
            fn = step_lib.compile_train_step(self.cfg, self.model, ts.tx, ts.schedule, self.num_classes, ts.shardings,
                                             {k: bsh for k in keys}, repl)
            self._rng = mesh_lib.put_global(np.asarray(jax.random.PRNGKey(self.seed)), repl)
            self._train_data = {k: self.data[k] for k in keys}
            self._train, self.compile_seconds, _ = compile_timed(fn, self.train_state(), self._train_data, self._rng)
        compiled, data, rng = cpu.one_launch_at_a_time(self._train), self._train_data, self._rng
        return lambda state: compiled(state, data, rng)

    def forward(self):
        """`fwd() -> logits`: the jitted eval-mode forward pass on this batch."""
        import jax

        from vivit_cli.runtime import mesh as mesh_lib

        if self._forward is None:
            model = self.model
            fn = jax.jit(lambda p, v: model.apply({"params": p}, v, train=False),
                         in_shardings=(self.param_shardings, mesh_lib.batch_sharding(self.mesh)),
                         out_shardings=mesh_lib.replicated(self.mesh))
            self._forward, self.forward_compile_seconds, _ = compile_timed(fn, self.params, self.data["video"])
        compiled, params, video = cpu.one_launch_at_a_time(self._forward), self.params, self.data["video"]
        return lambda: compiled(params, video)


def prepare(cfg, *, batch_size: int | None = None, num_classes: int | None = None, seed: int = 0) -> Prepared:
    import jax
    import numpy as np

    from vivit_cli import config, models
    from vivit_cli.runtime import mesh as mesh_lib

    config.validate(cfg)
    nc = int(num_classes or cfg.data.num_classes or models.DEFAULT_NUM_CLASSES)
    batch = int(cfg.train.batch_size if batch_size is None else batch_size)
    if batch < 1:
        raise VivitError(f"--batch-size {batch}: must be >= 1")
    mesh = mesh_lib.make_mesh(cfg.train.mesh_model)
    local_batch = mesh_lib.check_batch(mesh, batch, key="--batch-size")
    rng = np.random.default_rng(seed)
    video = rng.uniform(-1, 1, (local_batch, cfg.data.frames, cfg.data.crop, cfg.data.crop, 3)).astype(np.float32)
    heads = config.head_sizes(cfg) if cfg.data.heads else ()  # a multi-head model's labels are [b, H]
    labels = (np.stack([rng.integers(0, n, local_batch) for n in heads], 1) if heads
              else rng.integers(0, nc, local_batch)).astype(np.int32)
    host = {"video": video, "label": labels}
    if cfg.data.crop_on_device:  # the train step then crops uint8 windows, as training with the key does
        host.update(_windows(cfg, local_batch, rng))
    # On the devices before any timing starts: the figures are the model's, not the input pipeline's.
    data = mesh_lib.global_batch(host, mesh_lib.batch_sharding(mesh))
    param_sh = mesh_lib.tree_shardings(mesh, models.param_shapes(cfg, nc))
    params = jax.jit(lambda r: models.init_params(cfg, nc, r), out_shardings=param_sh)(jax.random.key(seed))
    return Prepared(cfg=cfg, batch=batch, num_classes=nc, model=models.build_model(cfg, nc), params=params,
                    data=data, mesh=mesh, param_shardings=param_sh, seed=seed)


def _windows(cfg, n: int, rng) -> dict:
    """n clips' uint8 windows and geometry (`data.crop_on_device`), cut by the trainer's own draws from random
    4:3 frames at the short side."""
    import numpy as np

    from vivit_cli.data import pipeline, transforms

    spec = pipeline.clip_spec(cfg, flip=True)
    s = spec.short_side
    frames = rng.integers(0, 256, (cfg.data.frames, s, s * 4 // 3, 3), dtype=np.uint8)
    cuts = [transforms.train_window(frames, rng, spec) for _ in range(n)]
    return {"window": np.stack([c[0] for c in cuts]), "geometry": np.stack([c[1] for c in cuts])}


def run(cfg, *, batch_size: int | None = None, num_classes: int | None = None, train: bool = True,
        forward: bool = True, repeats: int = 5, inner: int | None = None, warmup: int = 2,
        peaks: dict[str, Any] | None = None, peak_size: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Measures `cfg`'s model. `peaks` ({"float32": FLOP/s, "bfloat16": FLOP/s}) reuses a measurement made
    earlier in the same process (a sweep of models); by default the peak is measured here.

    Returns a JSON-able dict: train_clips_per_s, train_step_ms, forward_ms_per_clip, model_flops_per_clip,
    achieved_flops, peak_flops (for the configured precision, all devices), mfu, compile_seconds,
    peak_memory_bytes, device, and the config's shape.
    """
    import jax
    import numpy as np

    from vivit_cli import config

    if not (train or forward):
        raise VivitError("bench: nothing to measure (both the train step and the forward pass are off)")
    if repeats < 1:
        raise VivitError(f"bench: repeats={repeats} must be >= 1")
    p = prepare(cfg, batch_size=batch_size, num_classes=num_classes, seed=seed)
    batch, nc = p.batch, p.num_classes
    devices = jax.devices()
    device = devices[0]
    if peaks is None:
        peaks = peak_lib.measure_peaks(n=peak_size)
    dtype_key = peak_dtype(cfg)
    peak_flops = devices_peak(float(peaks[dtype_key]), devices)
    fwd_flops = model_flops_per_clip(cfg, nc)

    result: dict[str, Any] = {
        "variant": cfg.model.variant, "size": cfg.model.size, "hidden": cfg.model.hidden, "layers": cfg.model.layers,
        "heads": cfg.model.heads, "mlp": cfg.model.mlp, "tubelet": cfg.model.tubelet,
        "input": f"{cfg.data.frames}x{cfg.data.crop}x{cfg.data.crop}", "tokens": int(np.prod(config.token_grid(cfg))),
        "precision": cfg.train.precision, "batch_size": batch, "num_classes": nc,
        "device": f"{len(devices)}x {device.platform}:{device.device_kind}", "device_count": len(devices),
        "backend": jax.default_backend(), "jax": jax.__version__,
        "model_flops_per_clip": fwd_flops, "train_flops_per_clip": TRAIN_FLOPS_PER_FORWARD * fwd_flops,
        "peak_flops": peak_flops, "peak_flops_dtype": dtype_key,
        "peak_flops_f32": devices_peak(float(peaks["float32"]), devices) if "float32" in peaks else None,
        "peak_flops_bf16": devices_peak(float(peaks["bfloat16"]), devices) if "bfloat16" in peaks else None,
        "data": "synthetic, device-resident" + (", uint8 windows cropped in the step" if cfg.data.crop_on_device
                                                 else ""), "repeats": repeats,
    }

    if forward:  # first: the train step donates (invalidates) a copy of the params, never `p.params` itself
        fwd = p.forward()
        n_inner = inner or _auto_inner(lambda: fwd())
        timing = time_calls(fwd, warmup=warmup, repeats=repeats, inner=n_inner)
        per_clip = timing["median_s"] / batch
        result.update({
            "forward_compile_seconds": p.forward_compile_seconds,
            "forward_ms_per_clip": 1e3 * per_clip, "forward_ms_per_batch": 1e3 * timing["median_s"],
            "forward_clips_per_s": 1.0 / per_clip, "forward_achieved_flops": fwd_flops / per_clip,
            "forward_mfu": mfu(1.0 / per_clip, fwd_flops, peak_flops),
        })
        if not train:
            result.update(memory(p._forward, device), train_clips_per_s=None, mfu=None)

    if train:
        step = p.train_step()
        probe = [p.train_state()]

        def probe_call():  # the probe's own state: donation would otherwise invalidate the timed one
            probe[0], m = step(probe[0])
            return m

        n_inner = inner or _auto_inner(probe_call)
        del probe
        timing, state = time_stateful(step, p.train_state(), warmup=warmup, repeats=repeats, inner=n_inner)
        step_s = timing["median_s"]
        clips = batch / step_s
        loss = float(jax.device_get(step(state)[1]["loss"]))
        result.update({
            "compile_seconds": p.compile_seconds,
            "train_step_ms": 1e3 * step_s, "train_step_ms_min": 1e3 * timing["min_s"],
            "train_clips_per_s": clips, "achieved_flops": clips * TRAIN_FLOPS_PER_FORWARD * fwd_flops,
            "mfu": mfu(clips, TRAIN_FLOPS_PER_FORWARD * fwd_flops, peak_flops),
            "xla_train_flops_per_step": _xla_flops(p._train),
            "train_inner_steps": n_inner, "train_loss_finite": bool(np.isfinite(loss)),
        }, **memory(p._train, device))
    result["attention"] = attention_path(cfg)
    return result


def attention_path(cfg) -> str:
    """Which attention the compiled programs use, so a silent fall back shows in the figures: the model's own
    choice, made when it is built (`models.attention_choice`)."""
    from vivit_cli import models

    choice = models.attention_choice(cfg)
    if choice.path == "cpu_bf16":
        return "bf16 products, f32 softmax (CPU bf16 mode)"
    if choice.path == "cudnn":
        return "cuDNN fused (flash) attention"
    return f"XLA: cuDNN refused {choice.refused}" if choice.refused else "XLA"


def _auto_inner(call) -> int:
    """Calls per timed sample: enough that a sample lasts ~0.2 s (dispatch jitter is then negligible),
    estimated from one untimed call after a first one (which also allocates)."""
    import jax

    jax.block_until_ready(call())
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    return max(1, min(50, int(0.2 / max(time.perf_counter() - t0, 1e-6))))
