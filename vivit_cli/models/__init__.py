"""The ViViT model zoo, in Flax Linen.

Why Linen rather than NNX: the toolkit's core is functional (params are a plain pytree that the
train step, Orbax and the converters pass around), Linen's `apply(params, x)` is exactly that, and
its module names give the same param tree as the Scenic reference, so the released checkpoints load
with almost no renaming. NNX's object model adds per-call overhead (about 4 ms/step measured on this
machine with `nnx.jit`) that matters at the tiny CPU sizes of the default sweeps.

  build_model(cfg, num_classes)       -> nn.Module; apply({"params": p}, video, train=...)
  attention_choice(cfg)               -> the attention path build_model gives the model (models/attention.py)
  init_params(cfg, num_classes, rng)  -> params
  describe(cfg, num_classes)          -> variant, token grid, params, GFLOPs (the paper's convention)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vivit_cli.config import Config, parse_tubelet, token_grid

from .flops import gmacs

DEFAULT_NUM_CLASSES = 400  # Kinetics 400: what the paper's parameter counts include

# Bumped by any change that moves what a trained run reports (not by refactors): 2 (2026-11) = every projection
# run as one 2-D product (float rounding moved); 3 (2026-11) = under a class-token readout, the last block of each
# encoder computes only the class token's row; 4 (2026-12-01) = the input geometry (data/transforms.py): frames
# resized to data.eval_resize before the crop x crop views and the training crops. The model code is the same,
# but this is the one version a run records, and its figures move. Run ids hash the config alone, so a run store
# can hold runs of several versions; every summary.json records this, and `vivit report` says so when a table
# mixes them. Runs without it predate version 3.
NUMERICS_VERSION = 4


def numerics_label(version) -> str:
    """How reports and the run store name a run's numerics version (None or NaN: trained before it was recorded)."""
    return "before 3" if version is None or version != version else str(int(version))


def _kernel_init(method: str, embedding: str):
    """From-scratch tubelet kernel init. central_frame zeros whole time slices (not width columns,
    which is the reference's from-scratch bug); filter_inflation repeats one random 2-D kernel over t."""
    import flax.linen as nn
    import jax.numpy as jnp

    base = nn.initializers.lecun_normal()
    if embedding == "uniform_frame" or method == "random":
        return base

    def init(key, shape, dtype=jnp.float32):
        t = shape[0]
        k2d = base(key, shape[1:], dtype)
        if method == "central_frame":
            return jnp.zeros(shape, dtype).at[t // 2].set(k2d)
        return jnp.broadcast_to(k2d, shape) / t  # filter_inflation

    return init


def compute_dtype(cfg: Config):
    import jax.numpy as jnp

    return jnp.bfloat16 if cfg.train.precision == "bfloat16" else jnp.float32


def compute_dtypes(cfg: Config, backend: str | None = None):
    """(activation dtype, matmul operand dtype or None): bfloat16 means bf16 activations and products, except in
    the CPU's bf16 mode (runtime/cpu.py, section 3): f32 activations, bf16 operands accumulated in f32."""
    import jax
    import jax.numpy as jnp

    from vivit_cli.runtime import cpu

    if cpu.bf16_mode(cfg.train.precision, backend or jax.default_backend()):
        return jnp.float32, jnp.bfloat16
    return compute_dtype(cfg), None


def attention_choice(cfg: Config, backend: str | None = None):
    """The model's attention (`Attention(path, refused)`), as `build_model` decides it: models/attention.py."""
    from .attention import attention_choice as choose

    return choose(cfg, backend)


def build_model(cfg: Config, num_classes: int):
    """The ViViT module for `cfg`. Everything that depends on the backend (the dtypes, the attention path) is
    decided here, once, and held as fields of the module."""
    from .vivit import ViViT

    m = cfg.model
    dtype, matmul_dtype = compute_dtypes(cfg)
    return ViViT(
        num_classes=num_classes, variant=m.variant, hidden=m.hidden, layers=m.layers, heads=m.heads, mlp=m.mlp,
        patch=parse_tubelet(m.tubelet), embedding=m.embedding, sampled_frames=m.sampled_frames,
        classifier=m.classifier, temporal_layers=m.temporal_layers, attention_order=m.attention_order,
        dropout=m.dropout, attention_dropout=m.attention_dropout, stochastic_depth=m.stochastic_depth,
        temporal_zero_init=m.temporal_zero_init, kernel_init=_kernel_init(m.init, m.embedding),
        dtype=dtype, matmul_dtype=matmul_dtype, attention=attention_choice(cfg).path, remat=m.remat)


def input_shape(cfg: Config, batch: int = 1) -> tuple[int, ...]:
    return (batch, cfg.data.frames, cfg.data.crop, cfg.data.crop, 3)


def init_params(cfg: Config, num_classes: int, rng) -> dict:
    import jax
    import jax.numpy as jnp

    model = build_model(cfg, num_classes)
    x = jnp.zeros(input_shape(cfg), jnp.float32)
    return jax.jit(lambda r: model.init({"params": r}, x, train=False)["params"])(rng)


def param_shapes(cfg: Config, num_classes: int) -> Any:
    """The param tree as ShapeDtypeStructs, without allocating (fast even for ViViT-H)."""
    import jax
    import jax.numpy as jnp

    model = build_model(cfg, num_classes)
    x = jax.ShapeDtypeStruct(input_shape(cfg), jnp.float32)
    return jax.eval_shape(lambda r, v: model.init({"params": r}, v, train=False)["params"],
                          jax.random.key(0), x)


def count_params(params) -> int:
    import jax

    return int(sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params)))


def describe(cfg: Config, num_classes: int | None = None) -> dict:
    num_classes = num_classes or cfg.data.num_classes or DEFAULT_NUM_CLASSES
    nt, nh, nw = token_grid(cfg)
    params = count_params(param_shapes(cfg, num_classes))
    m = cfg.model
    return {
        "variant": m.variant,
        "embedding": m.embedding,
        "size": m.size,
        "hidden": m.hidden, "layers": m.layers, "heads": m.heads, "mlp": m.mlp,
        "temporal_layers": m.temporal_layers if m.variant == "factorised_encoder" else None,
        "attention_order": m.attention_order if m.variant == "factorised_self_attention" else None,
        "classifier": m.classifier,
        "tubelet": m.tubelet,
        "input": f"{cfg.data.frames}x{cfg.data.crop}x{cfg.data.crop}",
        "token_grid": [nt, nh, nw],
        "tokens": nt * nh * nw,
        "num_classes": num_classes,
        "params": params,
        "gflops": float(f"{gmacs(cfg, num_classes):.4g}"),  # the paper's convention: every token, every block
        "gflops_executed": float(f"{gmacs(cfg, num_classes, executed=True):.4g}"),  # what our model runs
    }


def measure_gflops(cfg: Config, num_classes: int | None = None) -> float:
    """XLA's own count for the compiled forward pass of one clip, in the paper's unit (GMACs = FLOPs / 2)."""
    import jax
    import jax.numpy as jnp

    num_classes = num_classes or cfg.data.num_classes or DEFAULT_NUM_CLASSES
    model = build_model(cfg, num_classes)
    params = param_shapes(cfg, num_classes)
    x = jax.ShapeDtypeStruct(input_shape(cfg), jnp.float32)
    compiled = jax.jit(lambda p, v: model.apply({"params": p}, v, train=False)).lower(params, x).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"]) / 2e9
