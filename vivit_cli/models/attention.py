"""Which attention a model runs, chosen once when it is built (`attention_choice`), and the kernels (`attend`).

  "xla"       jax.nn.dot_product_attention's XLA implementation (it materialises [B, H, N, N])
  "cudnn"     cuDNN's fused (flash) kernel: an NVIDIA GPU, bf16/fp16 activations, a head size of at most 128 and
              a multiple of 8; the tokens padded to a multiple of 8 (`padded_attention`)
  "cpu_bf16"  the CPU's bf16 mode: bf16 x bf16 -> f32 products, f32 softmax (runtime.cpu, section 3)

The choice depends only on the config, the backend and VIVIT_ATTENTION, so it is made by `models.build_model`,
handed down as a field of every attention layer, and what `vivit bench` reports. Two cases depend on the call
instead and stay with the layer (layers.MultiHeadAttention._attend): attention dropout in train mode and the
class-token readout's one query spell the softmax out.

cuDNN refuses some setups when a call is traced (its version, the GPU's generation, the head size). Rather than
find that out in the middle of tracing a model, `attention_choice` traces the kernel once on the model's head
size, padded and unpadded (jax's conditions see the token count only through the padding mask), and falls back
to "xla" with one warning and the reason in `Attention.refused`, so the slow, memory-hungry fall back shows in
`vivit bench` and the GPU check. VIVIT_ATTENTION=cudnn makes that refusal an error; VIVIT_ATTENTION=xla forces
"xla" (a cuDNN too old for a shape fails at compile time, not at trace time, and no probe sees it).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Mapping

import jax
import jax.numpy as jnp

from vivit_cli.config import Config
from vivit_cli.runtime import cpu


@dataclass(frozen=True)
class Attention:
    path: str  # "xla" | "cudnn" | "cpu_bf16"
    refused: str | None = None  # cuDNN's refusal at the build-time probe, where "xla" stands in for "cudnn"


def attention_choice(cfg: Config, backend: str | None = None, environ: Mapping[str, str] | None = None) -> Attention:
    """The attention of `cfg`'s model on `backend` (default: JAX's), under `environ`'s VIVIT_ATTENTION."""
    backend = backend or jax.default_backend()
    precision, m = cfg.train.precision, cfg.model
    if cpu.bf16_mode(precision, backend):
        return Attention("cpu_bf16")
    env = (os.environ if environ is None else environ).get("VIVIT_ATTENTION", "").lower()
    dh = m.hidden // m.heads
    if env == "xla" or backend != "gpu" or precision != "bfloat16" or dh % 8 or dh > 128:
        return Attention("xla")
    refused = cudnn_refusal(m.heads, dh, jnp.bfloat16)
    if refused is None:
        return Attention("cudnn")
    if env == "cudnn":
        raise RuntimeError(f"cuDNN attention refused for {refused} (VIVIT_ATTENTION=cudnn)")
    warnings.warn(f"cuDNN attention refused for {refused}; using XLA attention", stacklevel=2)
    return Attention("xla", refused)


def cudnn_refusal(heads: int, dh: int, dtype) -> str | None:
    """None if cuDNN's kernel traces for [1, N, heads, dh] inputs, padded (N = 9) and not (N = 8); else the shape
    and the error, "(1, 9, 2, 48) bfloat16: NotImplementedError: ..."."""
    for n in (8, 9):
        x = jax.ShapeDtypeStruct((1, n, heads, dh), dtype)
        try:
            jax.eval_shape(lambda q, k, v: padded_attention(q, k, v, "cudnn"), x, x, x)
        except (NotImplementedError, RuntimeError, ValueError) as e:  # jax's trace-time refusals
            return f"{x.shape} {jnp.dtype(dtype).name}: {type(e).__name__}: {e}"
    return None


def attend(path: str, q, k, v):
    """softmax(q k^T) v over [B, N, H, dh] (BTNH) inputs by `path`; q carries the 1/sqrt(dh) scale already."""
    if path == "cpu_bf16":
        return cpu.bf16_kernels().attention(q, k, v)
    if path == "cudnn":
        try:
            return padded_attention(q, k, v, "cudnn")
        except (NotImplementedError, RuntimeError, ValueError) as e:
            raise RuntimeError(f"cuDNN attention refused for {tuple(q.shape)} {q.dtype} though the build-time probe "
                               f"accepted it ({type(e).__name__}: {e}); VIVIT_ATTENTION=xla uses XLA's") from e
    return jax.nn.dot_product_attention(q, k, v, scale=1.0)


def padded_attention(q, k, v, implementation: str | None = "cudnn", multiple: int = 8):
    """cuDNN's training kernels refuse odd sequence lengths (jax 0.11), and a class token makes model 1's 3136
    patches 3137, which silently fell back to XLA attention: 74 GB and 0.12 MFU for ViViT-B at batch 8 on an
    H200. Pad the tokens to a multiple of 8 and mask the padded keys out; the padded query rows are sliced off."""
    n = q.shape[1]
    pad = -n % multiple
    if pad == 0:
        return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation=implementation)
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    qp, kp, vp = (jnp.pad(a, widths) for a in (q, k, v))
    lengths = jnp.full((q.shape[0],), n, jnp.int32)
    out = jax.nn.dot_product_attention(qp, kp, vp, scale=1.0, implementation=implementation,
                                       query_seq_lengths=lengths, key_value_seq_lengths=lengths)
    return out[:, :n]
