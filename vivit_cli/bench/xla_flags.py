"""XLA CPU settings measured to be faster on this project's models, applied before the backend starts.

`--xla_cpu_experimental_ynn_fusion_type=-reduce`: jaxlib 0.10's CPU backend hands reductions (the softmax's
max/sum, LayerNorm's mean/variance) to YNNPACK fusions that are several times slower than XLA's own loops for
the [B, H, N, N] shapes of attention; without them the tiny model's train step is ~15-35% faster (measured
A/B, concurrently, in benchmarks/RESULTS.md). YNNPACK keeps the matmuls, where it is fast.

Unknown flags abort XLA, so nothing is set unless the installed jaxlib is the series the flag was measured on
and no CUDA plugin is installed; a user's own XLA_FLAGS setting of the same flag wins, and VIVIT_XLA_DEFAULTS=0
turns this off. Pure stdlib: safe to call before JAX is imported (it must be: XLA reads the flags once).
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
    """The `--flag=value` strings that `apply_cpu_defaults` would append (empty when not applicable)."""
    env = os.environ if environ is None else environ
    if env.get("VIVIT_XLA_DEFAULTS", "1") == "0":
        return []
    version = _installed("jaxlib")
    if not version or not version.startswith(MEASURED_JAXLIB) or _has_cuda_plugin():
        return []
    current = env.get("XLA_FLAGS", "")
    return [f"--{k}={v}" for k, v in CPU_FLAGS.items() if f"--{k}" not in current]


def apply_cpu_defaults() -> list[str]:
    """Appends the measured CPU flags to XLA_FLAGS (idempotent). Returns what was added."""
    add = cpu_flags_to_add()
    if add:
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", "")] + add).strip()
    return add
