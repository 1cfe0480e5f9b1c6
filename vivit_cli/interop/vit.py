"""Image ViTs to initialise video models from, as the paper does: `.npz` files of google-research/vision_transformer
(ViT-B_16.npz, the AugReg files) and of big_vision, and Scenic's ViT baselines (a Flax msgpack checkpoint).

The three name the same weights differently:

  vision_transformer npz   Transformer/posembed_input/pos_embedding (class-token slot included), blocks
                           LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3, head `head`
  big_vision npz           pos_embedding at the top level, added *before* the class token (no slot for it),
                           blocks LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0, head `head`
  Scenic ViT msgpack       our names exactly, head `output_projection`

All become our image model: model 1 with a 2-D patch kernel (`uniform_frame`, tubelet 1xPxP) on one frame,
which is what `vivit pretrain-image` trains and what `model.init_from` inflates into a video model.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vivit_cli.errors import VivitError

from .tree import blocks, unflatten


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, as a flat dict; allow_pickle=False, so object arrays are refused, not run."""
    if not zipfile.is_zipfile(path):
        raise VivitError(f"{path}: not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise VivitError(f"{path}: unreadable .npz ({type(e).__name__}: {str(e)[:100]})") from None


def _numbered(block: Mapping[str, Any], prefix: str) -> list[str]:
    return sorted((k for k in block if re.fullmatch(rf"{prefix}_\d+", k)), key=lambda k: int(k.rsplit("_", 1)[1]))


def _block(src: Mapping[str, Any], where: str) -> dict:
    """One encoder block in our names, whichever numbering the source's Flax version gave it."""
    norms = _numbered(src, "LayerNorm")
    attn = _numbered(src, "MultiHeadDotProductAttention")
    mlp = _numbered(src, "MlpBlock")
    known = set(norms) | set(attn) | set(mlp)
    if len(norms) != 2 or len(attn) != 1 or len(mlp) != 1 or set(src) != known:
        raise VivitError(f"unknown param layout: {where} has {sorted(src)} (expected two LayerNorm, one "
                         "MultiHeadDotProductAttention, one MlpBlock)")
    return {"LayerNorm_0": src[norms[0]], "MultiHeadDotProductAttention_0": src[attn[0]],
            "LayerNorm_1": src[norms[1]], "MlpBlock_0": src[mlp[0]]}


def to_image_params(tree: Mapping[str, Any], notes: list[str]) -> dict:
    """Any of the three layouts -> our image-model params (head included when it can be kept exactly)."""
    tree = dict(tree)
    if "embedding" not in tree or "Transformer" not in tree:
        raise VivitError(f"unknown param layout: an image ViT needs embedding and Transformer "
                         f"(top-level keys: {', '.join(sorted(tree)[:8])})")
    enc = dict(tree["Transformer"])
    kernel = np.asarray(tree["embedding"]["kernel"])
    if kernel.ndim != 4:
        raise VivitError(f"embedding/kernel has shape {kernel.shape}: an image ViT has a 2-D patch kernel [h, w, 3, D]")
    hidden = kernel.shape[-1]
    token = "cls" in tree

    # Position embedding: in the encoder (old layouts) or at the top level (big_vision), maybe without the
    # class-token slot; ours has the slot, and a zero there is exactly "no position embedding for cls".
    if "posembed_input" in enc:
        pe = np.asarray(enc.pop("posembed_input")["pos_embedding"])
    elif "pos_embedding" in enc:
        pe = np.asarray(enc.pop("pos_embedding"))
    elif "pos_embedding" in tree:
        pe = np.asarray(tree["pos_embedding"])
    else:
        raise VivitError("unknown param layout: no pos_embedding (learned position embeddings are required)")
    n = pe.shape[1]
    side = int(round((n - int(token)) ** 0.5))
    if token and side * side != n - 1:
        if int(round(n ** 0.5)) ** 2 != n:
            raise VivitError(f"pos_embedding has {n} tokens: not a square grid (+ class token)")
        pe = np.concatenate([np.zeros((1, 1, hidden), pe.dtype), pe], axis=1)
    elif not token and side * side != n:
        raise VivitError(f"pos_embedding has {n} tokens: not a square grid (and the model has no cls token)")

    out_enc = {"posembed_input": {"pos_embedding": pe}, "encoder_norm": enc.pop("encoder_norm", None)}
    if out_enc["encoder_norm"] is None:
        raise VivitError("unknown param layout: no Transformer/encoder_norm")
    for name in blocks(enc):
        out_enc[name] = _block(enc.pop(name), f"Transformer/{name}")
    if enc:
        raise VivitError(f"unknown param Transformer/{sorted(enc)[0]} in the image ViT")

    out = {"embedding": tree["embedding"], "Transformer": out_enc}
    if token:
        out["cls"] = tree["cls"]
    out["output_projection"] = _head(tree, hidden, notes)
    known = {"embedding", "Transformer", "cls", "pos_embedding", "head", "output_projection", "pre_logits", "MAPHead_0"}
    unknown = sorted(set(tree) - known)
    if unknown:
        raise VivitError(f"unknown param {unknown[0]} in the image ViT")
    return out


def _head(tree: Mapping[str, Any], hidden: int, notes: list[str]) -> dict:
    """The classifier, when our model computes exactly what the source did; else a zero head of the same size
    (the head is dropped by `model.init_from` anyway: the video label set differs)."""
    head = tree.get("head", tree.get("output_projection"))
    classes = int(np.shape(head["kernel"])[-1]) if head is not None else 1
    lossy = [k for k in ("pre_logits", "MAPHead_0") if k in tree]
    if head is not None and not lossy:
        return {"kernel": head["kernel"], "bias": head["bias"]}
    why = f"{' and '.join(lossy)} (not in this model)" if lossy else "no classification head"
    notes.append(f"{why}: the converted head is zero, so use it through model.init_from, not for its logits")
    return {"kernel": np.zeros((hidden, classes), np.float32), "bias": np.zeros((classes,), np.float32)}


def read_vit(path: str | Path) -> tuple[dict, str]:
    """(params tree in the source's own layout, a word for the format)."""
    from .scenic import find_params, read_msgpack

    p = Path(path)
    if not p.exists():
        raise VivitError(f"{p}: no such file")
    if p.is_file() and zipfile.is_zipfile(p):
        flat = read_npz(p)
        # Some files wrap everything in a top-level "params/" (big_vision train checkpoints saved as npz).
        if flat and all(k.startswith("params/") for k in flat):
            flat = {k[len("params/"):]: v for k, v in flat.items()}
        tree = unflatten(flat)
        layout = "big_vision npz" if "pos_embedding" in tree else "vision_transformer npz"
        return tree, layout
    params, where = find_params(read_msgpack(p), str(p))
    return params, f"Flax msgpack ({where})"
