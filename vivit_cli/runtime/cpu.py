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

3. The CPU bf16 mode (`bf16_mode`, `bf16_kernels`): `train.precision=bfloat16` on a CPU keeps activations f32 and
runs every product of the model, forward and backward, as bf16 x bf16 -> f32. CPUs with AVX512-BF16 run that at
about 2x their f32 rate, while a bf16 -> bf16 product runs no faster than f32 there (benchmarks/RESULTS.md).
The kernels are built on first use, so this module still imports no JAX.

4. `seeds_in_turn`: a group's seeds (`train.seeds`) one after another in one program, not vmapped.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple

CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-reduce"}
MEASURED_JAXLIB = ("0.10.",)


def _installed(dist: str) -> str | None:
    # Every command's entry point asks this, and importing importlib.metadata and scanning every distribution took
    # 70 ms of a 0.5 s `vivit --help` (2026-12-02): a wheel's `<name>-<version>.dist-info` folder on sys.path
    # answers in a millisecond; anything else (an egg, a zip) asks importlib.metadata.
    import glob
    import sys

    for entry in sys.path:
        if entry and os.path.isdir(entry):
            found = glob.glob(os.path.join(glob.escape(entry), f"{dist.replace('-', '_')}-*.dist-info"))
            if found:
                return os.path.basename(found[0])[len(dist) + 1:-len(".dist-info")]
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


# ---------------------------------------------------------------------------------------------
# 3. The CPU bf16 mode


def bf16_mode(precision: str, backend: str) -> bool:
    """Whether `train.precision` on `backend` is the CPU's bf16 mode: f32 activations, bf16 matmul operands with
    f32 accumulation (`bf16_kernels`). On accelerators bfloat16 means bf16 activations and products."""
    return precision == "bfloat16" and backend == "cpu"


class Bf16Kernels(NamedTuple):
    matmul: Callable[[Any, Any], Any]  # x [M, K] @ w [K, N] -> f32 [M, N]
    attention: Callable[[Any, Any, Any], Any]  # softmax(q k^T) v over [B, N, H, dh], q pre-scaled


@functools.cache  # built once: the same custom_vjp functions every time, so jit's caches stay warm
def bf16_kernels() -> Bf16Kernels:
    """The CPU bf16 mode's two kernels, each with its backward written out, so that every product of both passes
    is bf16 x bf16 -> f32: autodiff of the plain products would feed the f32 cotangents into f32 x bf16 products,
    which run at the f32 rate."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def matmul(x, w):
        """x [M, K] @ w [K, N] with bf16 operands and f32 accumulation and result."""
        return matmul_fwd(x, w)[0]

    def matmul_fwd(x, w):
        x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
        # Zero-size arrays carry the primal dtypes (residuals must be arrays): the cotangents go back in them.
        return (jnp.dot(x16, w16, preferred_element_type=jnp.float32),
                (x16, w16, jnp.zeros(0, x.dtype), jnp.zeros(0, w.dtype)))

    def matmul_bwd(res, g):
        x16, w16, x_like, w_like = res
        g16 = g.astype(jnp.bfloat16)
        dx = jnp.dot(g16, w16.T, preferred_element_type=jnp.float32).astype(x_like.dtype)
        dw = jnp.dot(x16.T, g16, preferred_element_type=jnp.float32).astype(w_like.dtype)
        return dx, dw

    matmul.defvjp(matmul_fwd, matmul_bwd)

    def einsum32(spec, a, b):
        return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)

    @jax.custom_vjp
    def attention(q, k, v):
        """softmax(q k^T) v over [B, N, H, dh], q pre-scaled; the softmax stays f32."""
        return attention_fwd(q, k, v)[0]

    def attention_fwd(q, k, v):
        p = jax.nn.softmax(einsum32("bqhd,bkhd->bhqk", q, k), axis=-1)
        out = einsum32("bhqk,bkhd->bqhd", p, v).astype(q.dtype)
        return out, (q, k, v, p.astype(jnp.bfloat16))

    def attention_bwd(res, g):
        q, k, v, p16 = res
        dv = einsum32("bhqk,bqhd->bkhd", p16, g)
        dp = einsum32("bqhd,bkhd->bhqk", g, v)
        p = p16.astype(jnp.float32)
        ds = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))
        dq = einsum32("bhqk,bkhd->bqhd", ds, k)
        dk = einsum32("bhqk,bqhd->bkhd", ds, q)
        return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)

    attention.defvjp(attention_fwd, attention_bwd)
    return Bf16Kernels(matmul, attention)


# ---------------------------------------------------------------------------------------------
# 4. A group's seeds in turn


def seeds_in_turn(fn, in_axes=0):
    """`fn` over a leading seed axis, as one program that runs the seeds one after another (`jax.lax.map`), each on
    its slice, the outputs stacked back: what `train.seeds` uses on the CPU in place of `jax.vmap`. `in_axes`: 0,
    or a tuple of 0 and None per argument (None: that argument goes whole to every seed).

    Why: vmap turns the seeds' products into batched ones, which XLA's CPU backend runs far below the rate of the
    plain 2-D products one seed's step is made of. Measured on the 2-core AMD host with jaxlib 0.10.2 (2026-12-08,
    3 seeds of the default model 1 step at batch 32, rounds interleaved, benchmarks/RESULTS.md "A group's seeds in
    turn"): one group alone 534-801 clips/s summed over its seeds against 393-460 vmapped (and 535-606 for one seed
    trained alone); two groups at once, as the main job runs them, 705-760 for the machine against 440-505; compile
    4.5 s against 3.2 s. The seeds' copies side by side in one program (no loop) stepped at 491-653 alone but no
    faster than vmap beside a second group, and doubled the main job's compile. On accelerators vmap's batched
    products are what fill the chip; there it stays."""
    import jax

    def call(*args):
        shared = [a is None for a in in_axes] if isinstance(in_axes, tuple) else [False] * len(args)

        def one_seed(mapped):
            it = iter(mapped)
            return fn(*[x if s else next(it) for x, s in zip(args, shared)])

        return jax.lax.map(one_seed, tuple(x for x, s in zip(args, shared) if not s))

    return call
