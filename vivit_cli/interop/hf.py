"""Hugging Face transformers ViViT (`VivitForVideoClassification`, model 1 with a token classifier), both ways.

Names: on disk, `save_pretrained` writes the transformers-4 names (`vivit.encoder.layer.N.attention.attention.query`,
...), which is also what the released `google/vivit-b-16x2-kinetics400` holds; transformers 5 renamed the
modules in memory (`vivit.layers.N.attention.q_proj`, ...). Both are read; the export writes the v4 names,
which every transformers version loads.

Layouts: a Conv3d weight is (D, C, t, h, w) against our (t, h, w, C, D); a Linear weight is (out, in); the
attention projections are flat (H*dh) where ours keep (H, dh). HF feeds (B, T, C, H, W); we feed (B, T, H, W, C).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from vivit_cli.errors import VivitError

# hidden_act values that are exactly the tanh GELU our MLP uses, and those that are the erf GELU.
TANH_GELU = ("gelu_fast", "gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh")
ERF_GELU = ("gelu", "gelu_python")

# (our param path, HF v4 name, transform kind). Per block: prefixes are added below.
GLOBAL_KEYS = (
    ("embedding/kernel", "vivit.embeddings.patch_embeddings.projection.weight", "conv3d"),
    ("embedding/bias", "vivit.embeddings.patch_embeddings.projection.bias", "copy"),
    ("cls", "vivit.embeddings.cls_token", "copy"),
    ("Transformer/posembed_input/pos_embedding", "vivit.embeddings.position_embeddings", "copy"),
    ("Transformer/encoder_norm/scale", "vivit.layernorm.weight", "copy"),
    ("Transformer/encoder_norm/bias", "vivit.layernorm.bias", "copy"),
    ("output_projection/kernel", "classifier.weight", "linear"),
    ("output_projection/bias", "classifier.bias", "copy"),
)
BLOCK_KEYS = (
    ("LayerNorm_0/scale", "layernorm_before.weight", "copy"),
    ("LayerNorm_0/bias", "layernorm_before.bias", "copy"),
    ("MultiHeadDotProductAttention_0/query/kernel", "attention.attention.query.weight", "heads_in"),
    ("MultiHeadDotProductAttention_0/query/bias", "attention.attention.query.bias", "heads_bias"),
    ("MultiHeadDotProductAttention_0/key/kernel", "attention.attention.key.weight", "heads_in"),
    ("MultiHeadDotProductAttention_0/key/bias", "attention.attention.key.bias", "heads_bias"),
    ("MultiHeadDotProductAttention_0/value/kernel", "attention.attention.value.weight", "heads_in"),
    ("MultiHeadDotProductAttention_0/value/bias", "attention.attention.value.bias", "heads_bias"),
    ("MultiHeadDotProductAttention_0/out/kernel", "attention.output.dense.weight", "heads_out"),
    ("MultiHeadDotProductAttention_0/out/bias", "attention.output.dense.bias", "copy"),
    ("LayerNorm_1/scale", "layernorm_after.weight", "copy"),
    ("LayerNorm_1/bias", "layernorm_after.bias", "copy"),
    ("MlpBlock_0/Dense_0/kernel", "intermediate.dense.weight", "linear"),
    ("MlpBlock_0/Dense_0/bias", "intermediate.dense.bias", "copy"),
    ("MlpBlock_0/Dense_1/kernel", "output.dense.weight", "linear"),
    ("MlpBlock_0/Dense_1/bias", "output.dense.bias", "copy"),
)

# transformers 5 module names -> the v4 names on disk (suffixes after `vivit.layers.N.`).
_V5_TO_V4 = (
    ("attention.q_proj.", "attention.attention.query."),
    ("attention.k_proj.", "attention.attention.key."),
    ("attention.v_proj.", "attention.attention.value."),
    ("attention.o_proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
)
_LAYER = re.compile(r"^vivit\.(?:layers|encoder\.layer)\.(\d+)\.(.+)$")


def canonical_name(name: str) -> str:
    """A v4 or v5 state-dict key as its v4 name."""
    m = _LAYER.match(name)
    if not m:
        return name
    rest = m.group(2)
    for new, old in _V5_TO_V4:
        if rest.startswith(new):
            rest = old + rest[len(new):]
            break
    return f"vivit.encoder.layer.{m.group(1)}.{rest}"


def key_table(layers: int) -> list[tuple[str, str, str]]:
    rows = list(GLOBAL_KEYS)
    for i in range(layers):
        rows += [(f"Transformer/encoderblock_{i}/{ours}", f"vivit.encoder.layer.{i}.{hf}", kind)
                 for ours, hf, kind in BLOCK_KEYS]
    return rows


def _to_hf(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    return {
        "copy": lambda a: a,
        "conv3d": lambda a: a.transpose(4, 3, 0, 1, 2),  # (t,h,w,C,D) -> (D,C,t,h,w)
        "linear": lambda a: a.T,
        "heads_in": lambda a: a.reshape(a.shape[0], -1).T,  # (D,H,dh) -> (H*dh, D)
        "heads_bias": lambda a: a.reshape(-1),
        "heads_out": lambda a: a.reshape(-1, a.shape[-1]).T,  # (H,dh,D) -> (D, H*dh)
    }[kind]


def _from_hf(kind: str, heads: int) -> Callable[[np.ndarray], np.ndarray]:
    return {
        "copy": lambda a: a,
        "conv3d": lambda a: a.transpose(2, 3, 4, 1, 0),
        "linear": lambda a: a.T,
        "heads_in": lambda a: a.T.reshape(a.shape[1], heads, -1),
        "heads_bias": lambda a: a.reshape(heads, -1),
        "heads_out": lambda a: a.T.reshape(heads, -1, a.shape[0]),
    }[kind]


# ---------------------------------------------------------------------------------------------------------
# reading a model folder


def read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise VivitError(f"{model_dir}: no config.json (expected a transformers model folder)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VivitError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "vivit":
        got = cfg.get("model_type") if isinstance(cfg, dict) else None
        raise VivitError(f"{path}: model_type is {got!r}, expected 'vivit' (a transformers ViViT model)")
    return cfg


def read_state_dict(model_dir: Path) -> tuple[dict[str, np.ndarray], str]:
    """(state dict as float32 numpy, the file it came from). safetensors first (plain data); the older
    pytorch_model.bin only through torch.load(weights_only=True), which refuses anything but tensors."""
    single, index = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json"
    if single.is_file():
        return _read_safetensors([single]), single.name
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise VivitError(f"{index}: not a safetensors index ({e})") from None
        shards = sorted({model_dir / Path(str(f)).name for f in weight_map.values()})
        return _read_safetensors(shards), index.name
    binary = model_dir / "pytorch_model.bin"
    if binary.is_file():
        return _read_torch_bin(binary), binary.name
    raise VivitError(f"{model_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _read_safetensors(files: list[Path]) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    out: dict[str, np.ndarray] = {}
    for f in files:
        if not f.is_file():
            raise VivitError(f"{f}: shard named in the index is missing")
        try:
            tensors = load_file(str(f))
        except (SafetensorError, OSError, ValueError) as e:
            raise VivitError(f"{f}: not a readable safetensors file ({str(e)[:100]})") from None
        out.update({k: np.asarray(v, np.float32) for k, v in tensors.items()})
    return out


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise VivitError(f"{path}: reading pytorch_model.bin needs torch (pip install 'vivit-cli[hf]'); "
                         "or save the model as safetensors") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refuses pickled code with several exception types
        raise VivitError(f"{path}: not a plain tensor state dict ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(state, Mapping):
        raise VivitError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {k: v.detach().to(torch.float32).numpy() for k, v in state.items() if hasattr(v, "detach")}


def _check_config(hf: Mapping[str, Any], notes: list[str]) -> None:
    act = hf.get("hidden_act", "gelu_fast")
    if act in ERF_GELU:
        msg = (f"config.json hidden_act={act!r} is the erf GELU; this model uses the tanh GELU (as the released "
               "checkpoints were trained), so logits differ slightly (about 3e-5 on ViViT-B)")
        notes.append(msg)
        warnings.warn(msg, stacklevel=3)
    elif act not in TANH_GELU:
        raise VivitError(f"config.json hidden_act={act!r}: only GELU models convert ({', '.join(TANH_GELU)})")
    if int(hf.get("num_channels", 3)) != 3:
        raise VivitError(f"config.json num_channels={hf.get('num_channels')}: only RGB (3) is supported")
    eps = float(hf.get("layer_norm_eps", 1e-6))
    if abs(eps - 1e-6) > 1e-9:
        notes.append(f"config.json layer_norm_eps={eps} differs from this model's 1e-6; logits may differ slightly")
    heads = int(hf.get("num_attention_heads", 12))
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != int(hf.get("hidden_size", 768)):
        raise VivitError(f"config.json head_dim={head_dim}: must be hidden_size / num_attention_heads")


def image_side(hf: Mapping[str, Any]) -> int:
    size = hf.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise VivitError(f"config.json image_size={size}: only square inputs are supported (data.crop)")
        size = size[0]
    return int(size)


def hf_to_params(state: Mapping[str, np.ndarray], hf: Mapping[str, Any], notes: list[str]) -> dict:
    """Our param tree from a VivitForVideoClassification state dict (v4 or v5 names)."""
    from .tree import unflatten

    _check_config(hf, notes)
    named = {canonical_name(k): np.asarray(v) for k, v in state.items()}
    extra = sorted(k for k in named if k.startswith("vivit.pooler."))
    if extra:
        notes.append("ignored the pooler (VivitModel's, unused by the classifier)")
    heads = int(hf.get("num_attention_heads", 12))
    layers = int(hf.get("num_hidden_layers", 12))
    found = {int(m.group(1)) for k in named if (m := _LAYER.match(k))}
    if found and found != set(range(len(found))):
        raise VivitError(f"state dict has layers {sorted(found)[:6]}...: expected 0..{len(found) - 1}")
    if found and len(found) != layers:
        raise VivitError(f"config.json num_hidden_layers={layers}, but the weights hold {len(found)} layers")
    qkv_bias = bool(hf.get("qkv_bias", True))
    flat, used = {}, set(extra)
    for ours, name, kind in key_table(layers):
        if name not in named:
            if kind == "heads_bias" and not qkv_bias:  # no q/k/v bias in the source: ours is zero
                flat[ours] = None
                continue
            if name.startswith("classifier."):
                raise VivitError(f"weights have no {name}: not a VivitForVideoClassification (no classification "
                                 "head; e.g. a bare VivitModel)")
            raise VivitError(f"unknown param layout: the weights have no {name}")
        try:
            flat[ours] = np.ascontiguousarray(_from_hf(kind, heads)(named[name]).astype(np.float32))
        except ValueError:
            raise VivitError(f"{name} has shape {named[name].shape}, which does not fit {heads} heads") from None
        used.add(name)
    unknown = sorted(set(named) - used)
    if unknown:
        raise VivitError(f"unknown param {unknown[0]} in the weights (not part of VivitForVideoClassification)")
    for ours in [k for k, v in flat.items() if v is None]:
        flat[ours] = np.zeros(flat[ours.replace("/bias", "/kernel")].shape[1:], np.float32)
    return unflatten(flat)


# ---------------------------------------------------------------------------------------------------------
# exporting


def export_check(cfg) -> None:
    m = cfg.model
    problems = []
    if m.variant != "spatio_temporal":
        problems.append(f"model.variant={m.variant} (transformers has model 1 only)")
    if m.embedding != "tubelet":
        problems.append(f"model.embedding={m.embedding} (transformers has tubelet embedding only)")
    if m.classifier != "token":
        problems.append(f"model.classifier={m.classifier} (VivitForVideoClassification reads the class token)")
    if problems:
        raise VivitError("cannot export to transformers: " + "; ".join(problems))


def params_to_hf(params: Mapping[str, Any], layers: int) -> dict[str, np.ndarray]:
    from .tree import flatten

    flat = flatten(params)
    out = {}
    for ours, name, kind in key_table(layers):
        if ours not in flat:
            raise VivitError(f"checkpoint has no {ours}")
        out[name] = np.ascontiguousarray(_to_hf(kind)(np.asarray(flat[ours], np.float32)))
    return out


def hf_config(cfg, labels: list[str]) -> dict:
    from vivit_cli.config import parse_tubelet

    m = cfg.model
    return {
        "architectures": ["VivitForVideoClassification"],
        "model_type": "vivit",
        "image_size": cfg.data.crop,
        "num_frames": cfg.data.frames,
        "tubelet_size": list(parse_tubelet(m.tubelet)),  # [t, h, w], as ours
        "num_channels": 3,
        "hidden_size": m.hidden,
        "num_hidden_layers": m.layers,
        "num_attention_heads": m.heads,
        "intermediate_size": m.mlp,
        "hidden_act": "gelu_fast",  # = the tanh GELU of our MLP
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,
        "qkv_bias": True,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        "dtype": "float32",
    }


def preprocessor_config(cfg) -> dict:
    """VivitImageProcessor settings that give this model's input: frames resized, centre-cropped, and
    scaled to [-1, 1] (1/127.5 with the offset), no mean/std."""
    from vivit_cli.data.api import short_side

    crop = cfg.data.crop
    return {
        "image_processor_type": "VivitImageProcessor",
        "do_resize": True, "size": {"shortest_edge": short_side(cfg)}, "resample": 2,
        "do_center_crop": True, "crop_size": {"height": crop, "width": crop},
        "do_rescale": True, "rescale_factor": 1 / 127.5, "offset": True,
        "do_normalize": False, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }
