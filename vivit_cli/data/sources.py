"""Sources: random-access splits of (clip reader, label), one class per kind of `data.source`.

A split's `reader(i)` returns an object with `num_frames` and `frames(indices) -> uint8 [k, H, W, 3]`;
video files are decoded lazily (only the frames a clip needs). Splits pickle cheaply (paths, not
arrays), so grain worker processes can receive them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vivit_cli.errors import VivitError

from . import embedded, spec as spec_mod
from .cache import cache_dir
from .video import DecodeError, VideoReader, probe

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".gif")
SPLIT_ALIASES = {"validation": "val", "valid": "val", "validate": "val", "eval": "val"}


class ArrayReader:
    def __init__(self, video: np.ndarray):
        self.video = video
        self.num_frames = int(video.shape[0])

    def frames(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.video[np.asarray(indices)])


@dataclass
class Split:
    name: str
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def where(self, i: int) -> str:
        return f"{self.name}[{i}]"


@dataclass
class ArraySplit(Split):
    """Clips in an array [N, T, H, W, 3] uint8; `path` (a .npy) is memory-mapped lazily, per process."""

    videos: np.ndarray | None = None
    path: str | None = None

    def _array(self) -> np.ndarray:
        if self.videos is None:
            self.videos = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self.videos

    def reader(self, i: int) -> ArrayReader:
        return ArrayReader(self._array()[i])

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path is not None:
            state["videos"] = None  # re-mapped in the worker instead of copied through a pipe
        return state


@dataclass
class VideoSplit(Split):
    paths: list[str] = field(default_factory=list)
    metas: list[dict] = field(default_factory=list)
    short_side: int | None = None

    def reader(self, i: int) -> VideoReader:
        return VideoReader(self.paths[i], self.metas[i], self.short_side)

    def where(self, i: int) -> str:
        return self.paths[i]


@dataclass
class TfdsSplit(Split):
    tfds_name: str = ""
    tfds_split: str = ""
    data_dir: str | None = None
    video_key: str = "video"
    count: int = 0
    _ds: object = None

    # Labels are read with the clip, not all up front: a record holds the whole video, so listing the
    # labels of a real dataset at open time would read all of it.
    def __len__(self) -> int:
        return self.count

    def _source(self):
        if self._ds is None:
            self._ds = _tfds_source(self.tfds_name, self.tfds_split, self.data_dir)
        return self._ds

    def label(self, i: int) -> int:
        return int(self._source()[int(i)]["label"])

    def reader(self, i: int) -> ArrayReader:
        record = self._source()[int(i)]
        video = record[self.video_key]
        reader = ArrayReader(np.stack(video) if isinstance(video, list) else np.asarray(video))
        reader.label = int(record["label"])
        return reader

    def __getstate__(self):
        return {**self.__dict__, "_ds": None}


@dataclass
class Source:
    kind: str
    spec: str
    label_names: tuple[str, ...]
    splits: dict[str, Split]
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, problem) found while scanning
    scanned: int = 0
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> Split:
        key = SPLIT_ALIASES.get(name, name)
        if key in self.splits:
            return self.splits[key]
        if name in self.splits:
            return self.splits[name]
        raise VivitError(f"{self.spec}: no split {name!r}; it has {', '.join(self.splits) or 'none'}")

    def num_examples(self, split: str) -> int:
        return len(self.split(split))


# ------------------------------------------------------------------------------------------------
# the embedded dataset


def _embedded(arg: str, frames_needed: int) -> Source:
    task, _, seed_text = arg.partition(":")
    if task not in embedded.TASKS:
        raise VivitError(f"data.source=embedded:{arg}: the embedded tasks are {', '.join(embedded.TASKS)}")
    try:
        seed = int(seed_text or 0)
    except ValueError:
        raise VivitError(f"data.source=embedded:{arg}: the seed after the task must be an integer") from None
    # Longer clips are generated (and cached separately) when the config asks for more frames. Motion
    # clips are exactly one clip long: with a temporal offset the turn could sit at the edge of the
    # clip, where one of the two directions is barely seen.
    frames = frames_needed if task == "motion" else max(embedded.MIN_FRAMES, frames_needed + 4)
    geometry = embedded.Geometry(frames=frames)
    splits = {}
    for name in embedded.SPLIT_SIZES:
        _, labels = embedded.load(task, name, seed=seed, geometry=geometry)
        vpath, _ = embedded.cached_paths(task, name, seed, geometry)
        splits[name] = ArraySplit(name, np.asarray(labels), path=str(vpath))
    return Source("embedded", f"embedded:{arg}", embedded.label_names(task), splits,
                  info={"task": task, "seed": seed, "generator_version": embedded.VERSION})


# ------------------------------------------------------------------------------------------------
# video files: folder, CSV, Something-Something v2


def _hash_split(rel: str) -> str:
    # A stable 80/10/10 split of a single pool of files, independent of listing order.
    h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) % 10
    return "train" if h < 8 else ("val" if h == 8 else "test")


def _probe_all(paths: list[str]) -> list[dict | str]:
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
            return probe(p)
        except DecodeError as e:
            return str(e)
        except FileNotFoundError:
            return "missing file"

    with ThreadPoolExecutor(max_workers=4) as pool:  # FFmpeg releases the GIL while it parses
        results = list(pool.map(one, paths))
    try:
        from vivit_cli.io import atomic_write_json

        atomic_write_json(cache_file, results)
    except OSError:
        pass  # a read-only cache only costs a re-probe
    return results


def _video_source(kind: str, spec: str, items: list[tuple[str, str, str]], label_names: tuple[str, ...],
                  short_side: int | None, min_frames: int, info: dict) -> Source:
    """items: (split, path, label name) -> a Source, with unreadable and too-short files counted as failures."""
    index = {name: i for i, name in enumerate(label_names)}
    results = _probe_all([p for _, p, _ in items])
    per_split: dict[str, tuple[list, list, list]] = {}
    failures = []
    for (split, path, label), meta in zip(items, results):
        if isinstance(meta, str):
            failures.append((path, meta))
            continue
        if meta["num_frames"] < min_frames:
            failures.append((path, f"only {meta['num_frames']} frames, a clip needs {min_frames} "
                                   "(data.frames x data.stride)"))
            continue
        paths, labels, metas = per_split.setdefault(split, ([], [], []))
        paths.append(path)
        labels.append(index[label])
        metas.append(meta)
    splits = {s: VideoSplit(s, np.asarray(lab, np.int32), paths=p, metas=m, short_side=short_side)
              for s, (p, lab, m) in sorted(per_split.items())}
    return Source(kind, spec, label_names, splits, failures=failures, scanned=len(items), info=info)


def _sorted_labels(names) -> tuple[str, ...]:
    names = set(names)
    if all(n.isdigit() for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _videos_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)


def _folder(arg: str, short_side: int | None, min_frames: int) -> Source:
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise VivitError(f"data.source=folder:{arg}: no such folder")
    split_dirs = {SPLIT_ALIASES.get(d.name, d.name): d for d in _class_dirs(root)
                  if SPLIT_ALIASES.get(d.name, d.name) in ("train", "val", "test")}
    items = []
    if split_dirs:
        layout = "split/class"
        for split, sdir in sorted(split_dirs.items()):
            for cdir in _class_dirs(sdir):
                files = _videos_in(cdir)
                if not files:
                    raise VivitError(f"class folder {cdir} has no video files ({', '.join(VIDEO_EXTENSIONS[:4])}, ...)")
                items += [(split, str(f), cdir.name) for f in files]
    else:
        layout = "class (80/10/10 split by file name hash)"
        classes = _class_dirs(root)
        if not classes:
            raise VivitError(f"data.source=folder:{arg}: no class subfolders (expected PATH/<class>/<video>)")
        for cdir in classes:
            files = _videos_in(cdir)
            if not files:
                raise VivitError(f"class folder {cdir} has no video files ({', '.join(VIDEO_EXTENSIONS[:4])}, ...)")
            items += [(_hash_split(str(f.relative_to(root))), str(f), cdir.name) for f in files]
    if not items:
        raise VivitError(f"data.source=folder:{arg}: no video files found")
    labels = _sorted_labels(label for _, _, label in items)
    return _video_source("folder", f"folder:{arg}", items, labels, short_side, min_frames, {"layout": layout})


def _read_csv(path: Path, default_split: str | None) -> list[tuple[str, str, str]]:
    items = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise VivitError(f"cannot read CSV {path}: {e}") from None
    for lineno, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not row or not row[0] or row[0].startswith("#"):
            continue
        if lineno == 1 and row[0].lower() in ("path", "file", "filename", "video"):
            continue  # header
        if len(row) < 2 or not row[1]:
            raise VivitError(f"{path}:{lineno}: expected path,label[,split], got {','.join(row)!r}")
        video = Path(row[0]).expanduser()
        if not video.is_absolute():
            video = path.parent / video
        if not video.is_file():
            raise VivitError(f"{path}:{lineno}: video file {video} does not exist")
        split = row[2] if len(row) > 2 and row[2] else (default_split or _hash_split(row[0]))
        items.append((SPLIT_ALIASES.get(split, split), str(video), row[1]))
    return items


def _csv(arg: str, short_side: int | None, min_frames: int) -> Source:
    root = Path(arg).expanduser()
    if root.is_dir():
        files = {SPLIT_ALIASES.get(p.stem, p.stem): p for p in sorted(root.glob("*.csv"))}
        files = {s: p for s, p in files.items() if s in ("train", "val", "test")}
        if not files:
            raise VivitError(f"data.source=csv:{arg}: the folder has no train.csv/val.csv/test.csv")
        items = [it for s, p in sorted(files.items()) for it in _read_csv(p, s)]
    elif root.is_file():
        items = _read_csv(root, None)
    else:
        raise VivitError(f"data.source=csv:{arg}: no such file or folder")
    if not items:
        raise VivitError(f"data.source=csv:{arg}: no rows")
    labels = _sorted_labels(label for _, _, label in items)
    return _video_source("csv", f"csv:{arg}", items, labels, short_side, min_frames, {})


def _ssv2(arg: str, short_side: int | None, min_frames: int) -> Source:
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise VivitError(f"data.source=ssv2:{arg}: no such folder")

    def find(suffix: str) -> Path | None:
        hits = sorted(root.glob(f"*{suffix}"))
        return hits[0] if hits else None

    labels_file = find("labels.json")
    if labels_file is None:
        raise VivitError(f"data.source=ssv2:{arg}: no *labels.json (the template -> class id map)")
    try:
        template_ids = json.loads(labels_file.read_text())
        names = [None] * len(template_ids)
        for template, idx in template_ids.items():
            names[int(idx)] = template
    except (ValueError, IndexError, TypeError, AttributeError) as e:
        raise VivitError(f"{labels_file}: not a Something-Something v2 labels file ({e})") from None
    video_dirs = [d for d in (root, root / "videos", root / "20bn-something-something-v2") if d.is_dir()]
    items = []
    for split, suffix in (("train", "train.json"), ("val", "validation.json")):
        ann = find(suffix)
        if ann is None:
            continue
        try:
            entries = json.loads(ann.read_text())
        except ValueError as e:
            raise VivitError(f"{ann}: not valid JSON ({e})") from None
        for n, entry in enumerate(entries):
            try:
                vid, template = str(entry["id"]), entry["template"].replace("[", "").replace("]", "")
            except (KeyError, TypeError, AttributeError):
                raise VivitError(f"{ann}: entry {n} lacks id/template") from None
            if template not in template_ids:
                raise VivitError(f"{ann}: entry {n} (id {vid}) has template {template!r}, not in {labels_file.name}")
            path = next((d / f"{vid}{ext}" for d in video_dirs for ext in (".webm", ".mp4")
                         if (d / f"{vid}{ext}").is_file()), None)
            if path is None:
                raise VivitError(f"{ann}: video {vid}.webm for entry {n} not found under {root}")
            items.append((split, str(path), template))
    if not items:
        raise VivitError(f"data.source=ssv2:{arg}: no *train.json or *validation.json annotations")
    return _video_source("ssv2", f"ssv2:{arg}", items, tuple(names), short_side, min_frames, {})


# ------------------------------------------------------------------------------------------------
# TFDS and NumPy


def _tfds_source(name: str, split: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


def _tfds(arg: str, data_dir: str | None) -> Source:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise VivitError("data.source=tfds:...: tensorflow-datasets is not installed (pip install 'vivit-cli[tfds]')") \
            from None
    try:
        builder = tfds.builder(arg, data_dir=data_dir)
        info = builder.info
        split_names = list(info.splits.keys())
    except Exception as e:  # tfds raises many types (DatasetNotFoundError, AssertionError, ...) for a bad name/dir
        raise VivitError(f"data.source=tfds:{arg}: not found under data.data_dir={data_dir} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if not split_names:
        raise VivitError(f"data.source=tfds:{arg}: not prepared under data.data_dir={data_dir} (no splits)")
    features = info.features
    video_key = next((k for k in ("video", "image", "frames") if k in features), None)
    if video_key is None or "label" not in features:
        raise VivitError(f"data.source=tfds:{arg}: needs a 'video' and a 'label' feature, has {', '.join(features)}")
    label_names = tuple(getattr(features["label"], "names", None) or ())
    splits = {}
    for s in split_names:
        try:
            ds = builder.as_data_source(split=s)
        except Exception as e:
            raise VivitError(f"data.source=tfds:{arg}: split {s} cannot be read without TensorFlow "
                             f"({type(e).__name__}); prepare it as array_record") from None
        splits[SPLIT_ALIASES.get(s, s)] = TfdsSplit(SPLIT_ALIASES.get(s, s), np.zeros(0, np.int32), tfds_name=arg,
                                                    tfds_split=s, data_dir=data_dir, video_key=video_key,
                                                    count=len(ds), _ds=ds)
    if not label_names:
        raise VivitError(f"data.source=tfds:{arg}: the 'label' feature must be a ClassLabel (with names)")
    return Source("tfds", f"tfds:{arg}", label_names, splits, info={"data_dir": data_dir, "video_key": video_key})


def _check_clips(where: str, videos: np.ndarray, labels: np.ndarray) -> None:
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise VivitError(f"{where}: video must be uint8 [N, T, H, W, 3], got {videos.dtype} {list(videos.shape)}")
    if labels.ndim != 1 or len(labels) != len(videos) or not np.issubdtype(labels.dtype, np.integer):
        raise VivitError(f"{where}: label must be integers [N] matching {len(videos)} clips, "
                         f"got {labels.dtype} {list(labels.shape)}")
    if len(labels) and labels.min() < 0:
        raise VivitError(f"{where}: negative label {labels.min()}")


def _npy(arg: str) -> Source:
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


# ------------------------------------------------------------------------------------------------


def open_source(source: str, *, frames: int = 8, stride: int = 1, crop: int = 32, data_dir: str | None = None,
                max_skip_fraction: float | None = 0.01) -> Source:
    """Opens a `data.source` spec. With `max_skip_fraction` set, too many unreadable files is an error."""
    kind, arg = spec_mod.parse(source)
    span = (frames - 1) * stride + 1
    # Decode at about the paper's 256/224 ratio of resize to crop, so that random crops have room.
    short_side = round(crop * 8 / 7)
    if kind == "embedded":
        src = _embedded(arg, span)
    elif kind == "folder":
        src = _folder(arg, short_side, span)
    elif kind == "csv":
        src = _csv(arg, short_side, span)
    elif kind == "ssv2":
        src = _ssv2(arg, short_side, span)
    elif kind == "tfds":
        src = _tfds(arg, data_dir)
    else:
        src = _npy(arg)
    for split in src.splits.values():
        if isinstance(split, ArraySplit) and len(split) and split._array().shape[1] < span:
            raise VivitError(f"{src.spec}: split {split.name} has clips of {split._array().shape[1]} frames, "
                             f"shorter than data.frames x data.stride ({span} frames)")
    if max_skip_fraction is not None and src.failures:
        fraction = len(src.failures) / max(src.scanned, 1)
        if fraction > max_skip_fraction:
            path, problem = src.failures[0]
            raise VivitError(f"{path}: {problem} ({len(src.failures)} of {src.scanned} files unusable, more than "
                             f"data.max_skip_fraction={max_skip_fraction})")
    return src
