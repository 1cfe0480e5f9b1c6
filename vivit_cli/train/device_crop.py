"""The training crop inside the compiled step (data.crop_on_device): the host sends each clip's uint8 window of
the resized frames and its geometry (`data.transforms.crop_window`), and the accelerator does the bilinear
resize, the flip and the scaling to [-1, 1]. They were a third to a half of a prepared-records clip's host CPU
(benchmarks/RESULTS.md, "Prepared records vs mp4 decoding"; moved here, 5.4-7.5x less host CPU per clip than mp4
for 10 s clips). As two products per frame they are about 2.6 G multiply-accumulates for a 32x224x224 clip from a
252-pixel window: 0.2% of ViViT-B model 1's training step (about 3 x 455 in the paper's convention). On this
project's 2-core CPU at the CPU preset the step with it ran at 1.00 / 1.02 / 0.96x the step fed cropped clips
(`vivit bench --mode train -b 32 --num-classes 8 --set data.crop_on_device=...`, 3 interleaved rounds,
2026-12-03), and the host crop it saves is about 5% of that machine, so the default stays off there.

The taps and weights are `transforms._axis_weights`', in window coordinates, applied as two products with
one-hot weight rows, so that the pixels match the host's crop to float32 rounding (tests/test_records.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# TPU and GPU matmuls default to bf16 or tf32 passes: pixels would move by up to a grey level.
_EXACT = jax.lax.Precision.HIGHEST


def _weights(n_in: int, start, length, last, n_out: int):
    """[n_out, n_in] interpolation rows of one axis: at most two non-zero taps each, as `_axis_weights` picks."""
    pos = start + (jnp.arange(n_out, dtype=jnp.float32) + 0.5) * (length / n_out) - 0.5
    pos = jnp.clip(pos, 0, last)
    i0 = jnp.floor(pos)
    i1 = jnp.minimum(i0 + 1, last)
    w = (pos - i0)[:, None]
    taps = jnp.arange(n_in, dtype=jnp.float32)[None, :]
    return jnp.where(taps == i0[:, None], 1 - w, 0.0) + jnp.where(taps == i1[:, None], w, 0.0)


def _crop(window, g, out: int):
    rows = _weights(window.shape[1], g[0], g[2], g[4], out)
    cols = _weights(window.shape[2], g[1], g[3], g[5], out)
    cols = jnp.where(g[6] > 0.5, cols[::-1], cols)
    x = window.astype(jnp.float32)
    x = jnp.einsum("oh,thwc->towc", rows, x, precision=_EXACT)
    x = jnp.einsum("pw,towc->topc", cols, x, precision=_EXACT)
    return x * (2 / 255) - 1


def crop_batch(window, geometry, out: int):
    """uint8 windows [B, T, canvas, canvas, C] and geometry [B, 7] -> float32 clips [B, T, out, out, C] in [-1, 1]."""
    return jax.vmap(lambda w, g: _crop(w, g, out))(window, geometry)
