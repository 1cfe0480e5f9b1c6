"""Initialisation of video models: tubelet kernels, position-embedding resizing, image-ViT surgery.

All functions here are pure NumPy on param trees, so they work on any checkpoint (ours, Scenic's,
converted Hugging Face weights) without building a model.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vivit_cli.errors import VivitError

# ---------------------------------------------------------------------------------------------
# Tubelet kernels [t, h, w, C, D] from a 2-D patch kernel [h, w, C, D]


def inflate_kernel(kernel_2d: np.ndarray, t: int, method: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """`filter_inflation`: the 2-D kernel replicated over t and divided by t (a static video then gives
    the image model's embedding); `central_frame`: the 2-D kernel in the middle time slice and zeros in
    the other time slices; `random`: a fresh Lecun-normal kernel that ignores the image weights."""
    kernel_2d = np.asarray(kernel_2d)
    h, w, c, d = kernel_2d.shape
    if method == "filter_inflation":
        return np.repeat(kernel_2d[None], t, axis=0) / t
    if method == "central_frame":
        out = np.zeros((t, h, w, c, d), kernel_2d.dtype)
        out[t // 2] = kernel_2d  # zero whole *time* slices (the reference zeroes width columns by mistake)
        return out
    if method == "random":
        rng = rng or np.random.default_rng(0)
        return (rng.standard_normal((t, h, w, c, d)) / np.sqrt(t * h * w * c)).astype(kernel_2d.dtype)
    raise VivitError(f"model.init={method!r}: allowed values are random, filter_inflation, central_frame")


# ---------------------------------------------------------------------------------------------
# Position embeddings


def _resize_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation with aligned end points: every original point whose position lands on the
    new grid keeps its value exactly (e.g. 4 -> 7 keeps the even indices)."""
    n = x.shape[axis]
    if n == size:
        return x
    if n == 1 or size == 1:
        return np.repeat(x.take([0], axis=axis), size, axis=axis) if n == 1 else x.mean(axis=axis, keepdims=True)
    pos = np.arange(size) * (n - 1) / (size - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n - 2)
    frac = (pos - lo).reshape([-1 if i == axis else 1 for i in range(x.ndim)])
    a, b = x.take(lo, axis=axis), x.take(lo + 1, axis=axis)
    return (a * (1 - frac) + b * frac).astype(x.dtype)


def resize_posemb(posemb: np.ndarray, old_grid: tuple[int, int, int], new_grid: tuple[int, int, int],
                  has_cls: bool, new_has_cls: bool | None = None, time: str = "interpolate") -> np.ndarray:
    """Resizes a [1, (1+) t*h*w, D] table to a new (t, h, w) grid, separately in time and in space.

    time="interpolate" resizes along time like space; time="tile" repeats the (resized) spatial table
    over the new frames, which is how an image ViT's table (t=1) becomes a video table. A class-token
    slot is kept, dropped or added (as zeros) to match `new_has_cls`.
    """
    posemb = np.asarray(posemb)
    new_has_cls = has_cls if new_has_cls is None else new_has_cls
    cls, grid = (posemb[:, :1], posemb[:, 1:]) if has_cls else (None, posemb)
    t, h, w = old_grid
    if grid.shape[1] != t * h * w:
        raise VivitError(f"position embedding has {grid.shape[1]} tokens, expected {t}x{h}x{w}={t * h * w}")
    d = grid.shape[-1]
    nt, nh, nw = new_grid
    g = grid.reshape(t, h, w, d)
    g = _resize_axis(_resize_axis(g, 1, nh), 2, nw)
    if time == "tile":
        g = np.repeat(g.mean(axis=0, keepdims=True) if t > 1 else g, nt, axis=0)
    else:
        g = _resize_axis(g, 0, nt)
    out = g.reshape(1, nt * nh * nw, d)
    if new_has_cls:
        cls = cls if cls is not None else np.zeros((1, 1, d), out.dtype)
        out = np.concatenate([cls, out], axis=1)
    return out


# ---------------------------------------------------------------------------------------------
# Image ViT -> video model


def _copy_block(src: Mapping[str, Any], dst: dict, variant: str, temporal_init: str = "zero_out") -> dict:
    """Maps one image-ViT encoder block onto the target's block (model 3 renames and duplicates)."""
    if variant != "factorised_self_attention":
        return {k: src[k] for k in dst}
    out = dict(dst)
    attn = src["MultiHeadDotProductAttention_0"]
    out["LayerNorm_space"] = src["LayerNorm_0"]
    out["MultiHeadDotProductAttention_space"] = attn
    # Both attentions' q/k/v come from the image attention. The temporal output projection: `zero_out` keeps the
    # target's own init (zero under model.temporal_zero_init), so the block starts as the image block; `copy` takes
    # the image's, as Scenic does. The temporal LayerNorm stays fresh either way (the image ViT has none).
    time = dict(attn)
    if temporal_init == "zero_out":
        time["out"] = dst["MultiHeadDotProductAttention_time"]["out"]
    elif temporal_init != "copy":
        raise VivitError(f"model.temporal_init={temporal_init!r}: allowed values are zero_out, copy")
    out["MultiHeadDotProductAttention_time"] = time
    out["LayerNorm_mlp"] = src["LayerNorm_1"]
    out["MlpBlock"] = src["MlpBlock_0"]
    return out


def _check_shapes(name: str, got, want) -> None:
    got_shapes = [np.shape(x) for x in _leaves(got)]
    want_shapes = [np.shape(x) for x in _leaves(want)]
    if got_shapes != want_shapes:
        raise VivitError(f"init_from: {name} has shapes {got_shapes[:3]}..., the video model needs {want_shapes[:3]}...")


def _leaves(tree):
    if isinstance(tree, Mapping):
        for k in sorted(tree):
            yield from _leaves(tree[k])
    else:
        yield tree


def inflate_from_image(video_params: Mapping[str, Any], image_params: Mapping[str, Any], cfg,
                       image_grid: tuple[int, int] | None = None) -> dict:
    """Initialises a video model from an image ViT (params in our / Scenic's layout), as the paper does.

    Transformer weights are copied; the patch kernel is inflated per `model.init`; the position
    embedding is resized in space and tiled over time; model 2's spatial encoder comes from the ViT
    and its temporal encoder stays fresh; model 3's time and space attentions both come from the ViT's
    attention. The classification head stays fresh (the label sets differ).
    """
    from vivit_cli.config import parse_tubelet, token_grid

    m = cfg.model
    out = {k: v for k, v in video_params.items()}
    if "Transformer" not in image_params or "embedding" not in image_params:
        raise VivitError("init_from: not an image ViT (expected 'embedding' and 'Transformer' params)")
    src_enc = image_params["Transformer"]
    dst_name = "SpatialTransformer" if m.variant == "factorised_encoder" else "Transformer"
    dst_enc = dict(out[dst_name])

    n_src = sum(1 for k in src_enc if k.startswith("encoderblock_"))
    n_dst = sum(1 for k in dst_enc if k.startswith("encoderblock_"))
    if n_src != n_dst:
        raise VivitError(f"init_from: the image ViT has {n_src} layers, the video model {n_dst} (model.layers)")
    for i in range(n_dst):
        key = f"encoderblock_{i}"
        block = _copy_block(src_enc[key], dict(dst_enc[key]), m.variant, m.temporal_init)
        _check_shapes(f"Transformer/{key}", block, dst_enc[key])
        dst_enc[key] = block
    dst_enc["encoder_norm"] = src_enc["encoder_norm"]

    # Patch embedding.
    kernel = np.asarray(image_params["embedding"]["kernel"])
    if kernel.ndim == 5:  # an image model stored with a 1-frame tubelet kernel
        kernel = kernel[kernel.shape[0] // 2]
    want = np.shape(out["embedding"]["kernel"])
    if m.embedding == "tubelet":
        ft = parse_tubelet(m.tubelet)[0]
        kernel = inflate_kernel(kernel, ft, m.init)
    if kernel.shape != want:
        raise VivitError(f"init_from: patch kernel {kernel.shape} does not fit model.tubelet={m.tubelet} ({want})")
    out["embedding"] = {"kernel": kernel, "bias": np.asarray(image_params["embedding"]["bias"])}

    # Position embedding: spatial resize, then tile over time (model 2's spatial table has no time).
    src_pe = np.asarray(src_enc["posembed_input"]["pos_embedding"])
    src_cls = "cls" in image_params
    n = src_pe.shape[1] - int(src_cls)
    if image_grid is None:
        side = int(round(np.sqrt(n)))
        image_grid = (side, side)
    if image_grid[0] * image_grid[1] != n:
        raise VivitError(f"init_from: image position embedding has {n} tokens, not a {image_grid} grid")
    nt, nh, nw = token_grid(cfg)
    dst_cls = m.classifier == "token"
    if m.variant == "factorised_encoder":
        pe = resize_posemb(src_pe, (1,) + tuple(image_grid), (1, nh, nw), src_cls, dst_cls)
        if dst_cls:
            out["cls_SpatialTransformer"] = np.asarray(image_params["cls"]) if src_cls else out["cls_SpatialTransformer"]
    else:
        pe = resize_posemb(src_pe, (1,) + tuple(image_grid), (nt, nh, nw), src_cls, dst_cls, time="tile")
        if dst_cls and src_cls:
            out["cls"] = np.asarray(image_params["cls"])
    dst_enc["posembed_input"] = {"pos_embedding": pe}
    _check_shapes(f"{dst_name}/posembed_input", dst_enc["posembed_input"], out[dst_name]["posembed_input"])
    out[dst_name] = dst_enc
    return out
