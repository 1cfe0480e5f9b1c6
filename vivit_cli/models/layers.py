"""Transformer building blocks: attention, MLP, stochastic depth, encoder blocks.

Param names and shapes follow Scenic's (`MultiHeadDotProductAttention_0/{query,key,value,out}`,
`MlpBlock_0/Dense_{0,1}`, `LayerNorm_{0,1}`), so reference checkpoints map onto ours without renaming.
Attention runs by the path the model chose when it was built (`attention`: models/attention.py), handed down
to every attention layer; attention dropout in train mode and the class-token readout's one query in the last
block (`Encoder.first_token_only`, outside the CPU bf16 mode) spell the softmax out instead. Every projection
goes through `matmul`, which in the CPU's bf16 mode (`matmul_dtype`) is runtime/cpu.py's bf16 product.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_cli.runtime.cpu import bf16_kernels

from .attention import attend

Dtype = Any
LN_EPS = 1e-6  # the reference's LayerNorm epsilon; checkpoints are trained with it


def matmul(x, w, dtype: Dtype, matmul_dtype: Dtype | None, contract: int = 1, bias=None):
    """x [..., K1..Kc] against w [K1..Kc, N1..] (c = `contract`), plus `bias` [N1..]: the contraction of every
    projection in the model (Dense, the fused q/k/v, the tubelet embedding), as one 2-D product.
    `matmul_dtype=bf16` is the CPU's bf16 mode (runtime/cpu.py, section 3): bf16 operands, f32 accumulation and
    result. Flattened, because on [B, N, D] inputs XLA's CPU backend transposes each MLP's [B, N, 4D] gradient to
    form the kernel's (2.5 ms of a 120 ms tiny-preset step per block, benchmarks/RESULTS.md "Dense layers as 2-D
    products"), where the 2-D product contracts the row axis in place."""
    c = contract
    lead, k_shape, n_shape = x.shape[:x.ndim - c], w.shape[:c], w.shape[c:]
    k = math.prod(k_shape)
    x2, w2 = x.reshape((-1, k)), w.reshape((k, -1))
    if matmul_dtype is None:
        y = jnp.dot(x2.astype(dtype), w2.astype(dtype))
    else:
        y = bf16_kernels().matmul(x2, w2)
    if bias is not None:  # the bf16 mode keeps XLA's sum: its products are all bf16, and this one was not measured
        y = (add_bias if matmul_dtype is None else jnp.add)(y, bias.reshape(-1).astype(y.dtype))
    return y.reshape(lead + n_shape)


@jax.custom_vjp
def add_bias(y, b):
    """y [M, F] + b [F], whose gradient for b is the row of ones times the gradient: a product, where XLA's CPU
    backend sums the rows of [M, F] by a tree of reduce-windows at a tenth of the matmul's speed (benchmarks/
    RESULTS.md "Bias gradients as products"). The same sum on every backend."""
    return y + b


def _add_bias_fwd(y, b):
    return y + b, None


def _add_bias_bwd(_, g):
    return g, jnp.dot(jnp.ones((1, g.shape[0]), g.dtype), g)[0]


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name=name)


def projection_params(module: nn.Module, in_shape: tuple[int, ...], features: tuple[int, ...],
                      kernel_init=nn.initializers.lecun_normal(), bias_init=nn.initializers.zeros):
    """`module`'s params as flax's DenseGeneral declares them: kernel [*in_shape, *features] and bias [*features],
    f32, each initialiser seeing the flattened shape ([fan_in, fan_out] and [fan_out])."""
    fan_in, fan_out = math.prod(in_shape), math.prod(features)
    kernel = module.param("kernel", lambda key, shape: kernel_init(key, (fan_in, fan_out)).reshape(shape),
                          tuple(in_shape) + tuple(features))
    bias = module.param("bias", lambda key, shape: bias_init(key, (fan_out,)).reshape(shape), tuple(features))
    return kernel, bias


class Dense(nn.Module):
    """flax's Dense (`contract=1`) or DenseGeneral over the last `contract` axes: the same params, names and
    initialisation, applied by `matmul`."""

    features: int | tuple[int, ...]
    contract: int = 1
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    dtype: Dtype = jnp.float32
    matmul_dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x):
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        kernel, bias = projection_params(self, x.shape[x.ndim - self.contract:], features, self.kernel_init,
                                         self.bias_init)
        return matmul(x, kernel, self.dtype, self.matmul_dtype, self.contract, bias).astype(self.dtype)


class _ProjectionParams(nn.Module):
    """The params of a `DenseGeneral(features)` over the last axis, returned rather than applied, so that
    several projections can be fused into one matmul."""

    features: tuple[int, ...]

    @nn.compact
    def __call__(self, fan_in: int):
        return projection_params(self, (fan_in,), self.features, nn.initializers.xavier_uniform())


class MultiHeadAttention(nn.Module):
    """Self-attention over the token axis of `x` [..., N, D].

    `factorised=(t, s)` is model 4's factorised dot product: the input is [B, t*s, D] in t-major order,
    the first half of the heads attend over time (the t tokens sharing a spatial position), the second
    half over space (the s tokens of a frame). Same params as plain attention, as the paper notes.
    """

    num_heads: int
    dtype: Dtype = jnp.float32
    attention_dropout: float = 0.0
    zero_init_out: bool = False
    factorised: tuple[int, int] | None = None
    matmul_dtype: Dtype | None = None
    first_query_only: bool = False  # attend from token 0 only (the class token's readout): see Encoder
    attention: str = "xla"  # the model's attention path, chosen when it is built (models/attention.py)

    @nn.compact
    def __call__(self, x, *, train: bool):
        d = x.shape[-1]
        h, dh = self.num_heads, d // self.num_heads
        # q/k/v keep their own params (`query`, `key`, `value`, as the checkpoints have them) but run as ONE
        # matmul against the kernels concatenated at trace time: a third of the dot launches forward and
        # backward, which is what small CPU models spend their time on. The softmax scale 1/sqrt(dh) is folded
        # into q's kernel and bias ([D, H, dh], tiny) instead of multiplying the [.., H, N, N] logits.
        scale = 1.0 / float(dh) ** 0.5
        (kq, bq), (kk, bk), (kv, bv) = (_ProjectionParams((h, dh), name=n)(d) for n in ("query", "key", "value"))
        if self.first_query_only:  # keys and values from every token, the query from token 0 alone
            kernel = jnp.concatenate([kk, kv], axis=1)  # [D, 2H, dh]
            bias = jnp.concatenate([bk, bv], axis=0).astype(self.dtype)
            kv_ = matmul(x, kernel, self.dtype, self.matmul_dtype, bias=bias).astype(self.dtype)  # [..., N, 2H, dh]
            q = matmul(x[..., :1, :], kq * scale, self.dtype, self.matmul_dtype).astype(self.dtype)
            k, v = jnp.split(kv_, 2, axis=-2)
            out = self._attend(q + (bq * scale).astype(self.dtype), k, v, train)
        else:
            kernel = jnp.concatenate([kq * scale, kk, kv], axis=1)  # [D, 3H, dh]
            bias = jnp.concatenate([bq * scale, bk, bv], axis=0).astype(self.dtype)  # [3H, dh]
            qkv = matmul(x, kernel, self.dtype, self.matmul_dtype, bias=bias).astype(self.dtype)  # [..., N, 3H, dh]
            q, k, v = jnp.split(qkv, 3, axis=-2)
            run = self._attend if self.factorised is None else self._attend_factorised
            out = run(q, k, v, train)
        out_init = nn.initializers.zeros if self.zero_init_out else nn.initializers.xavier_uniform()
        return Dense(d, contract=2, kernel_init=out_init, dtype=self.dtype, matmul_dtype=self.matmul_dtype,
                     name="out")(out)

    def _attend(self, q, k, v, train):
        """q [..., Nq, H, dh] against k, v [..., Nk, H, dh]; Nq is 1 for the class-token readout's last block.
        The model's path (`attention`) runs it, except in the two cases that depend on the call."""
        lead, q_shape = q.shape[:-3], q.shape[-3:]
        q, k, v = (a.reshape((-1,) + a.shape[-3:]) for a in (q, k, v))
        dropout = self.attention_dropout > 0.0 and train
        if dropout or (self.attention != "cpu_bf16" and q.shape[1] != k.shape[1]):
            # The fused kernels have no dropout, and cuDNN's wants equal query and key lengths: spell the
            # softmax out (for the readout's one query, a [B, H, 1, N] softmax is small anyway).
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)  # q carries the 1/sqrt(dh) scale
            w = jax.nn.softmax(logits.astype(jnp.float32)).astype(q.dtype)
            if dropout:
                w = nn.Dropout(self.attention_dropout, deterministic=False)(w)
            out = jnp.einsum("bhqk,bkhd->bqhd", w, v)
        else:
            out = attend(self.attention, q, k, v)
        return out.reshape(lead + q_shape)

    def _attend_factorised(self, q, k, v, train):
        t, s = self.factorised
        b, n, h, dh = q.shape
        half = h // 2

        def over_time(a):  # [B, t, s, half, dh] -> [B*s, t, half, dh]
            return a.reshape(b, t, s, h, dh)[..., :half, :].transpose(0, 2, 1, 3, 4).reshape(b * s, t, half, dh)

        def over_space(a):  # [B, t, s, half, dh] -> [B*t, s, half, dh]
            return a.reshape(b, t, s, h, dh)[..., half:, :].reshape(b * t, s, half, dh)

        ot = self._attend(over_time(q), over_time(k), over_time(v), train)
        ot = ot.reshape(b, s, t, half, dh).transpose(0, 2, 1, 3, 4)
        os_ = self._attend(over_space(q), over_space(k), over_space(v), train).reshape(b, t, s, half, dh)
        return jnp.concatenate([ot, os_], axis=-2).reshape(b, n, h, dh)


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype: Dtype = jnp.float32
    dropout: float = 0.0
    matmul_dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, *, train: bool):
        d = x.shape[-1]
        def dense(f, name):
            return Dense(f, kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(1e-6),
                         dtype=self.dtype, matmul_dtype=self.matmul_dtype, name=name)

        y = dense(self.mlp_dim, "Dense_0")(x)
        y = nn.gelu(y, approximate=True)  # tanh GELU, as the reference checkpoints were trained
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        y = dense(d, "Dense_1")(y)
        return nn.Dropout(self.dropout)(y, deterministic=not train)


def drop_path(x, rate: float, train: bool, module: nn.Module):
    """Stochastic depth: drops the whole residual branch per example."""
    if not train or rate <= 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class EncoderBlock(nn.Module):
    """Pre-norm block: x + MSA(LN(x)), then + MLP(LN(.)). Models 1, 2 and 4 (with `factorised`)."""

    num_heads: int
    mlp_dim: int
    dtype: Dtype = jnp.float32
    dropout: float = 0.0
    attention_dropout: float = 0.0
    droplayer: float = 0.0
    factorised: tuple[int, int] | None = None
    matmul_dtype: Dtype | None = None
    first_token_only: bool = False  # the last block under a class-token readout: returns [B, 1, D]
    attention: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):  # positional: nn.remat marks it static
        y = layer_norm("LayerNorm_0", self.dtype)(x)
        y = MultiHeadAttention(self.num_heads, self.dtype, self.attention_dropout, factorised=self.factorised,
                               matmul_dtype=self.matmul_dtype, first_query_only=self.first_token_only,
                               attention=self.attention, name="MultiHeadDotProductAttention_0")(y, train=train)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        if self.first_token_only:
            x = x[:, :1]
        x = x + drop_path(y, self.droplayer, train, self)
        y = layer_norm("LayerNorm_1", self.dtype)(x)
        y = MlpBlock(self.mlp_dim, self.dtype, self.dropout, self.matmul_dtype, name="MlpBlock_0")(y, train=train)
        return x + drop_path(y, self.droplayer, train, self)


class FactorisedSelfAttentionBlock(nn.Module):
    """Model 3: attention over space and over time in turn (order configurable), then the MLP.

    Input and output are [B, t*s, D] in t-major order. The temporal attention's output projection
    starts at zero (paper Sec. 3.4), so at initialisation the block is the image ViT's block.
    """

    num_heads: int
    mlp_dim: int
    grid: tuple[int, int]  # (t, s)
    order: str = "space_time"
    dtype: Dtype = jnp.float32
    dropout: float = 0.0
    attention_dropout: float = 0.0
    droplayer: float = 0.0
    temporal_zero_init: bool = True
    matmul_dtype: Dtype | None = None
    attention: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):  # positional: nn.remat marks it static
        b, n, d = x.shape
        t, s = self.grid
        for axis in self.order.split("_"):
            y = layer_norm(f"LayerNorm_{axis}", self.dtype)(x)
            if axis == "time":
                y = y.reshape(b, t, s, d).transpose(0, 2, 1, 3)  # attend over t at each spatial position
            else:
                y = y.reshape(b, t, s, d)
            y = MultiHeadAttention(self.num_heads, self.dtype, self.attention_dropout,
                                   zero_init_out=(axis == "time" and self.temporal_zero_init),
                                   matmul_dtype=self.matmul_dtype, attention=self.attention,
                                   name=f"MultiHeadDotProductAttention_{axis}")(y, train=train)
            if axis == "time":
                y = y.transpose(0, 2, 1, 3)
            y = nn.Dropout(self.dropout)(y.reshape(b, n, d), deterministic=not train)
            x = x + drop_path(y, self.droplayer, train, self)
        y = layer_norm("LayerNorm_mlp", self.dtype)(x)
        y = MlpBlock(self.mlp_dim, self.dtype, self.dropout, self.matmul_dtype, name="MlpBlock")(y, train=train)
        return x + drop_path(y, self.droplayer, train, self)


class AddPositionEmbs(nn.Module):
    @nn.compact
    def __call__(self, x):
        pe = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])
        return x + pe.astype(x.dtype)


class Encoder(nn.Module):
    """Position embedding, dropout, `layers` blocks and a final LayerNorm, on [B, N, D]."""

    layers: int
    make_block: Callable[..., nn.Module]  # (layer index, name, first_token_only) -> block
    dtype: Dtype = jnp.float32
    dropout: float = 0.0
    first_token_only: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool):
        """[B, N, D] -> [B, N, D]; with `first_token_only` (a class-token readout), [B, 1, D]: the last block
        then computes only token 0's row. Its keys and values still come from every token, so the class token
        comes out exactly as in the full computation, while the last block's query, output projection and MLP
        run on 1 row instead of N."""
        x = AddPositionEmbs(name="posembed_input")(x)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        for i in range(self.layers):
            last = self.first_token_only and i == self.layers - 1
            x = self.make_block(i, f"encoderblock_{i}", last)(x, train)
        return layer_norm("encoder_norm", self.dtype)(x)


def droplayer_rate(i: int, layers: int, rate: float) -> float:
    """Stochastic depth increases linearly with depth, reaching `rate` at the last layer."""
    return rate * i / max(layers - 1, 1)
