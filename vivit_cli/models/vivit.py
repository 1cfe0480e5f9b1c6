"""The ViViT model zoo: the paper's four variants and the average-pool baseline.

  spatio_temporal            model 1: joint attention over all n_t*n_h*n_w tokens
  factorised_encoder         model 2: spatial encoder per frame, then a temporal encoder over frame tokens
                             (temporal_layers=0 is the paper's average-pool baseline)
  factorised_self_attention  model 3: every block attends over space and over time in turn, then the MLP
  factorised_dot_product     model 4: half the heads attend over time, half over space; model 1's params

Input: video float [B, T, H, W, 3] in [-1, 1]. Output: logits [B, num_classes] in float32.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from . import layers as L

Dtype = Any


def sampled_frame_indices(frames: int, n: int) -> np.ndarray:
    """Uniform frame sampling: the centres of n equal segments of the clip (static, so jit-friendly)."""
    return np.floor((np.arange(n) + 0.5) * frames / n).astype(np.int32)


class TokenEmbedding(nn.Module):
    """Tubelet embedding (3-D kernel t x h x w) or uniform frame sampling (2-D kernel per frame).

    A non-overlapping strided convolution is a reshape plus one matmul; spelling it that way keeps
    the layout explicit and avoids a convolution op. The kernel is [t, h, w, 3, D] for tubelets and
    [h, w, 3, D] for frames, as in the reference checkpoints.
    """

    hidden: int
    patch: tuple[int, int, int]  # (t, h, w); t == 1 and two_d for uniform frame sampling
    two_d: bool = False
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Dtype = jnp.float32
    matmul_dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x):
        b, T, H, W, C = x.shape
        ft, fh, fw = self.patch
        nt, nh, nw = T // ft, H // fh, W // fw
        shape = (fh, fw, C, self.hidden) if self.two_d else (ft, fh, fw, C, self.hidden)
        kernel = self.param("kernel", self.kernel_init, shape).reshape(ft * fh * fw * C, self.hidden)
        bias = self.param("bias", nn.initializers.zeros, (self.hidden,))
        x = x[:, : nt * ft, : nh * fh, : nw * fw]
        x = x.reshape(b, nt, ft, nh, fh, nw, fw, C).transpose(0, 1, 3, 5, 2, 4, 6, 7)
        x = x.reshape(b, nt, nh * nw, ft * fh * fw * C)
        return L.matmul(x, kernel, self.dtype, self.matmul_dtype, bias=bias).astype(self.dtype)  # [B, nt, s, D]


class ViViT(nn.Module):
    """Every variant in one module; `variant` names the token mixing, looked up in VARIANTS (below)."""

    num_classes: int
    variant: str
    hidden: int
    layers: int
    heads: int
    mlp: int
    patch: tuple[int, int, int]
    embedding: str = "tubelet"
    sampled_frames: int = 0
    classifier: str = "token"
    temporal_layers: int = 4
    attention_order: str = "space_time"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    stochastic_depth: float = 0.0
    temporal_zero_init: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Dtype = jnp.float32
    matmul_dtype: Dtype | None = None  # bf16 in the CPU's bf16 mode: see layers.matmul
    attention: str = "xla"  # chosen by models.build_model (models/attention.py)
    remat: bool = False
    # Every token through the last block, as the reference implementations do. The logits are the same (to
    # float rounding); only the equivalence tests and comparisons want it.
    last_block_all_tokens: bool = False

    def _block_cls(self, cls):
        # Gradient checkpointing per block; `train` (argument 2, counting self) picks Python branches.
        return nn.remat(cls, static_argnums=(2,)) if self.remat else cls

    def _encoder(self, name, layers, factorised=None, grid=None, first_token_only=False):
        def make_block(i, block_name, last=False):
            common = dict(num_heads=self.heads, mlp_dim=self.mlp, dtype=self.dtype, matmul_dtype=self.matmul_dtype,
                          attention=self.attention, dropout=self.dropout, attention_dropout=self.attention_dropout,
                          droplayer=L.droplayer_rate(i, layers, self.stochastic_depth), name=block_name)
            if grid is not None:
                return self._block_cls(L.FactorisedSelfAttentionBlock)(
                    grid=grid, order=self.attention_order, temporal_zero_init=self.temporal_zero_init, **common)
            return self._block_cls(L.EncoderBlock)(factorised=factorised, first_token_only=last, **common)

        return L.Encoder(layers, make_block, dtype=self.dtype, dropout=self.dropout, first_token_only=first_token_only,
                         name=name)

    @property
    def _token(self) -> bool:
        """A class-token readout reads only token 0 of the last block's output, so that block computes only
        that row (for ViViT-B model 1, 1/12 of the encoder; for the tiny CPU model, about a fifth)."""
        return self.classifier == "token" and not self.last_block_all_tokens

    def _pool(self, x, name_cls=None):
        """Prepends a class token (returns a pooling fn that reads it back) or pools by mean."""
        if self.classifier == "token":
            cls = self.param(name_cls or "cls", nn.initializers.zeros, (1, 1, x.shape[-1]))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, x.shape[-1])), x], axis=1)
            return x, lambda y: y[:, 0]
        return x, lambda y: y.mean(axis=1)

    @nn.compact
    def __call__(self, video, *, train: bool = False):
        x = video.astype(self.dtype)
        if self.embedding == "uniform_frame" and self.sampled_frames:
            x = x[:, sampled_frame_indices(x.shape[1], self.sampled_frames)]
        x = TokenEmbedding(self.hidden, self.patch, two_d=self.embedding == "uniform_frame",
                           kernel_init=self.kernel_init, dtype=self.dtype, matmul_dtype=self.matmul_dtype,
                           name="embedding")(x)
        x = VARIANTS[self.variant](self, x, train)
        logits = L.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                         matmul_dtype=self.matmul_dtype, name="output_projection")(x)
        return logits.astype(jnp.float32)


# The variants by name: each takes the ViViT module, the embedded tokens [B, n_t, s, D] and `train`, and returns
# the pooled features [B, D] for the head. They run inside ViViT.__call__, so their submodules and params are
# ViViT's (the param tree is Scenic's).
VARIANTS: dict[str, Callable[..., Any]] = {}


def register_variant(name: str):
    def register(fn):
        VARIANTS[name] = fn
        return fn

    return register


@register_variant("spatio_temporal")
def _spatio_temporal(m: ViViT, x, train: bool):
    b, nt, s, d = x.shape
    x, pool = m._pool(x.reshape(b, nt * s, d))
    return pool(m._encoder("Transformer", m.layers, first_token_only=m._token)(x, train=train))


@register_variant("factorised_encoder")
def _factorised_encoder(m: ViViT, x, train: bool):
    # Spatial encoder on each frame's tokens (params shared over time), one token per frame out.
    b, nt, s, d = x.shape
    x, pool = m._pool(x.reshape(b * nt, s, d), "cls_SpatialTransformer")
    x = pool(m._encoder("SpatialTransformer", m.layers, first_token_only=m._token)(x, train=train))
    x = x.reshape(b, nt, d)
    if m.temporal_layers == 0:
        return x.mean(axis=1)  # the average-pool baseline: no temporal interaction at all
    x, pool = m._pool(x, "cls_TemporalTransformer")
    return pool(m._encoder("TemporalTransformer", m.temporal_layers, first_token_only=m._token)(x, train=train))


@register_variant("factorised_self_attention")
def _factorised_self_attention(m: ViViT, x, train: bool):
    b, nt, s, d = x.shape
    return m._encoder("Transformer", m.layers, grid=(nt, s))(x.reshape(b, nt * s, d), train=train).mean(axis=1)


@register_variant("factorised_dot_product")
def _factorised_dot_product(m: ViViT, x, train: bool):  # mean pooling: the config rejects a token classifier
    b, nt, s, d = x.shape
    return m._encoder("Transformer", m.layers, factorised=(nt, s))(x.reshape(b, nt * s, d), train=train).mean(axis=1)
