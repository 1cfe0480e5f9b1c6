"""The CPU's special paths, in one place, each with the measured reason beside it.

1. XLA flags (`apply_xla_defaults`), applied by the CLI entry point and the benchmark scripts, never on import:

`--xla_cpu_experimental_ynn_fusion_type=-reduce`: jaxlib 0.10's CPU backend hands reductions (the softmax's
max/sum, LayerNorm's mean/variance) to YNNPACK fusions that are several times slower than XLA's own loops for
the [B, H, N, N] shapes of attention; without them the tiny model's train step is ~15-35% faster (measured
A/B, concurrently, in benchmarks/RESULTS.md). YNNPACK keeps the matmuls, where it is fast.

Unknown flags abort XLA, so nothing is set unless the installed jaxlib is the series the flag was measured on
and no CUDA plugin is installed; a user's own XLA_FLAGS setting of the same flag wins, and VIVIT_XLA_DEFAULTS=0
turns this off. Pure stdlib: safe to call before JAX is imported (it must be: XLA reads the flags once).

2. `one_launch_at_a_time`: several CPU devices in one process deadlock on overlapping launches (its docstring).
"""

from __future__ import annotations

import os

CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-reduce"}
MEASURED_JAXLIB = ("0.10.",)


def _installed(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _has_cuda_plugin() -> bool:
    from importlib.util import find_spec

    return any(find_spec(m) is not None for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_cuda14_plugin"))


def cpu_flags_to_add(environ=None) -> list[str]:
    """The `--flag=value` strings that `apply_xla_defaults` would append (empty when not applicable)."""
    env = os.environ if environ is None else environ
    if env.get("VIVIT_XLA_DEFAULTS", "1") == "0":
        return []
    version = _installed("jaxlib")
    if not version or not version.startswith(MEASURED_JAXLIB) or _has_cuda_plugin():
        return []
    current = env.get("XLA_FLAGS", "")
    return [f"--{k}={v}" for k, v in CPU_FLAGS.items() if f"--{k}" not in current]


def apply_xla_defaults() -> list[str]:
    """Appends the measured CPU flags to XLA_FLAGS (idempotent). Returns what was added."""
    add = cpu_flags_to_add()
    if add:
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", "")] + add).strip()
    return add


def one_launch_at_a_time(fn):
    """`fn` (a jitted or compiled program), made to wait for each launch before returning where several devices
    share one process's CPU threads.

    Why: XLA's CPU runtime runs each device's part of a launch as its own task on one shared thread pool (as many
    threads as cores), and a device starts its part of the next launch as soon as its own inputs are ready. Two
    launches can then be in flight on different devices, and with two cores both threads end up waiting in the
    collectives of two different launches: a deadlock, which XLA turns into an abort after 40 s. Measured with
    jaxlib 0.10 on a 2-core machine, both for independent launches (2000 launches of a sum over an array split
    on 2 CPU devices hang every time) and for a train step feeding the next (each device holds its own copy of
    the replicated state, so it does not wait for the other). One device, or a GPU/TPU, needs no guard."""
    import jax

    if jax.default_backend() != "cpu" or jax.local_device_count() < 2:
        return fn

    def call(*args, **kwargs):
        return jax.block_until_ready(fn(*args, **kwargs))

    return call
