"""The train step before and after a change to the model, compiled in one process and timed in alternation.

Two processes run one after the other see a drifting host (this VM's speed moved 1.5x within minutes on
2026-12-03); one process that alternates rounds of steps between the two programs sees the same host in both.
The "before" programs are today's model with the old code patched back in at trace time:

  slice   q/k/v taken from the fused projection by slicing (the gradient is then pad + add; now jnp.split,
          whose gradient is one concatenate)
  reduce  every bias gradient as XLA's sum over rows (now `layers.add_bias`: a ones-row product)

    python benchmarks/bench_step_ab.py --before slice,reduce --set model.variant=factorised_self_attention
    taskset -c 0 python benchmarks/bench_step_ab.py ...   # one core: a process's share in a two-process sweep
"""

from __future__ import annotations

import argparse
import json
import time
import types

from vivit_cli.runtime import cpu

cpu.apply_xla_defaults()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vivit_cli import config  # noqa: E402
from vivit_cli.bench import core  # noqa: E402
from vivit_cli.models import layers  # noqa: E402


def _slicing_split(x, n, axis):
    m = x.shape[axis] // n
    return [jax.lax.slice_in_dim(x, i * m, (i + 1) * m, axis=axis) for i in range(n)]


def _patch(before: set[str]):
    """Patches `layers` for a trace; returns the undo."""
    saved = layers.add_bias, layers.jnp
    if "reduce" in before:
        layers.add_bias = lambda y, b: y + b
    if "slice" in before:
        layers.jnp = types.SimpleNamespace(**{k: getattr(jnp, k) for k in dir(jnp) if not k.startswith("__")})
        layers.jnp.split = _slicing_split

    def undo():
        layers.add_bias, layers.jnp = saved

    return undo


def _compiled(sets: list[str], before: set[str], batch: int):
    undo = _patch(before)
    try:
        p = core.prepare(config.build(sets, preset=None), batch_size=batch, num_classes=8)
        step, state = p.train_step(), p.train_state()
        state, _ = step(state)  # compiles (and traces, under the patch)
        jax.block_until_ready(state)
    finally:
        undo()
    return step, state


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="slice,reduce", help="comma-separated: slice, reduce")
    ap.add_argument("--set", action="append", default=[], help="a config override (repeatable)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="steps per round and program")
    a = ap.parse_args(argv)
    before = {b for b in a.before.split(",") if b}
    if before - {"slice", "reduce"}:
        raise SystemExit(f"error: unknown --before {sorted(before - {'slice', 'reduce'})}")
    progs = {"before": _compiled(a.set, before, a.batch_size), "after": _compiled(a.set, set(), a.batch_size)}
    ms = {k: [] for k in progs}
    for _ in range(a.rounds):
        for k, (step, state) in progs.items():
            t = time.perf_counter()
            for _ in range(a.steps):
                state, _ = step(state)
            jax.block_until_ready(state)
            ms[k].append((time.perf_counter() - t) / a.steps * 1e3)
            progs[k] = (step, state)
    ratio = np.array(ms["before"]) / np.array(ms["after"])
    out = {"sets": a.set, "before": sorted(before), "batch_size": a.batch_size,
           "step_ms": {k: [round(x, 1) for x in v] for k, v in ms.items()},
           "median_step_ms": {k: round(float(np.median(v)), 1) for k, v in ms.items()},
           "speedup_per_round": [round(float(r), 3) for r in ratio], "speedup_median": round(float(np.median(ratio)), 3)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
