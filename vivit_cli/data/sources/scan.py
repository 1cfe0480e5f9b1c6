"""Shared by the kinds that read video files: probing (cached), items -> VideoSplits, failures counted."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vivit_cli.errors import VivitError

from ..cache import cache_dir
from ..frames import probe_frames
from ..video import DecodeError, probe
from .base import VIDEO_EXTENSIONS, Source, VideoSplit
from .registry import OpenContext


@dataclass(frozen=True)
class Item:
    """One example of a video source. `label`: a class index, or one per head. `segment`: frames [start, stop)
    of the decoded video; `seconds`: the same in seconds, turned into frames with the probed frame rate.
    `where`: the annotation row, for errors about the segment."""

    split: str
    path: str
    label: int | tuple[int, ...]
    segment: tuple[int, int] | None = None
    seconds: tuple[float, float] | None = None
    where: str = ""


def folder_arg(kind: str, arg: str) -> Path:
    """The folder a `kind:PATH` spec names (a missing one is bad input)."""
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise VivitError(f"data.source={kind}:{arg}: no such folder")
    return root


def hash_split(rel: str) -> str:
    # A stable 80/10/10 split of a single pool of files, independent of listing order.
    h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) % 10
    return "train" if h < 8 else ("val" if h == 8 else "test")


def probe_all(paths: list[str]) -> list[dict | str]:
    """Probe results (meta dict, or the problem as a string), cached by path, size and mtime."""
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
            stats.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((p, -1, 0))
    key = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:20]
    cache_file = cache_dir() / "probe" / f"{key}.json"
    try:
        cached = json.loads(cache_file.read_text())
        if len(cached) == len(paths):
            return cached
    except (OSError, ValueError):
        pass

    def one(p):
        try:
            if os.path.isdir(p):
                return probe_frames(p)
            if not os.path.exists(p):
                return "missing file"
            return probe(p)
        except DecodeError as e:
            return str(e)
        except FileNotFoundError:
            return "missing file"

    unique = list(dict.fromkeys(paths))  # many segments share one long video: probe it once
    with ThreadPoolExecutor(max_workers=4) as pool:  # FFmpeg releases the GIL while it parses
        found = dict(zip(unique, pool.map(one, unique)))
    results = [found[p] for p in paths]
    try:
        from vivit_cli.io import atomic_write_json

        atomic_write_json(cache_file, results)
    except OSError:
        pass  # a read-only cache only costs a re-probe
    return results


def frames_of(item: Item, meta: dict) -> tuple[int, int] | None:
    """The item's segment in frames of its video; a segment past the video's end is bad input."""
    seg = item.segment
    if item.seconds is not None:
        fps = meta.get("fps") or 0
        if fps <= 0:
            raise VivitError(f"{item.path}: no frame rate, so {item.where or 'its segment'} in seconds cannot be "
                             "turned into frames")
        seg = (round(item.seconds[0] * fps), round(item.seconds[1] * fps))
        if seg[1] <= seg[0]:
            raise VivitError(f"{item.where or item.path}: segment {item.seconds[0]}-{item.seconds[1]} s is "
                             f"shorter than one frame at {fps:g} fps")
    if seg is not None and seg[1] > meta["num_frames"]:
        raise VivitError(f"{item.where or item.path}: segment ends at frame {seg[1]} but {item.path} has only "
                         f"{meta['num_frames']} frames (video shorter than its segment)")
    return seg


def video_source(kind: str, spec: str, items: list[Item], label_names: tuple[str, ...], ctx: OpenContext,
                 info: dict, heads: tuple = ()) -> Source:
    """Items -> a Source, with unreadable files and too-short clips or segments counted as failures."""
    results = probe_all([it.path for it in items])
    per_split: dict[str, tuple[list, list, list, list]] = {}
    failures = []
    for item, meta in zip(items, results):
        if isinstance(meta, str):
            failures.append((item.path, meta))
            continue
        seg = frames_of(item, meta)
        length = meta["num_frames"] if seg is None else seg[1] - seg[0]
        if length < ctx.span:
            what = "only" if seg is None else f"segment {seg[0]}-{seg[1]}: only"
            failures.append((item.path, f"{what} {length} frames, a clip needs {ctx.span} (data.frames x data.stride)"))
            continue
        paths, labels, metas, segs = per_split.setdefault(item.split, ([], [], [], []))
        paths.append(item.path)
        labels.append(item.label)
        metas.append(meta)
        segs.append(seg)
    splits = {}
    for s, (p, lab, m, segs) in sorted(per_split.items()):
        segments = None if all(g is None for g in segs) else np.asarray(
            [g if g is not None else (0, mm["num_frames"]) for g, mm in zip(segs, m)], np.int64)
        splits[s] = VideoSplit(s, np.asarray(lab, np.int32), segments=segments, paths=p, metas=m,
                               short_side=ctx.short_side)
    return Source(kind, spec, label_names, splits, failures=failures, scanned=len(items), info=info, heads=heads)


def sorted_labels(names) -> tuple[str, ...]:
    names = set(names)
    if all(n.isdigit() for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def by_name(items: list[tuple[str, str, str]], label_names: tuple[str, ...]) -> list[Item]:
    """(split, path, label name) triples -> Items."""
    index = {name: i for i, name in enumerate(label_names)}
    return [Item(split, path, index[label]) for split, path, label in items]


def class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def videos_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
