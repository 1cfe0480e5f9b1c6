"""The data interface of docs/DESIGN.md, taking a resolved Config."""

from __future__ import annotations

import functools

import numpy as np

from . import sources
from . import transforms as T


@functools.lru_cache(maxsize=8)
def _open_cached(source: str, frames: int, stride: int, crop: int, data_dir: str | None,
                 max_skip_fraction: float, short: int) -> sources.Source:
    return sources.open_source(source, frames=frames, stride=stride, crop=crop, data_dir=data_dir,
                               max_skip_fraction=max_skip_fraction, short_side=short)


def short_side(cfg) -> int:
    """The short side frames are resized to before any crop (`data.eval_resize`, train and eval alike), and so the
    size that video is decoded at."""
    return T.default_resize(cfg.data.crop) if cfg.data.eval_resize is None else cfg.data.eval_resize


def open_source(cfg) -> sources.Source:
    """The Source of `cfg.data.source` (cached per process: train and eval iterators share it)."""
    d = cfg.data
    return _open_cached(d.source, d.frames, d.stride, d.crop, d.data_dir, d.max_skip_fraction, short_side(cfg))


def still_images(cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, crop, crop, 3] in [-1, 1], labels int32 [N]) for image pretraining.

    For the embedded data these are the middle frames of the appearance task (the digit is the label)
    whichever task is selected: both tasks draw the same glyphs, so an image model pretrained on them
    transfers to either. Other sources give the middle frame of each clip with the clip's label.
    """
    d = cfg.data
    if d.source.startswith("embedded:"):
        seed = d.source.split(":")[2] if d.source.count(":") >= 2 else "0"
        src = _open_cached(f"embedded:appearance:{seed}", d.frames, d.stride, d.crop, None, 1.0, short_side(cfg))
    else:
        src = open_source(cfg)
    sp = src.split(split)
    spec = T.ClipSpec(frames=1, stride=1, crop=d.crop, resize=d.eval_resize)  # eval's centre view
    images = np.empty((len(sp), d.crop, d.crop, 3), np.float32)
    labels = np.zeros(len(sp), np.int32)
    keep = np.ones(len(sp), bool)
    for i in range(len(sp)):
        try:
            reader, label, _ = sp.example(i)
            frame = reader.frames(np.array([reader.num_frames // 2]))
        except sources.DecodeError:
            keep[i] = False
            continue
        images[i] = T.to_unit_range(T.spatial_views(frame, spec, 1)[0][0])
        labels[i] = np.ravel(label)[0]  # a multi-head source's image label is its first head's
    return images[keep], labels[keep]


def describe_source(src: sources.Source) -> dict:
    """What `vivit data inspect` prints: clips per split, classes, frame counts, resolution, failures."""
    out = {"source": src.spec, "kind": src.kind, "num_classes": src.num_classes,
           "heads": {name: len(names) for name, names in src.heads},
           "label_names": list(src.label_names), "splits": {}, "decode_failures": len(src.failures),
           "files_scanned": src.scanned, "failures": [{"file": f, "problem": p} for f, p in src.failures[:50]],
           **({"info": src.info} if src.info else {})}
    for name, sp in src.splits.items():
        entry = {"clips": len(sp)}
        if len(sp.labels):  # TFDS labels are only read with their clips
            per_head = np.asarray(sp.labels).reshape(len(sp.labels), -1).T
            counts = [np.bincount(lab, minlength=size).tolist() for lab, size in zip(per_head, src.head_sizes)]
            entry["per_class"] = counts[0]
            if len(src.heads) > 1:
                entry["per_head_class"] = {head: c for (head, _), c in zip(src.heads, counts)}
        if sp.segments is not None:
            entry["segments"] = len(sp.segments)
        if isinstance(sp, sources.VideoSplit) and sp.metas:
            counts = np.array(sp.frame_counts())
            entry["frames"] = {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())}
            sizes = sorted({f"{m['width']}x{m['height']}" for m in sp.metas})
            entry["resolutions"] = sizes[:10]
            entry["codecs"] = sorted({m["codec"] for m in sp.metas})
        elif len(sp):
            reader = sp.reader(0)
            first = reader.frames(np.array([0]))
            # records and DMVR index every clip's frame count; other splits are described by their first clip
            counts = np.array(sp.frame_counts() if hasattr(sp, "frame_counts") else [reader.num_frames])
            entry["frames"] = {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())}
            entry["resolutions"] = [f"{first.shape[2]}x{first.shape[1]}"]
        out["splits"][name] = entry
    return out
