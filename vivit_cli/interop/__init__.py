"""Interop with the reference implementations: their checkpoints in, Hugging Face out.

  convert_scenic(checkpoint, out, sets)   Scenic ViViT msgpack (models 1-4, tubelet/frame, token/gap)
  convert_hf(model_dir, out, sets)        transformers VivitForVideoClassification folder
  convert_vit(file, out, sets)            image ViT (.npz of vision_transformer / big_vision, Scenic msgpack)
  export_hf(run_or_checkpoint, out)       model 1 -> a folder `VivitForVideoClassification.from_pretrained` loads

A converted folder (see `writer.py`) is what `train.checkpoint.load` reads, so `vivit eval`, `vivit predict`
and `model.init_from` take it like a trained run. Every function returns a small JSON-able summary.
Nothing here imports JAX at module level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vivit_cli.errors import VivitError

from . import writer
from .infer import build_config, infer
from .tree import to_float32


def _not_the_source(out: str | Path, source: str | Path) -> None:
    """Writing into the folder being read would replace its config.json with ours (or HF's with ours)."""
    src = Path(source).expanduser().resolve()
    if Path(out).expanduser().resolve() == (src if src.is_dir() else src.parent):
        raise VivitError(f"--out {out}: the folder being converted; choose a new folder")


def _summary(out: Path, cfg, provenance: dict) -> dict[str, Any]:
    from vivit_cli import config

    m = cfg.model
    return {"out": str(out), "variant": m.variant, "embedding": m.embedding, "tubelet": m.tubelet,
            "size": f"hidden {m.hidden}, {m.layers} layers, {m.heads} heads, mlp {m.mlp}",
            "classifier": m.classifier, "input": f"{cfg.data.frames}x{cfg.data.crop}x{cfg.data.crop}",
            "num_classes": cfg.data.num_classes, "config_hash": config.config_hash(cfg),
            "notes": provenance.get("notes", [])}


def convert_scenic(checkpoint: str | Path, out: str | Path, sets: list[str] | None = None, *,
                   class_splits: list[int] | None = None, split_names: list[str] | None = None,
                   head: str | None = None) -> dict[str, Any]:
    """A Scenic ViViT checkpoint -> a converted folder. Multi-head checkpoints (Epic Kitchens: one
    output_projection of 300 noun + 97 verb logits) become a multi-head model (`data.heads`; Epic Kitchens' moved to
    verbs then nouns, the `epic:` source's order), named `verb/i`, `noun/j` in labels.txt, unless `head` keeps one
    group (a single-head model)."""
    from . import scenic

    path = scenic.checkpoint_file(checkpoint)
    params, where = scenic.find_params(scenic.read_msgpack(path), str(path))
    params = to_float32(params)
    proj = params.get("output_projection")
    num_classes = int(proj["kernel"].shape[-1]) if isinstance(proj, dict) and "kernel" in proj else 0
    splits = scenic.head_splits(num_classes, class_splits, split_names) if num_classes else None
    if splits and head is None:  # a multi-head model: its heads side by side, in the source's order
        params, splits = scenic.to_source_order(params, splits)
    params, labels = scenic.select_head(params, splits, head)
    inf = infer(params)
    if splits and class_splits is None:
        inf.notes.append(f"{num_classes} classes read as Epic Kitchens' heads "
                         f"({', '.join(f'{n} {c}' for n, c in splits)}); labels.txt names them")
    if splits and head is None:
        from vivit_cli import config

        inf.notes.append(f"heads {', '.join(n for n, _ in splits)} (data.heads), in this order in output_projection")
        sets = [f"data.heads={config.format_heads(splits)}", *(sets or [])]
    cfg = build_config(inf, sets)
    provenance = {"source": "scenic", "file": str(path), "params_at": where, "sha256": writer.file_digest(path),
                  "class_splits": [[n, c] for n, c in splits] if splits else None, "head": head,
                  "inferred": {k: v for k, v in inf.values.items() if not k.startswith("_")}, "notes": inf.notes}
    writer.write_converted(out, cfg, params, labels, provenance)
    return _summary(Path(out), cfg, provenance)


def convert_hf(model_dir: str | Path, out: str | Path, sets: list[str] | None = None) -> dict[str, Any]:
    """A transformers ViViT classification folder -> a converted folder (labels from id2label)."""
    from . import hf

    d = Path(model_dir)
    _not_the_source(out, d)
    if not d.is_dir():
        raise VivitError(f"{d}: not a folder (expected a transformers model folder with config.json)")
    hf_cfg = hf.read_config(d)
    state, weights_file = hf.read_state_dict(d)
    notes: list[str] = []
    params = hf.hf_to_params(state, hf_cfg, notes)
    inf = infer(params)
    inf.notes.extend(notes)
    tubelet = "x".join(str(int(x)) for x in hf_cfg.get("tubelet_size", (2, 16, 16)))
    if tubelet != inf.values["model.tubelet"]:
        raise VivitError(f"config.json tubelet_size={tubelet} contradicts the patch embedding weight "
                         f"({inf.values['model.tubelet']})")
    user = list(sets or [])
    given = {s.partition("=")[0].strip() for s in user}
    implied = [f"data.frames={int(hf_cfg.get('num_frames', 32))}"] if "data.frames" not in given else []
    implied += [f"data.crop={hf.image_side(hf_cfg)}"] if "data.crop" not in given else []
    cfg = build_config(inf, implied + user)
    labels = _hf_labels(hf_cfg, cfg.data.num_classes)
    provenance = {"source": "huggingface", "folder": str(d), "weights": weights_file,
                  "sha256": writer.file_digest(d / weights_file),
                  "inferred": {k: v for k, v in inf.values.items() if not k.startswith("_")}, "notes": inf.notes}
    writer.write_converted(out, cfg, params, labels, provenance)
    return _summary(Path(out), cfg, provenance)


def _hf_labels(hf_cfg: dict, num_classes: int) -> list[str] | None:
    id2label = hf_cfg.get("id2label") or {}
    try:
        labels = [str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in range(num_classes)]
    except (KeyError, TypeError):
        return None
    if all(name == f"LABEL_{i}" for i, name in enumerate(labels)):
        return None  # transformers' placeholders say nothing
    return labels


def convert_vit(file: str | Path, out: str | Path, sets: list[str] | None = None) -> dict[str, Any]:
    """An image ViT -> a one-frame image model for `model.init_from`."""
    from . import vit

    tree, layout = vit.read_vit(file)
    notes: list[str] = []
    params = to_float32(vit.to_image_params(to_float32(tree), notes))
    inf = infer(params)
    inf.notes.extend(notes)
    user = list(sets or [])
    if not any(s.partition("=")[0].strip() == "data.frames" for s in user):
        user = ["data.frames=1"] + user
    cfg = build_config(inf, user)
    path = Path(file)
    provenance = {"source": "vit", "file": str(path), "layout": layout,
                  "sha256": writer.file_digest(path) if path.is_file() else None,
                  "inferred": {k: v for k, v in inf.values.items() if not k.startswith("_")}, "notes": inf.notes}
    writer.write_converted(out, cfg, params, None, provenance)
    return _summary(Path(out), cfg, provenance)


def export_hf(source: str | Path, out: str | Path) -> dict[str, Any]:
    """A model-1 checkpoint (run dir, step folder or converted folder) -> a transformers model folder."""
    from safetensors.numpy import save

    from vivit_cli.eval import restore
    from vivit_cli.io import atomic_write_bytes, atomic_write_json, atomic_write_text

    from . import hf

    # The reader `vivit eval`/`predict` use: any checkpoint kind, shapes checked against the config.
    _not_the_source(out, source)
    restored = restore.load(source)
    cfg, num_classes = restored.cfg, restored.num_classes
    hf.export_check(cfg)
    params = to_float32(restored.params)
    labels = writer.read_labels(restored.home) or list(restore.label_names(cfg, restored.home, num_classes))
    if len(labels) != num_classes:
        raise VivitError(f"{source}: labels.txt has {len(labels)} names for {num_classes} classes")
    hf_cfg = hf.hf_config(cfg, labels)
    state = hf.params_to_hf(params, cfg.model.layers)
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(o / "model.safetensors", save(state, metadata={"format": "pt"}))
    atomic_write_json(o / "preprocessor_config.json", hf.preprocessor_config(cfg))
    atomic_write_text(o / "config.json", json.dumps(hf_cfg, indent=2) + "\n")  # id2label in class order
    return {"out": str(o), "num_classes": num_classes, "input": f"{cfg.data.frames}x{cfg.data.crop}x{cfg.data.crop}",
            "tubelet_size": hf_cfg["tubelet_size"], "layers": cfg.model.layers,
            "note": "pixel_values are (B, T, C, H, W) in [-1, 1]: transpose from this toolkit's (B, T, H, W, C)"}


__all__ = ["convert_hf", "convert_scenic", "convert_vit", "export_hf"]
