"""`npy:PATH`: preprocessed clips in a .npz or a folder of <split>_video.npy / <split>_label.npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vivit_cli.errors import VivitError

from .base import SPLIT_ALIASES, ArraySplit, Source, Split
from .registry import OpenContext, register


def _check_clips(where: str, videos: np.ndarray, labels: np.ndarray) -> None:
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise VivitError(f"{where}: video must be uint8 [N, T, H, W, 3], got {videos.dtype} {list(videos.shape)}")
    if labels.ndim != 1 or len(labels) != len(videos) or not np.issubdtype(labels.dtype, np.integer):
        raise VivitError(f"{where}: label must be integers [N] matching {len(videos)} clips, "
                         f"got {labels.dtype} {list(labels.shape)}")
    if len(labels) and labels.min() < 0:
        raise VivitError(f"{where}: negative label {labels.min()}")


@register("npy")
def open_npy(arg: str, ctx: OpenContext) -> Source:
    root = Path(arg).expanduser()
    splits: dict[str, Split] = {}
    names = None
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
    top = max((int(sp.labels.max()) for sp in splits.values() if len(sp)), default=0)
    if names is None:
        names = [str(i) for i in range(top + 1)]
    elif len(names) <= top:
        raise VivitError(f"data.source=npy:{arg}: label {top} but only {len(names)} label_names")
    return Source("npy", f"npy:{arg}", tuple(names), splits)
