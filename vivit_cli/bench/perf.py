"""`train_perf(...) -> dict`: the figures of `vivit bench`, taken from a real training run for its summary.json
(the `perf` block that `vivit report --perf` shows), so every sweep cell records what it cost.

The difference from `vivit bench`: the clips/s are the run's own steps, input pipeline included (bench feeds a
device-resident batch), so the MFU here is what the run achieved and bench's is what the step alone can do.
"""

from __future__ import annotations

import datetime
from typing import Any

from vivit_cli.runtime.timing import median_step_seconds

from . import core


def train_perf(cfg, num_classes: int, times) -> dict[str, Any]:
    """`times`: the run's `runtime.timing.StepTimes` (the intervals of timed steps, the first compiling step and
    eval/checkpoint time left out; the train step's executable, for its XLA memory analysis; its compile). The
    device's matmul peak for the run's precision is `peak.best_peak`'s: measured here, raised to the best kept
    for this machine that day. `train.run(..., perf=train_perf)` calls it after the final eval."""
    import jax

    from vivit_cli import runtime

    from . import peak as peak_lib

    devices = jax.devices()
    local = jax.local_devices()[0]
    flops = core.model_flops_per_clip(cfg, num_classes)
    train_flops = core.TRAIN_FLOPS_PER_FORWARD * flops
    step_s = median_step_seconds(times.intervals)
    clips = times.batch_size / step_s if step_s else None
    out: dict[str, Any] = {
        "train_clips_per_s": clips, "train_step_ms": None if step_s is None else 1e3 * step_s,
        "timed_steps": int(sum(n for n, _ in times.intervals)),
        "data": "the run's input pipeline (median over its timed steps)",
        "model_flops_per_clip": flops, "train_flops_per_clip": train_flops,
        "achieved_flops": None if clips is None else clips * train_flops,
        "peak_flops": None, "peak_flops_dtype": core.peak_dtype(cfg), "peak_flops_source": None,
        "peak_flops_this_run": None, "mfu": None,
        "compile_seconds": None if times.compile_seconds is None else round(times.compile_seconds, 3),
        "compile_source": times.compile_source,
        "device": runtime.device_description(), "device_count": len(devices), "backend": jax.default_backend(),
        "jax": jax.__version__,
    }
    # Before the peak's matmuls: on a GPU the allocator's high-water mark would otherwise count them.
    out.update(core.memory(times.compiled, local))  # compiled None (no step ran): the device's figure, if any
    if clips is None:  # no step timed (a run resumed at its last checkpoint): no MFU, so no peak to measure
        return out
    try:
        p = peak_lib.best_peak(out["peak_flops_dtype"], device=local)
    except Exception as e:  # noqa: BLE001 - a finished run is never failed by its perf record (e.g. an OOM)
        first = (str(e).splitlines() or [""])[0][:200]
        out["peak_flops_source"] = f"not measured: {type(e).__name__}: {first}"
        return out
    when = datetime.datetime.fromtimestamp(p["measured_at"], datetime.timezone.utc).isoformat(timespec="seconds")
    total = core.devices_peak(p["flops_per_s"], devices)
    out.update(peak_flops=total, peak_flops_source=f"{p['source']}, {when}",
               peak_flops_this_run=None if p["measured_flops_per_s"] is None else
               core.devices_peak(p["measured_flops_per_s"], devices),
               mfu=core.mfu(clips, train_flops, total))
    return out
