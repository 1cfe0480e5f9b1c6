"""Measurement core of `vivit bench`: throughput, latency, achieved FLOP/s and MFU on the current devices.

  peak.py     the matmul peak (f32, bf16) measured in the same run, the denominator of MFU
  core.py     `run(cfg, ...) -> dict`: train-step clips/s, forward ms/clip, model FLOPs, MFU, memory, compile time
  perf.py     `train_perf(cfg, nc, times) -> dict`: the same figures for a real training run (summary.json's `perf`
              block), from the `runtime.timing.StepTimes` the loop records; `vivit train` hands it to `train.run`

Timed sampling lives in `runtime.timing`; bench builds on `train` (its step and state), never the reverse.

MFU follows the usual definition (PaLM, Appendix B): model FLOPs per step (forward + backward = 3x the
forward's multiply-adds x 2, analytic, so rematerialisation or padding do not count as useful work) divided by
step time and by the matmul peak that this very process measures on this very device. A peak measured in the
same run keeps the ratio honest on a shared or throttled machine, where a datasheet number would not be.

Nothing here imports JAX at package import time.
"""

from __future__ import annotations


def run(cfg, **kwargs):
    from .core import run as _run

    return _run(cfg, **kwargs)


__all__ = ["run"]
