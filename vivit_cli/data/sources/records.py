"""Prepared records (`data.source=records:DIR`): the clips of a source decoded once, stored as JPEG frames in
sharded ArrayRecord files (`vivit data prepare`: data/prepare.py writes them; docs/data.md has the layout).

DIR holds
- `prepare.json`: the plan (format version, source spec, short side, JPEG quality, clips and shards per split),
  written first, so that a rerun continues the same plan and a different one is refused;
- `<split>-<k>-of-<S>.array_record`: shard k of S; clip i of the source's split is in shard i % S (so a process
  that evaluates clips p, p + n, ... reads only the shards k = p mod n when n divides S). One record per clip:
  b"VVR1", uint32 source index, uint32 frame count n, uint32 offsets[n + 1] into the JPEG bytes that follow;
- `<split>-<k>-of-<S>.json`: that shard's clips (source index, frames, size) and decode failures, written once
  the shard is complete (its presence is what makes the shard done);
- `<split>.index.npz`: every clip of the split in source order: shard, position, labels ([N] or [N, H]), frames,
  source segment, source index;
- `manifest.json`: written last: counts, failures, label names and heads. No manifest: an incomplete folder.
Every file goes to a temp name, is fsynced and renamed, so a kill -9 leaves only whole files.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from vivit_cli.errors import VivitError

from ..video import DecodeError
from .base import Source, Split
from .registry import OpenContext, register

FORMAT = "vivit-records"
VERSION = 1
MAGIC = b"VVR1"
_HEAD = struct.Struct("<4sII")


def shard_name(split: str, k: int, count: int) -> str:
    return f"{split}-{k:05d}-of-{count:05d}"


def encode_clip(source_index: int, jpegs: list[bytes]) -> bytes:
    offsets = np.cumsum([0] + [len(j) for j in jpegs], dtype=np.uint64)
    if offsets[-1] >= 2**32:
        raise ValueError("a clip of more than 4 GiB of JPEG frames")
    return b"".join([_HEAD.pack(MAGIC, source_index, len(jpegs)), offsets.astype("<u4").tobytes(), *jpegs])


def clip_frames(record: bytes) -> tuple[int, int, np.ndarray, int]:
    """(source index, frame count, offsets, where the JPEG bytes start) of one record."""
    magic, index, n = _HEAD.unpack_from(record)
    if magic != MAGIC:
        raise DecodeError("not a vivit records clip (bad magic)")
    start = _HEAD.size + 4 * (n + 1)
    return index, n, np.frombuffer(record, "<u4", n + 1, _HEAD.size), start


# simplejpeg over Pillow: it decodes the same bytes to the same pixels in 0.7x the time (benchmarks/RESULTS.md,
# "JPEG decoders") and encodes from an array without a PIL Image. Chroma at full resolution (4:4:4): decoded video
# is already 4:2:0 on its own grid, and subsampling it again after the resize doubled the error (mean 4.4 levels
# against 2.2 on the tests' 37x56 frames).
def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=quality, colorspace="RGB",
                                  colorsubsampling="444")


def decode_jpeg(data) -> np.ndarray:
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError as e:
        raise DecodeError(f"corrupt JPEG frame ({str(e)[:80]})") from None


class RecordReader:
    """One clip's frames, decoding only the JPEGs asked for."""

    def __init__(self, record: bytes, num_frames: int):
        self.record = record
        _, n, self.offsets, self.start = clip_frames(record)
        if n != num_frames:
            raise DecodeError(f"record holds {n} frames, the index says {num_frames}")
        self.num_frames = n

    def frames(self, indices: np.ndarray) -> np.ndarray:
        wanted = np.asarray(indices)
        view = memoryview(self.record)
        decoded = {}
        for i in dict.fromkeys(int(i) for i in wanted):
            a, b = self.start + int(self.offsets[i]), self.start + int(self.offsets[i + 1])
            decoded[i] = decode_jpeg(view[a:b])
        return np.stack([decoded[int(i)] for i in wanted])


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise VivitError(f"{path}: unreadable {what} ({str(e)[:120]})") from None


def check_version(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT:
        raise VivitError(f"{path}: not a vivit records folder (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise VivitError(f"{path}: records format version {meta.get('version')!r}, this vivit reads version "
                         f"{VERSION}: prepare the source again into a new folder")


def read_manifest(root: Path) -> dict:
    """The manifest of a complete records folder; one line naming the problem otherwise."""
    path = root / "manifest.json"
    if not root.is_dir():
        raise VivitError(f"data.source=records:{root}: no such folder")
    try:
        manifest = _read_json(path, "records manifest")
    except FileNotFoundError:
        plan = root / "prepare.json"
        if plan.is_file():
            done = len(list(root.glob("*-of-*.json")))
            raise VivitError(f"{root}: incomplete records ({done} shards done, no manifest.json): rerun "
                             "`vivit data prepare` with the same spec and --out to finish") from None
        raise VivitError(f"{path}: missing (not a folder written by `vivit data prepare`)") from None
    check_version(path, manifest)
    return manifest


@dataclass
class RecordsSplit(Split):
    """Clips in shard files; `shard`/`pos` place clip j; shard readers are opened lazily, in each process."""

    in_process_reads: ClassVar[bool] = True  # JPEG decoding holds the GIL: no reader threads (data/pipeline.py)
    root: str = ""
    files: list[str] = field(default_factory=list)
    shard: np.ndarray | None = None
    pos: np.ndarray | None = None
    num_frames: np.ndarray | None = None
    source_index: np.ndarray | None = None
    max_open: int = 64  # shard files held open per process (Kinetics has thousands: the fd limit is often 1024)
    _readers: dict = field(default_factory=dict, repr=False)

    def _file(self, k: int):
        reader = self._readers.pop(k, None)
        if reader is None:
            from array_record.python.array_record_module import ArrayRecordReader

            path = str(Path(self.root) / self.files[k])
            try:
                reader = ArrayRecordReader(path, "readahead_buffer_size:0")
            except (RuntimeError, OSError, ValueError) as e:
                raise VivitError(f"{path}: unreadable shard ({str(e).splitlines()[0][:120]})") from None
            if len(self._readers) >= self.max_open:  # training reads every shard at random: bound the open files
                self._readers.pop(next(iter(self._readers))).close()
        self._readers[k] = reader  # most recently used last
        return reader

    def open_reader(self, i: int) -> RecordReader:
        record = self._file(int(self.shard[i])).read([int(self.pos[i])])[0]
        return RecordReader(record, int(self.num_frames[i]))

    def frame_counts(self) -> list[int]:
        return [int(n) for n in self.num_frames]

    def where(self, i: int) -> str:
        return f"{Path(self.root) / self.files[int(self.shard[i])]}[{int(self.pos[i])}]"

    def __getstate__(self):
        return {**self.__dict__, "_readers": {}}


@register("records")
def open_records(arg: str, ctx: OpenContext) -> Source:
    """The Source of a complete records folder, checked against what the config needs (short side, clip span)."""
    root = Path(arg).expanduser()
    manifest = read_manifest(root)
    if ctx.short_side != manifest["short_side"]:
        raise VivitError(f"{root / 'manifest.json'}: prepared at short side {manifest['short_side']}, this config "
                         f"needs {ctx.short_side} (data.crop / data.eval_resize): prepare again for this crop")
    splits, failures = {}, [tuple(f) for f in manifest["failures"]]
    for name in manifest["split_order"]:
        entry = manifest["splits"][name]
        for f in entry["files"]:
            if not (root / f).is_file():
                raise VivitError(f"{root / f}: missing shard (incomplete records folder)")
        index_path = root / entry["index"]
        try:
            with np.load(index_path, allow_pickle=False) as z:
                ix = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise VivitError(f"{index_path}: unreadable records index ({str(e)[:120]})") from None
        if len(ix["labels"]) != entry["clips"]:
            raise VivitError(f"{index_path}: {len(ix['labels'])} clips, the manifest says {entry['clips']}")
        keep = ix["num_frames"] >= ctx.span
        for j in np.flatnonzero(~keep):  # as a video source drops a file too short for the clip
            where = f"{root / entry['files'][int(ix['shard'][j])]}[{int(ix['pos'][j])}]"
            problem = f"only {int(ix['num_frames'][j])} frames, a clip needs {ctx.span} (data.frames x data.stride)"
            failures.append((where, problem))
        splits[name] = RecordsSplit(name, ix["labels"][keep], root=str(root), files=list(entry["files"]),
                                    shard=ix["shard"][keep], pos=ix["pos"][keep], num_frames=ix["num_frames"][keep],
                                    source_index=ix["source_index"][keep])
    heads = tuple((h, tuple(names)) for h, names in manifest["heads"])
    info = {"prepared_from": manifest["source"], "short_side": manifest["short_side"],
            "jpeg_quality": manifest["jpeg_quality"], "format_version": manifest["version"]}
    return Source("records", f"records:{arg}", tuple(manifest["label_names"]), splits, failures=failures,
                  scanned=manifest["scanned"], info=info, heads=heads)
