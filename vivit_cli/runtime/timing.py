"""Timing that means something on an asynchronous runtime: warm-up calls first (compilation, allocator and
thread-pool start-up), then `repeats` samples, each the mean of `inner` back-to-back calls ended by a
`block_until_ready`, and the median of the samples (robust to a neighbour stealing the CPU for a moment).

A training run is timed differently, by its own steps: a `Stopwatch` keeps its training time and the intervals
of timed steps between two logs, and `StepTimes` is what the loop hands the perf-block builder
(`bench.perf.train_perf`), so train/ never imports bench/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from typing import Any, Callable, Iterator


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


class Stopwatch:
    """A training run's clock, in laps between logs.

    `train_seconds` is the run's training time: everything since `start()` but what runs inside `pause()` (an
    eval), plus what a resumed run carried over. `intervals` are the (steps, seconds) of each lap: the steps'
    own time, with the compiling first step (`lap(step, timed=False)`) and `pause(training=True)` (a checkpoint
    save) left out, so they measure the step and not what happens between steps now and then.
    `now` is the time function (tests pass a fake one).
    """

    def __init__(self, clips_per_step: int, seconds: float = 0.0, now: Callable[[], float] = time.time):
        self.clips_per_step = clips_per_step
        self.train_seconds = float(seconds)
        self.intervals: list[tuple[int, float]] = []
        self._now = now
        self._mark = self._step = None

    def start(self, step: int) -> None:
        """Starts the clock after `step` completed steps."""
        self._mark, self._step = self._now(), step

    def lap(self, step: int, timed: bool = True) -> float:
        """Ends the lap at `step` completed steps; its clips/s (0.0 for a lap of no timed step). timed=False: the
        lap is training time but no interval (the first step, which compiles)."""
        now = self._now()
        steps, seconds = (step - self._step) if timed else 0, now - self._mark
        self.train_seconds += seconds
        if steps:
            self.intervals.append((steps, seconds))
        self._mark, self._step = now, step
        return steps * self.clips_per_step / max(seconds, 1e-9) if steps else 0.0

    @contextlib.contextmanager
    def pause(self, training: bool = False) -> Iterator[None]:
        """Time inside is in no lap; it is training time only if `training` (a checkpoint save, not an eval)."""
        t = self._now()
        try:
            yield
        finally:
            seconds = self._now() - t
            self._mark += seconds
            if training:
                self.train_seconds += seconds


@dataclasses.dataclass(frozen=True)
class StepTimes:
    """What a training run measured of its train step: the perf block's inputs (`bench.perf.train_perf`).

    intervals: (steps, seconds) of the timed steps (`Stopwatch.intervals`); compiled: the step's executable
    (its XLA memory analysis); compile_seconds / compile_source: `compile_timed`'s. None where no step ran (a
    run resumed at its last step)."""

    intervals: tuple[tuple[int, float], ...]
    batch_size: int
    compiled: Any = None
    compile_seconds: float | None = None
    compile_source: str | None = None
