"""Scenic ViViT (and ViT baseline) checkpoints: one Flax msgpack file written by `flax.training.checkpoints`.

The old `flax.optim` train state keeps the params under `optimizer/target`; newer Scenic train states under
`params`. msgpack holds plain data only (arrays, numbers, strings), so reading it runs no code. Scenic's
param names are ours (the model zoo was written to that end), so the tree needs no renaming; what this
module adds is finding the tree, refusing what is not one, and the Epic Kitchens head split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vivit_cli.errors import VivitError

# Epic Kitchens 100: one output_projection whose logits the reference splits into nouns then verbs
# (`dataset_configs.class_splits = [300, 97]`, `split_names = ['noun', 'verb']`).
EPIC_KITCHENS_SPLITS = (("noun", 300), ("verb", 97))


def checkpoint_file(path: str | Path) -> Path:
    """The msgpack file itself, or the newest `checkpoint_<step>` in a checkpoint folder."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise VivitError(f"{p}: no such checkpoint file")
    candidates = [c for c in p.iterdir() if c.is_file() and re.fullmatch(r"checkpoint(_\d+)?", c.name)]
    if not candidates:
        raise VivitError(f"{p}: a folder without a Flax checkpoint file (checkpoint or checkpoint_<step>)")
    return max(candidates, key=lambda c: int(c.name.rsplit("_", 1)[1]) if "_" in c.name else -1)


def _sniff(data: bytes) -> str:
    if data[:4] == b"PK\x03\x04":
        return " (it is a zip archive: the TF SavedModel release? use the Flax 'checkpoint' file; " \
               "an .npz image ViT goes through `vivit convert vit`)"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return " (it is an HDF5 file, e.g. a Keras model)"
    return ""


def read_msgpack(path: str | Path) -> dict:
    """The restored state dict; a truncated or foreign file is a one-line VivitError."""
    from flax.serialization import msgpack_restore

    p = checkpoint_file(path)
    data = p.read_bytes()
    if not data:
        raise VivitError(f"{p}: empty file, not a Flax checkpoint")
    try:
        state = msgpack_restore(data)
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for bad input
        why = "truncated" if "incomplete" in str(e) else "not a Flax msgpack checkpoint"
        raise VivitError(f"{p}: {why} ({type(e).__name__}: {str(e)[:80]}){_sniff(data)}") from None
    if not isinstance(state, Mapping):
        raise VivitError(f"{p}: not a Flax checkpoint (msgpack holds a {type(state).__name__}, not a state dict)")
    return dict(state)


def find_params(state: Mapping[str, Any], where: str = "checkpoint") -> tuple[dict, str]:
    """(params, where they were found): `optimizer/target` (flax.optim), `params` (newer train states), the
    top level (a bare params file), each possibly wrapped once more in a `params` collection."""
    for path in (("optimizer", "target"), ("params",), ()):
        node: Any = state
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and "embedding" not in node and isinstance(node.get("params"), Mapping):
            node, path = node["params"], path + ("params",)
        if isinstance(node, Mapping) and "embedding" in node:
            return dict(node), "/".join(path) or "(top level)"
    raise VivitError(f"{where}: unknown param layout: no embedding under optimizer/target or params "
                     f"(top-level keys: {', '.join(sorted(map(str, state))[:8])})")


def head_splits(num_classes: int, class_splits: list[int] | None, split_names: list[str] | None
                ) -> list[tuple[str, int]] | None:
    """Named logit groups of a multi-head checkpoint; Epic Kitchens (397 = 300 nouns + 97 verbs) is known."""
    if class_splits is None:
        if num_classes == sum(n for _, n in EPIC_KITCHENS_SPLITS):
            return list(EPIC_KITCHENS_SPLITS)
        return None
    if sum(class_splits) != num_classes or min(class_splits) <= 0:
        raise VivitError(f"--class-splits {','.join(map(str, class_splits))}: must be positive and sum to the "
                         f"head's {num_classes} classes (output_projection/kernel)")
    names = split_names or [str(i + 1) for i in range(len(class_splits))]
    if len(names) != len(class_splits):
        raise VivitError(f"--split-names has {len(names)} names for {len(class_splits)} class splits")
    return list(zip(names, class_splits))


# The order a converted Epic-Kitchens model holds its heads in: the `epic:` source's (labels [N, 2] = verb, noun), so
# that the converted checkpoint evaluates and fine-tunes on it as a two-head model.
EPIC_KITCHENS_ORDER = ("verb", "noun")


def to_source_order(params: dict, splits: list[tuple[str, int]]) -> tuple[dict, list[tuple[str, int]]]:
    """(params, splits) with Epic-Kitchens' groups (Scenic: nouns then verbs) moved to verbs then nouns; any other
    split is kept as it is."""
    names = [name for name, _ in splits]
    if sorted(names) != sorted(EPIC_KITCHENS_ORDER) or tuple(names) == EPIC_KITCHENS_ORDER:
        return params, splits
    starts = dict(zip(names, np.cumsum([0] + [n for _, n in splits])[:-1].tolist()))
    sizes = dict(splits)
    cols = np.concatenate([np.arange(starts[n], starts[n] + sizes[n]) for n in EPIC_KITCHENS_ORDER])
    proj = params["output_projection"]
    out = dict(params)
    out["output_projection"] = {"kernel": np.asarray(proj["kernel"])[:, cols], "bias": np.asarray(proj["bias"])[cols]}
    return out, [(n, sizes[n]) for n in EPIC_KITCHENS_ORDER]


def select_head(params: dict, splits: list[tuple[str, int]] | None, head: str | None
                ) -> tuple[dict, list[str] | None]:
    """(params, label names): all logits (labels say which group each is in; the groups are the model's heads) or,
    with `head`, only that group's columns (a single-head model)."""
    if splits is None:
        if head is not None:
            raise VivitError(f"--head {head}: this checkpoint has a single head (use --class-splits to name groups)")
        return params, None
    labels = [f"{name}/{i}" for name, n in splits for i in range(n)]
    if head is None:
        return params, labels
    names = [name for name, _ in splits]
    if head not in names:
        raise VivitError(f"--head {head}: the checkpoint's heads are {', '.join(names)}")
    start = sum(n for name, n in splits[: names.index(head)])
    stop = start + dict(splits)[head]
    proj = params["output_projection"]
    out = dict(params)
    out["output_projection"] = {"kernel": proj["kernel"][:, start:stop], "bias": proj["bias"][start:stop]}
    return out, labels[start:stop]
