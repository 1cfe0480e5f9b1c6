"""What a param tree (in our / Scenic's layout) says about the model, and the config that follows.

The tree tells the variant (from the names), the sizes (from the shapes), the tubelet (from the embedding
kernel), the classifier (a cls param or not) and the class count (from the head). It cannot tell frames and
crop apart when only their product of tokens is stored (models 1, 3, 4), nor model 1 from model 4 (same
params), nor model 3's attention order: those come from `--set`, checked against the shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from vivit_cli.errors import VivitError

from .tree import blocks, shape_of


@dataclass
class Inferred:
    values: dict[str, Any] = field(default_factory=dict)  # dotted config key -> value
    source: dict[str, str] = field(default_factory=dict)  # dotted config key -> the param it came from
    notes: list[str] = field(default_factory=list)

    def put(self, key: str, value: Any, source: str) -> None:
        self.values[key] = value
        self.source[key] = source


def _encoder_dims(enc: Mapping[str, Any], name: str) -> tuple[int, int, int]:
    """(layers, heads, mlp) of one encoder; every block must agree."""
    names = blocks(enc)
    if not names:
        raise VivitError(f"unknown param layout: {name} has no encoderblock_0")
    found = None
    for b in names:
        blk = enc[b]
        attn = next((k for k in ("MultiHeadDotProductAttention_0", "MultiHeadDotProductAttention_space") if k in blk),
                    None)
        mlp_name = "MlpBlock_0" if "MlpBlock_0" in blk else "MlpBlock"
        if attn is None or mlp_name not in blk:
            raise VivitError(f"unknown param layout: {name}/{b} has {sorted(blk)}")
        q = shape_of(blk, f"{attn}/query/kernel")
        if len(q) != 3:
            raise VivitError(f"{name}/{b}/{attn}/query/kernel has shape {q}: expected [hidden, heads, head_dim]")
        dims = (q[1], shape_of(blk, f"{mlp_name}/Dense_0/kernel")[1])
        if found is not None and dims != found:
            raise VivitError(f"{name}/{b}: heads/mlp {dims} differ from encoderblock_0's {found}")
        found = dims
    return len(names), found[0], found[1]


def infer(params: Mapping[str, Any]) -> Inferred:
    """Everything the tree alone determines, plus the token counts that frames/crop must reproduce."""
    out = Inferred()
    if "embedding" not in params:
        raise VivitError(f"unknown param layout: no embedding/kernel (top-level keys: {', '.join(sorted(params))})")
    kernel = shape_of(params, "embedding/kernel")
    if len(kernel) == 5:
        ft, fh, fw, cin, hidden = kernel
        out.put("model.embedding", "tubelet", "embedding/kernel")
    elif len(kernel) == 4:
        (fh, fw, cin, hidden), ft = kernel, 1
        out.put("model.embedding", "uniform_frame", "embedding/kernel")
    else:
        raise VivitError(f"embedding/kernel has shape {kernel}: expected [t, h, w, 3, D] or [h, w, 3, D]")
    if cin != 3:
        raise VivitError(f"embedding/kernel has {cin} input channels: only RGB (3) is supported")
    out.put("model.tubelet", f"{ft}x{fh}x{fw}", "embedding/kernel")
    out.put("model.hidden", hidden, "embedding/kernel")

    if "output_projection" not in params:
        raise VivitError("unknown param layout: no output_projection (the classification head)")
    head = shape_of(params, "output_projection/kernel")
    if len(head) != 2 or head[0] != hidden:
        raise VivitError(f"output_projection/kernel has shape {head}: expected [{hidden}, classes]")
    out.put("data.num_classes", head[1], "output_projection/kernel")
    if "pre_logits" in params:
        raise VivitError("pre_logits: checkpoints with a representation layer (representation_size) are unsupported")

    if "SpatialTransformer" in params:
        _infer_factorised_encoder(params, out)
    elif "Transformer" in params:
        _infer_joint(params, out)
    else:
        raise VivitError(f"unknown param layout: no Transformer or SpatialTransformer "
                         f"(top-level keys: {', '.join(sorted(params))})")
    return out


def _infer_joint(params, out: Inferred) -> None:
    enc = params["Transformer"]
    first = enc.get("encoderblock_0", {})
    if "MultiHeadDotProductAttention_time" in first:
        out.put("model.variant", "factorised_self_attention",
                "Transformer/encoderblock_0/MultiHeadDotProductAttention_time")
    else:
        # Model 4 has exactly model 1's params; model 1 is the released one, --set model.variant=4 picks the other.
        out.put("model.variant", "spatio_temporal", "Transformer/encoderblock_0")
    layers, heads, mlp = _encoder_dims(enc, "Transformer")
    out.put("model.layers", layers, "Transformer/encoderblock_*")
    out.put("model.heads", heads, "Transformer/encoderblock_0/.../query/kernel")
    out.put("model.mlp", mlp, "Transformer/encoderblock_0/.../Dense_0/kernel")
    token = "cls" in params
    out.put("model.classifier", "token" if token else "gap", "cls")
    n = shape_of(params, "Transformer/posembed_input/pos_embedding")[1] - int(token)
    out.values["_tokens"] = n  # t*h*w: frames and crop must reproduce it


def _infer_factorised_encoder(params, out: Inferred) -> None:
    out.put("model.variant", "factorised_encoder", "SpatialTransformer")
    layers, heads, mlp = _encoder_dims(params["SpatialTransformer"], "SpatialTransformer")
    out.put("model.layers", layers, "SpatialTransformer/encoderblock_*")
    out.put("model.heads", heads, "SpatialTransformer/encoderblock_0/.../query/kernel")
    out.put("model.mlp", mlp, "SpatialTransformer/encoderblock_0/.../Dense_0/kernel")
    token = "cls_SpatialTransformer" in params
    out.put("model.classifier", "token" if token else "gap", "cls_SpatialTransformer")
    out.values["_spatial_tokens"] = shape_of(params, "SpatialTransformer/posembed_input/pos_embedding")[1] - int(token)
    if "TemporalTransformer" not in params:
        out.put("model.temporal_layers", 0, "TemporalTransformer")  # the average-pool baseline
        return
    if ("cls_TemporalTransformer" in params) != token:
        raise VivitError("cls_TemporalTransformer: the spatial and temporal encoders use different classifiers, "
                         "which this model does not support")
    t_layers, t_heads, t_mlp = _encoder_dims(params["TemporalTransformer"], "TemporalTransformer")
    if (t_heads, t_mlp) != (heads, mlp):
        raise VivitError(f"TemporalTransformer: heads/mlp ({t_heads}, {t_mlp}) differ from the spatial encoder's "
                         f"({heads}, {mlp}); this model shares them")
    out.put("model.temporal_layers", t_layers, "TemporalTransformer/encoderblock_*")
    out.values["_frame_tokens"] = shape_of(params, "TemporalTransformer/posembed_input/pos_embedding")[1] - int(token)


# ---------------------------------------------------------------------------------------------------------
# frames and crop


def _square_side(n: int) -> int | None:
    s = math.isqrt(n)
    return s if s * s == n else None


def frames_and_crop(inf: Inferred, user: Mapping[str, Any]) -> None:
    """Fills data.frames / data.crop (and model.sampled_frames for uniform frame sampling) from the position
    embeddings and whatever the user set; contradictions name the position embedding."""
    ft, fh, fw = (int(x) for x in inf.values["model.tubelet"].split("x"))
    if fh != fw:
        raise VivitError(f"embedding/kernel: non-square patches {fh}x{fw} are unsupported (data.crop is square)")
    frames, crop = user.get("data.frames"), user.get("data.crop")
    uniform = inf.values["model.embedding"] == "uniform_frame"

    if "_spatial_tokens" in inf.values:  # model 2 stores space and time separately: no ambiguity
        key = "SpatialTransformer/posembed_input/pos_embedding"
        side = _square_side(inf.values["_spatial_tokens"])
        if side is None:
            raise VivitError(f"{key}: {inf.values['_spatial_tokens']} tokens is not a square grid")
        if crop is not None and crop // fh != side:
            raise VivitError(f"--set data.crop={crop} contradicts {key}: {side}x{side} patches of {fh} mean crop "
                             f"{side * fh}")
        inf.put("data.crop", side * fh, key)
        if "_frame_tokens" in inf.values:
            key = "TemporalTransformer/posembed_input/pos_embedding"
            nt = inf.values["_frame_tokens"]
            _put_frames(inf, nt, ft, frames, uniform, key)
        elif frames is None:
            raise VivitError("data.frames: cannot be inferred for the average-pool baseline (no temporal encoder); "
                             "pass --set data.frames=N")
        return

    key = "Transformer/posembed_input/pos_embedding"
    n = inf.values["_tokens"]
    if crop is not None:
        per_frame = (crop // fh) ** 2
        if crop % fh or n % per_frame:
            raise VivitError(f"--set data.crop={crop} contradicts {key}: {n} tokens are not whole frames of "
                             f"{crop // fh}x{crop // fh} patches")
        _put_frames(inf, n // per_frame, ft, frames, uniform, key)
        inf.put("data.crop", crop, key)
        return
    if frames is not None:
        nt = frames // ft  # uniform sampling of fewer frames than the clip has needs the crop to tell
        side = _square_side(n // nt) if nt and n % nt == 0 else None
        if side is None:
            raise VivitError(f"--set data.frames={frames} contradicts {key}: {n} tokens are not {nt or '?'} "
                             f"square frame grids (pass --set data.crop as well)")
        _put_frames(inf, nt, ft, frames, uniform, key)
        inf.put("data.crop", side * fh, key)
        return
    options = [f"{nt * ft}/{side * fh}" for nt in range(1, n + 1)
               if n % nt == 0 and (side := _square_side(n // nt)) and side >= 2][:6]
    raise VivitError(f"data.frames, data.crop: {key} holds {n} tokens, which cannot tell frames and crop apart; "
                     f"pass --set data.frames=N or --set data.crop=N (frames/crop that fit: {', '.join(options)})")


def _put_frames(inf: Inferred, nt: int, ft: int, frames: int | None, uniform: bool, key: str) -> None:
    if uniform:
        # The model samples nt frames from the clip; with a longer clip, our evenly spread indices may differ
        # from the reference's by one frame.
        if frames is not None and frames < nt:
            raise VivitError(f"--set data.frames={frames} contradicts {key}: the model embeds {nt} sampled frames")
        inf.put("data.frames", frames or nt, key)
        if frames and frames != nt:
            inf.put("model.sampled_frames", nt, key)
            inf.notes.append(f"uniform frame sampling of {nt} of {frames} frames: frame indices follow this "
                             "toolkit's rule (segment centres), which can differ from the reference's by one")
        return
    if frames is not None and frames // ft != nt:
        raise VivitError(f"--set data.frames={frames} contradicts {key}: {nt} temporal tokens of tubelet depth {ft} "
                         f"mean {nt * ft} frames")
    inf.put("data.frames", frames or nt * ft, key)


# ---------------------------------------------------------------------------------------------------------
# the config


def _coerced(key: str, raw: Any) -> Any:
    """`--set` text as the config field's value (aliases resolved), so it compares with what was inferred."""
    from vivit_cli import config

    cfg = config.apply_overrides(config.Config(), {key: raw})
    section, _, name = key.partition(".")
    value = getattr(getattr(cfg, section), name)
    if key == "model.variant":
        value = config.VARIANT_ALIASES.get(str(value), value)
    return value


# Variants whose param trees are identical: the tree says the first, --set may pick the other.
_SAME_PARAMS = {"spatio_temporal": ("spatio_temporal", "factorised_dot_product")}


def build_config(inf: Inferred, sets: list[str] | None, defaults: Mapping[str, Any] | None = None):
    """The resolved Config: inferred values, `defaults` for what the tree cannot tell, then the user's --set.
    A --set that contradicts the checkpoint is an error naming the key and the param it contradicts."""
    from vivit_cli import config
    from vivit_cli.config import SIZES

    user = {k: _coerced(k, v) for k, v in config.parse_sets(sets or []).items()}
    variant = user.get("model.variant")
    if variant is not None and variant in _SAME_PARAMS.get(inf.values["model.variant"], ()):
        inf.put("model.variant", variant, "--set")
    frames_and_crop(inf, user)
    for key, value in user.items():
        if key in inf.values and inf.values[key] != value:
            raise VivitError(f"--set {key}={value} contradicts the checkpoint: {inf.source[key]} means "
                             f"{key}={inf.values[key]}")
    dims = tuple(inf.values[k] for k in ("model.hidden", "model.layers", "model.heads", "model.mlp"))
    size = user.get("model.size")
    if size is not None and SIZES.get(size) != dims:
        raise VivitError(f"--set model.size={size} contradicts the checkpoint: its hidden/layers/heads/mlp are {dims}")
    size = size or next((name for name, d in SIZES.items() if d == dims), None) or \
        next((name for name, d in SIZES.items() if d[0] == dims[0]), "tiny")
    values = {k: v for k, v in inf.values.items() if not k.startswith("_")}
    merged = {**dict(defaults or {}), "model.size": size, **values, **user}
    if values["model.variant"] == "factorised_self_attention" and "model.attention_order" not in user:
        merged["model.attention_order"] = (defaults or {}).get("model.attention_order", "time_space")
        inf.notes.append(f"model 3 attention order is not stored in the params: assumed "
                         f"{merged['model.attention_order']} (Scenic's default); --set model.attention_order to change")
    if values["model.variant"] == "spatio_temporal" and values["model.classifier"] == "gap" and variant is None:
        inf.notes.append("models 1 and 4 have identical params: assumed model 1; "
                         "--set model.variant=factorised_dot_product for model 4")
    return config.build({k: str(v) for k, v in merged.items()})
