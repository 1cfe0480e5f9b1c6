"""`npy:PATH`: preprocessed clips in a .npz or a folder of <split>_video.npy / <split>_label.npy.

A .npz may hold a multi-head label set (Epic-Kitchens' verb and noun): `head_names` [H], each split's
`<split>_label` int [N, H], and per head `<head>_label_names` (or `head_sizes` [H], the classes numbered)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vivit_cli.errors import VivitError

from .base import SPLIT_ALIASES, ArraySplit, Source, Split
from .registry import OpenContext, register


def _check_clips(where: str, videos: np.ndarray, labels: np.ndarray) -> None:
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise VivitError(f"{where}: video must be uint8 [N, T, H, W, 3], got {videos.dtype} {list(videos.shape)}")
    if labels.ndim not in (1, 2) or len(labels) != len(videos) or not np.issubdtype(labels.dtype, np.integer):
        raise VivitError(f"{where}: label must be integers [N] (or [N, heads]) matching {len(videos)} clips, "
                         f"got {labels.dtype} {list(labels.shape)}")
    if len(labels) and labels.min() < 0:
        raise VivitError(f"{where}: negative label {labels.min()}")


@register("npy")
def open_npy(arg: str, ctx: OpenContext) -> Source:
    root = Path(arg).expanduser()
    splits: dict[str, Split] = {}
    names = None
    heads = ()
    try:
        if root.is_file() and root.suffix == ".npz":
            with np.load(root, allow_pickle=False) as z:
                keys = set(z.files)
                for k in sorted(keys):
                    if k.endswith("_video") and f"{k[:-6]}_label" in keys:
                        s = k[:-6]
                        videos, labels = z[k], z[f"{s}_label"]
                        _check_clips(f"{root}:{k}", videos, labels)
                        splits[SPLIT_ALIASES.get(s, s)] = ArraySplit(s, labels.astype(np.int32), videos=videos)
                if "label_names" in keys:
                    names = [str(n) for n in z["label_names"]]
                heads = _heads(z, f"data.source=npy:{arg}")
        elif root.is_dir():
            for vfile in sorted(root.glob("*_video.npy")):
                s = vfile.name[:-len("_video.npy")]
                lfile = root / f"{s}_label.npy"
                if not lfile.is_file():
                    raise VivitError(f"{vfile}: no matching {lfile.name}")
                videos = np.load(vfile, mmap_mode="r", allow_pickle=False)
                labels = np.load(lfile, allow_pickle=False)
                _check_clips(str(vfile), videos, labels)
                splits[SPLIT_ALIASES.get(s, s)] = ArraySplit(s, labels.astype(np.int32), path=str(vfile))
            if (root / "label_names.txt").is_file():
                names = [ln.strip() for ln in (root / "label_names.txt").read_text().splitlines() if ln.strip()]
        else:
            raise VivitError(f"data.source=npy:{arg}: no such .npz file or folder")
    except (ValueError, OSError) as e:  # allow_pickle=False refuses object arrays with a ValueError
        raise VivitError(f"data.source=npy:{arg}: cannot load ({str(e).splitlines()[0][:160]})") from None
    if not splits:
        raise VivitError(f"data.source=npy:{arg}: no <split>_video / <split>_label array pairs")
    if heads or any(sp.labels.ndim == 2 for sp in splits.values()):
        return Source("npy", f"npy:{arg}", heads[0][1] if heads else (), splits,
                      heads=_check_heads(heads, splits, f"data.source=npy:{arg}"))
    top = max((int(sp.labels.max()) for sp in splits.values() if len(sp)), default=0)
    if names is None:
        names = [str(i) for i in range(top + 1)]
    elif len(names) <= top:
        raise VivitError(f"data.source=npy:{arg}: label {top} but only {len(names)} label_names")
    return Source("npy", f"npy:{arg}", tuple(names), splits)


def _heads(z, where: str) -> tuple:
    """((name, label names), ...) of a multi-head .npz, () without `head_names`."""
    if "head_names" not in z.files:
        return ()
    names = [str(n) for n in z["head_names"]]
    sizes = [int(n) for n in z["head_sizes"]] if "head_sizes" in z.files else [0] * len(names)
    if len(names) < 2 or len(sizes) != len(names):
        raise VivitError(f"{where}: head_names needs two or more names (and head_sizes one size per name)")
    out = []
    for name, size in zip(names, sizes):
        key = f"{name}_label_names"
        labels = tuple(str(x) for x in z[key]) if key in z.files else tuple(str(i) for i in range(size))
        if not labels:
            raise VivitError(f"{where}: head {name!r} has neither {key} nor a head_sizes entry")
        out.append((name, labels))
    return tuple(out)


def _check_heads(heads: tuple, splits: dict, where: str) -> tuple:
    """Every split's labels are [N, H], each head's ids inside its label set."""
    if not heads:
        raise VivitError(f"{where}: labels [N, H] need head_names (and each head's <head>_label_names)")
    for sp in splits.values():
        if sp.labels.ndim != 2 or sp.labels.shape[1] != len(heads):
            raise VivitError(f"{where}: split {sp.name} labels are {list(sp.labels.shape)}, expected [N, {len(heads)}] "
                             f"for heads {', '.join(n for n, _ in heads)}")
        for h, (name, names) in enumerate(heads):
            if len(sp.labels) and sp.labels[:, h].max() >= len(names):
                raise VivitError(f"{where}: split {sp.name} has {name} class {sp.labels[:, h].max()}, outside its "
                                 f"{len(names)} classes")
    return heads
