"""Scenic's DMVR TFRecords (`data.source=dmvr:PATH`), read without TensorFlow.

A DMVR video record is a `tf.train.SequenceExample`: the frames are JPEG bytes, one `Feature` per frame, under the
feature list `image/encoded`; the class is the context's int64 `clip/label/index` (and its name, when written,
`clip/label/text`): the names DMVR's `modalities.add_image` / `add_label` and its `generate_from_file.py` use.
PATH is one TFRecord file or a folder of them; a file's split is the start of its name (`train.tfrecord-00000-of-
00128`, `validation@...`, `test_0.tfrecord`; `validation` counts as val), a lone file is the train split.

The reader here is the TFRecord framing (uint64 length, masked CRC-32C of the length, the bytes, masked CRC-32C
of the bytes; every CRC is checked) and the protobuf package with the nine message types of tensorflow's
example.proto and feature.proto built at import from a descriptor (no .proto file, no TensorFlow; a private
descriptor pool, so it coexists with TensorFlow's own). A first open scans every file once for each record's
offset, frame count and label, cached under $VIVIT_CACHE by path, size and mtime; clips are then read at random.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from vivit_cli.errors import VivitError

from ..cache import cache_dir
from ..video import DecodeError, target_size
from .base import SPLIT_ALIASES, Source, Split
from .registry import OpenContext, register

IMAGE_KEY = "image/encoded"
LABEL_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
SCAN_VERSION = 1
_MASK_DELTA = 0xA282EAD8


# --------------------------------------------------------------------------------------------------------------
# TFRecord framing


def masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def write_tfrecord(path: str | os.PathLike, payloads) -> None:
    """Writes serialized records with TFRecord framing (tests and examples; TensorFlow's reader reads it)."""
    with open(path, "wb") as f:
        for data in payloads:
            head = struct.pack("<Q", len(data))
            f.write(head + struct.pack("<I", masked_crc(head)) + data + struct.pack("<I", masked_crc(data)))


def read_record(f, offset: int) -> bytes:
    """The record whose framing starts at `offset`; a short read or a CRC mismatch is a DecodeError."""
    f.seek(offset)
    head = f.read(12)
    if len(head) < 12:
        raise DecodeError(f"truncated record header at byte {offset}")
    (length,), (crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
    if masked_crc(head[:8]) != crc:
        raise DecodeError(f"corrupt record length at byte {offset} (CRC mismatch)")
    data = f.read(length + 4)
    if len(data) < length + 4:
        raise DecodeError(f"truncated record at byte {offset} ({len(data)} of {length + 4} bytes)")
    if masked_crc(data[:length]) != struct.unpack("<I", data[length:])[0]:
        raise DecodeError(f"corrupt record at byte {offset} (data CRC mismatch)")
    return data[:length]


# --------------------------------------------------------------------------------------------------------------
# tf.train.{Example, SequenceExample} as protobuf messages, without TensorFlow


@functools.lru_cache(maxsize=1)
def messages() -> dict:
    """{"SequenceExample": cls, "Example": cls, "Feature": cls, ...}, wire-compatible with tensorflow's."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="vivit_tf_example.proto", package="tensorflow", syntax="proto3")

    def message(name, *fields, nested=()):
        m = fdp.message_type.add(name=name)
        for sub in nested:
            m.nested_type.add().CopyFrom(sub)
        for number, fname, ftype, label, type_name, oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if oneof is not None:
                f.oneof_index = oneof
        return m

    def map_entry(name, value_type):
        entry = descriptor_pb2.DescriptorProto(name=name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=value_type)
        return entry

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", (1, "value", F.TYPE_BYTES, rep, None, None))
    message("FloatList", (1, "value", F.TYPE_FLOAT, rep, None, None))
    message("Int64List", (1, "value", F.TYPE_INT64, rep, None, None))
    feature = message("Feature", (1, "bytes_list", F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", 0),
                      (2, "float_list", F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", 0),
                      (3, "int64_list", F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", 0))
    feature.oneof_decl.add(name="kind")
    message("Features", (1, "feature", F.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", None),
            nested=[map_entry("FeatureEntry", ".tensorflow.Feature")])
    message("FeatureList", (1, "feature", F.TYPE_MESSAGE, rep, ".tensorflow.Feature", None))
    message("FeatureLists", (1, "feature_list", F.TYPE_MESSAGE, rep, ".tensorflow.FeatureLists.FeatureListEntry",
                             None), nested=[map_entry("FeatureListEntry", ".tensorflow.FeatureList")])
    message("Example", (1, "features", F.TYPE_MESSAGE, opt, ".tensorflow.Features", None))
    message("SequenceExample", (1, "context", F.TYPE_MESSAGE, opt, ".tensorflow.Features", None),
            (2, "feature_lists", F.TYPE_MESSAGE, opt, ".tensorflow.FeatureLists", None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{m.name}"))
            for m in fdp.message_type}


def sequence_example(jpegs: list[bytes], label: int, label_text: str | None = None) -> bytes:
    """A serialized DMVR video record (what DMVR's generate_from_file.py writes, for tests and examples)."""
    seq = messages()["SequenceExample"]()
    seq.context.feature[LABEL_KEY].int64_list.value.append(int(label))
    if label_text is not None:
        seq.context.feature[LABEL_TEXT_KEY].bytes_list.value.append(label_text.encode())
    frames = seq.feature_lists.feature_list[IMAGE_KEY].feature
    for jpeg in jpegs:
        frames.add().bytes_list.value.append(jpeg)
    return seq.SerializeToString()


def parse(data: bytes):
    """(jpeg frames, label, label text or None) of one serialized record; a malformed one is a DecodeError."""
    from google.protobuf.message import DecodeError as ProtoError

    seq = messages()["SequenceExample"]()
    try:
        seq.ParseFromString(data)
    except ProtoError as e:
        raise DecodeError(f"not a tf.train.SequenceExample ({e})") from None
    if IMAGE_KEY not in seq.feature_lists.feature_list:
        raise DecodeError(f"no feature list {IMAGE_KEY!r} (a DMVR video record has its JPEG frames there)")
    frames = [f.bytes_list.value[0] for f in seq.feature_lists.feature_list[IMAGE_KEY].feature
              if f.bytes_list.value]
    context = seq.context.feature
    if LABEL_KEY not in context or not context[LABEL_KEY].int64_list.value:
        raise DecodeError(f"no context feature {LABEL_KEY!r}")
    text = context[LABEL_TEXT_KEY].bytes_list.value if LABEL_TEXT_KEY in context else []
    return frames, int(context[LABEL_KEY].int64_list.value[0]), (text[0].decode("utf-8", "replace") if text else None)


# --------------------------------------------------------------------------------------------------------------
# the source


def _scan(path: str) -> dict:
    """Offsets, frame counts and labels of every record of one file (cached), and where it stopped being readable."""
    st = os.stat(path)
    key = hashlib.sha256(json.dumps([SCAN_VERSION, os.path.abspath(path), st.st_size, st.st_mtime_ns]).encode())
    cache_file = cache_dir() / "dmvr" / f"{key.hexdigest()[:20]}.json"
    try:
        return json.loads(cache_file.read_text())
    except (OSError, ValueError):
        pass
    out = {"offsets": [], "frames": [], "labels": [], "texts": {}, "failures": []}
    with open(path, "rb") as f:
        offset = 0
        while offset < st.st_size:
            try:
                data = read_record(f, offset)
            except DecodeError as e:  # the framing is lost: nothing after this point can be found
                out["failures"].append([path, str(e)])
                break
            start, offset = offset, offset + 16 + len(data)
            try:
                frames, label, text = parse(data)
            except DecodeError as e:
                out["failures"].append([f"{path}@{start}", str(e)])
                continue
            out["offsets"].append(start)
            out["frames"].append(len(frames))
            out["labels"].append(label)
            if text is not None:
                out["texts"][str(label)] = text
    try:
        from vivit_cli.io import atomic_write_json

        atomic_write_json(cache_file, out)
    except OSError:
        pass  # a read-only cache only costs a rescan
    return out


class DmvrReader:
    def __init__(self, jpegs: list[bytes], short_side: int | None):
        self.jpegs, self.short_side, self.num_frames = jpegs, short_side, len(jpegs)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        from .records import decode_jpeg

        wanted = np.asarray(indices)
        decoded = {i: _resize(decode_jpeg(self.jpegs[i]), self.short_side)
                   for i in dict.fromkeys(int(i) for i in wanted)}
        return np.stack([decoded[int(i)] for i in wanted])


def _resize(frame: np.ndarray, short_side: int | None) -> np.ndarray:
    # Scenic's records are usually stored at short side 256 already; larger ones are scaled down as video is.
    h, w = target_size(frame.shape[0], frame.shape[1], short_side)
    if (h, w) == frame.shape[:2]:
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))


@dataclass
class DmvrSplit(Split):
    in_process_reads: ClassVar[bool] = True  # JPEG decoding holds the GIL: no reader threads (data/pipeline.py)
    files: list[str] = field(default_factory=list)
    file_of: np.ndarray | None = None
    offsets: np.ndarray | None = None
    num_frames: np.ndarray | None = None
    short_side: int | None = None

    def open_reader(self, i: int) -> DmvrReader:
        path = self.files[int(self.file_of[i])]
        with open(path, "rb") as f:
            jpegs, _, _ = parse(read_record(f, int(self.offsets[i])))
        return DmvrReader(jpegs, self.short_side)

    def frame_counts(self) -> list[int]:
        return [int(n) for n in self.num_frames]

    def where(self, i: int) -> str:
        return f"{self.files[int(self.file_of[i])]}@{int(self.offsets[i])}"


def _split_of(name: str) -> str | None:
    head = name.split(".")[0].split("-")[0].split("@")[0].split("_")[0].lower()
    head = SPLIT_ALIASES.get(head, head)
    return head if head in ("train", "val", "test") else None


@register("dmvr")
def open_dmvr(arg: str, ctx: OpenContext) -> Source:
    root = Path(arg).expanduser()
    if root.is_file():
        files = {(_split_of(root.name) or "train"): [root]}
    elif root.is_dir():
        files = {}
        for p in sorted(root.iterdir()):
            split = _split_of(p.name) if p.is_file() and "tfrecord" in p.name else None
            if split:
                files.setdefault(split, []).append(p)
        if not files:
            raise VivitError(f"data.source=dmvr:{arg}: no <split>*.tfrecord* files (train, validation, test)")
    else:
        raise VivitError(f"data.source=dmvr:{arg}: no such file or folder")
    failures, texts, scanned, parts = [], {}, 0, {}
    for split in ("train", "val", "test"):
        for k, p in enumerate(files.get(split, [])):
            scan = _scan(str(p))
            scanned += len(scan["offsets"]) + len(scan["failures"])
            failures += [tuple(f) for f in scan["failures"]]
            texts.update(scan["texts"])
            frames = np.asarray(scan["frames"], np.int64)
            short = frames < ctx.span  # as a video source drops a file too short for the clip
            failures += [(f"{p}@{o}", f"only {n} frames, a clip needs {ctx.span} (data.frames x data.stride)")
                         for o, n in zip(np.asarray(scan["offsets"])[short], frames[short])]
            keep = ~short
            part = parts.setdefault(split, {"file_of": [], "offsets": [], "frames": [], "labels": []})
            part["file_of"] += [k] * int(keep.sum())
            part["offsets"] += np.asarray(scan["offsets"], np.int64)[keep].tolist()
            part["frames"] += frames[keep].tolist()
            part["labels"] += np.asarray(scan["labels"], np.int64)[keep].tolist()
    top = max((max(p["labels"]) for p in parts.values() if p["labels"]), default=-1)
    if top < 0:
        raise VivitError(f"data.source=dmvr:{arg}: no readable video records "
                         + (f"({failures[0][0]}: {failures[0][1]})" if failures else ""))
    if min(min(p["labels"]) for p in parts.values() if p["labels"]) < 0:
        raise VivitError(f"data.source=dmvr:{arg}: a negative {LABEL_KEY}")
    names = tuple(texts.get(str(i), str(i)) for i in range(top + 1))
    splits = {s: DmvrSplit(s, np.asarray(p["labels"], np.int32), files=[str(f) for f in files[s]],
                           file_of=np.asarray(p["file_of"], np.int32), offsets=np.asarray(p["offsets"], np.int64),
                           num_frames=np.asarray(p["frames"], np.int64), short_side=ctx.short_side)
              for s, p in parts.items() if p["labels"]}
    return Source("dmvr", f"dmvr:{arg}", names, splits, failures=failures, scanned=scanned,
                  info={"files": sum(len(v) for v in files.values())})
