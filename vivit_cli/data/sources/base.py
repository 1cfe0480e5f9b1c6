"""What every kind of source gives: a `Source` of named `Split`s; an example of a split is (reader, labels, segment).

A split's `reader(i)` returns an object with `num_frames` and `frames(indices) -> uint8 [k, H, W, 3]`; video
files are decoded lazily (only the frames a clip needs). A segment (`Split.segment(i)`: (start, stop) in frames
of the decoded video, stop exclusive) is a clip that is part of a longer video (Epic-Kitchens' actions,
Kinetics' time_start/time_end over a full video): its reader exposes only that range, so the pipeline samples a
segment exactly as it samples a whole clip. Splits pickle cheaply (paths, not arrays), so grain worker processes
can receive them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from vivit_cli.errors import VivitError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".gif")
SPLIT_ALIASES = {"validation": "val", "valid": "val", "validate": "val", "eval": "val"}


class ArrayReader:
    def __init__(self, video: np.ndarray):
        self.video = video
        self.num_frames = int(video.shape[0])

    def frames(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.video[np.asarray(indices)])


class SegmentReader:
    """Frames [start, stop) of another reader, numbered from 0."""

    def __init__(self, reader, start: int, stop: int):
        self.reader, self.start, self.num_frames = reader, int(start), int(stop) - int(start)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        return self.reader.frames(np.asarray(indices) + self.start)


class Example(NamedTuple):
    reader: object  # already restricted to the segment
    label: int | np.ndarray  # an int, or int32 [H] for a multi-head source
    segment: tuple[int, int] | None


@dataclass
class Split:
    """`labels`: int32 [N], or [N, H] for a source with H heads. `segments`: int64 [N, 2] (start, stop) or None."""

    name: str
    labels: np.ndarray
    segments: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, i: int) -> int | np.ndarray:
        value = self.labels[i]
        return int(value) if np.ndim(value) == 0 else np.asarray(value, np.int32)

    def segment(self, i: int) -> tuple[int, int] | None:
        if self.segments is None:
            return None
        start, stop = self.segments[i]
        return int(start), int(stop)

    def open_reader(self, i: int):
        """The reader of the whole video of example i (kinds implement this)."""
        raise NotImplementedError

    def reader(self, i: int):
        reader, seg = self.open_reader(i), self.segment(i)
        return reader if seg is None else SegmentReader(reader, *seg)

    def example(self, i: int) -> Example:
        return Example(self.reader(i), self.label(i), self.segment(i))

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

    def open_reader(self, i: int) -> ArrayReader:
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

    def open_reader(self, i: int):
        if self.metas[i].get("frames_dir"):
            from ..frames import FrameFolderReader

            return FrameFolderReader(self.paths[i], self.metas[i], self.short_side)
        from ..video import VideoReader

        # Segments sit anywhere in a long video: seek to them rather than decode everything before.
        return VideoReader(self.paths[i], self.metas[i], self.short_side, seek=self.segments is not None)

    def frame_counts(self) -> list[int]:
        """Frames of each example: its segment's length, or the whole video's."""
        if self.segments is None:
            return [int(m["num_frames"]) for m in self.metas]
        return [int(b - a) for a, b in self.segments]

    def where(self, i: int) -> str:
        seg = self.segment(i)
        return self.paths[i] if seg is None else f"{self.paths[i]} (frames {seg[0]}-{seg[1]})"


def _head_default(label_names: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (("label", tuple(label_names)),)


@dataclass
class Source:
    """`heads`: ((head_name, label_names), ...); one ("label", label_names) head unless a kind gives several
    (Epic-Kitchens: verb, noun), in which case `label_names` are the first head's."""

    kind: str
    spec: str
    label_names: tuple[str, ...]
    splits: dict[str, Split]
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, problem) found while scanning
    scanned: int = 0
    info: dict = field(default_factory=dict)
    heads: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self):
        if not self.heads:
            self.heads = _head_default(self.label_names)
        elif tuple(self.heads[0][1]) != tuple(self.label_names):
            raise ValueError("Source.label_names must be the first head's names")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def head_sizes(self) -> tuple[int, ...]:
        return tuple(len(names) for _, names in self.heads)

    def split(self, name: str) -> Split:
        key = SPLIT_ALIASES.get(name, name)
        if key in self.splits:
            return self.splits[key]
        if name in self.splits:
            return self.splits[name]
        raise VivitError(f"{self.spec}: no split {name!r}; it has {', '.join(self.splits) or 'none'}")

    def num_examples(self, split: str) -> int:
        return len(self.split(split))
