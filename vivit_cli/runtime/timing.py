"""Timing that means something on an asynchronous runtime: warm-up calls first (compilation, allocator and
thread-pool start-up), then `repeats` samples, each the mean of `inner` back-to-back calls ended by a
`block_until_ready`, and the median of the samples (robust to a neighbour stealing the CPU for a moment)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def block(x: Any) -> Any:
    import jax

    return jax.block_until_ready(x)


def time_calls(fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 5, inner: int = 1) -> dict[str, Any]:
    """Seconds per call of `fn()` (which returns JAX arrays). Returns median, min, max and every sample."""
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError("repeats and inner must be >= 1, warmup >= 0")
    for _ in range(warmup):
        block(fn())
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = None
        for _ in range(inner):
            out = fn()
        block(out)
        samples.append((time.perf_counter() - t0) / inner)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
            "samples_s": samples}


def time_stateful(step: Callable[[Any], tuple[Any, Any]], state: Any, *, warmup: int = 2, repeats: int = 5,
                  inner: int = 1) -> tuple[dict[str, Any], Any]:
    """Like `time_calls` for a step that consumes and returns its state (a donated train step):
    `step(state) -> (state, aux)`. Returns (timings, final state)."""
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError("repeats and inner must be >= 1, warmup >= 0")
    for _ in range(warmup):
        state, aux = step(state)
        block((state, aux))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            state, aux = step(state)
        block((state, aux))
        samples.append((time.perf_counter() - t0) / inner)
    return ({"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
             "samples_s": samples}, state)


def median_step_seconds(intervals) -> float | None:
    """The median seconds per step of a training run timed in intervals of (steps, seconds): each step counts
    at its interval's mean, so a long interval weighs as many steps as it holds. None without timed steps."""
    import numpy as np

    timed = [(seconds / steps, steps) for steps, seconds in intervals if steps > 0]
    if not timed:
        return None
    return float(np.median(np.repeat([v for v, _ in timed], [n for _, n in timed])))


def compile_timed(jitted, *args):
    """(compiled, seconds, source): `jitted` lowered and compiled for `args`, timed. source is "persistent cache"
    when the compilation cache supplied the program (the seconds are then a load, not a compile), else
    "compiled". A later `jitted(*args)` reuses the executable rather than compiling again."""
    import jax

    hits = []

    def listen(event, **_):
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    jax.monitoring.register_event_listener(listen)
    try:
        t0 = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        seconds = time.perf_counter() - t0
    finally:
        jax.monitoring.unregister_event_listener(listen)
    return compiled, seconds, "persistent cache" if hits else "compiled"
