"""The matmul peak of the current device, measured now: the denominator of MFU.

One square matmul large enough to run at the BLAS/cuBLAS plateau (2048 on a CPU, 8192 on an accelerator),
2*N^3 FLOPs per call. f32 is f32 in, f32 out. bf16 is the better of bf16 -> bf16 and bf16 in with an f32
accumulator (`preferred_element_type`): on AVX-512 BF16 CPUs only the latter uses the bf16 dot-product
instructions (about 2x f32 here, while bf16 -> bf16 is slower than f32), on GPUs both run on tensor cores.
Taking the better of the two keeps MFU a conservative fraction of what the hardware demonstrably does.
"""

from __future__ import annotations

from typing import Any

from .timing import time_calls


def default_size(platform: str) -> int:
    return 2048 if platform == "cpu" else 8192


def matmul_flops_per_s(dtype: str = "float32", *, n: int | None = None, repeats: int = 5,
                       accumulate_f32: bool = False, device=None) -> dict[str, Any]:
    """Measured FLOP/s of an n x n x n matmul in `dtype` ("float32" | "bfloat16")."""
    import jax
    import jax.numpy as jnp

    device = device or jax.devices()[0]
    n = n or default_size(device.platform)
    dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    keys = jax.random.split(jax.random.key(0), 2)
    a, b = (jax.device_put(jax.random.normal(k, (n, n), jnp.float32).astype(dt), device) for k in keys)
    pet = jnp.float32 if accumulate_f32 else None
    mm = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=pet))
    # Accelerators finish one matmul in about a millisecond: chain several per sample so launch overhead vanishes.
    inner = 1 if device.platform == "cpu" else 10
    t = time_calls(lambda: mm(a, b), warmup=2, repeats=repeats, inner=inner)
    return {"flops_per_s": 2.0 * n**3 / t["median_s"], "n": n, "dtype": dtype, "accumulate_f32": accumulate_f32,
            "median_s": t["median_s"]}


def measure_peaks(*, n: int | None = None, repeats: int = 5, dtypes=("float32", "bfloat16")) -> dict[str, Any]:
    """{"float32": FLOP/s, "bfloat16": FLOP/s, "details": [...]} for the first device."""
    out: dict[str, Any] = {"details": []}
    for dtype in dtypes:
        variants = [False] if dtype == "float32" else [False, True]
        best = None
        for acc in variants:
            r = matmul_flops_per_s(dtype, n=n, repeats=repeats, accumulate_f32=acc)
            out["details"].append(r)
            best = r if best is None or r["flops_per_s"] > best["flops_per_s"] else best
        out[dtype] = best["flops_per_s"]
    return out
