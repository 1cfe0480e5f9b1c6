"""`vivit data prepare SPEC --out DIR`: every clip (or segment) of every split decoded once, on all cores, into the
records of data/records.py (the layout is described there and in docs/data.md).

A shard is one task for a worker process: it decodes its clips, encodes their frames as JPEG, writes the shard
to a temp name, fsyncs and renames it, then writes the shard's JSON the same way. A rerun skips every shard whose
JSON exists, so kill -9 loses at most the shards in flight, and gives the same bytes as an uninterrupted run (the
decoding and the encoder are deterministic). The index files and the manifest are written after the last shard.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from vivit_cli.errors import VivitError
from vivit_cli.io import atomic_write_json

from .sources import records as R
from .video import DecodeError

DEFAULT_CLIPS_PER_SHARD = 32
DEFAULT_QUALITY = 90
PROCESS_ALIGN = 8  # shard counts are multiples of this, so 1, 2, 4 or 8 evaluating processes read whole shards
# Frames decoded at once while encoding one clip: a long Epic-Kitchens segment (minutes at 50-60 fps) would
# otherwise sit decoded in memory whole, about 1.3 GB per 1,000 frames at 256x455 per worker; 512 bound it to
# ~180 MB and leave short clips in one call. Sequential chunks seek to their first frame, same pixels.
DECODE_CHUNK = 512


def shard_count(clips: int, clips_per_shard: int) -> int:
    want = -(-clips // max(clips_per_shard, 1))
    return max(1, min(clips, -(-want // PROCESS_ALIGN) * PROCESS_ALIGN))


def make_plan(src, short_side: int | None, quality: int, clips_per_shard: int) -> dict:
    return {"format": R.FORMAT, "version": R.VERSION, "source": src.spec, "short_side": short_side,
            "jpeg_quality": quality,
            "splits": {name: {"clips": len(sp), "shards": shard_count(len(sp), clips_per_shard)}
                       for name, sp in src.splits.items() if len(sp)}}


def _check_plan(out: Path, plan: dict) -> None:
    """A rerun continues its own plan; a folder of another version, source or setting is left untouched."""
    path = out / "prepare.json"
    if not path.is_file():
        if any(out.iterdir()):
            raise VivitError(f"{out}: not empty and not a records folder (no prepare.json): choose another --out")
        atomic_write_json(path, plan)
        return
    old = R._read_json(path, "records plan")
    R.check_version(path, old)
    for key in ("source", "short_side", "jpeg_quality", "splits"):
        if old.get(key) != plan[key]:
            raise VivitError(f"{path}: prepared with {key}={json.dumps(old.get(key))[:120]}, this run asks for "
                             f"{json.dumps(plan[key])[:120]}: use another --out (nothing there was changed)")


# --------------------------------------------------------------------------------------------------------------
# the worker side

_SPLITS: dict = {}


def _init_worker(splits: dict) -> None:
    global _SPLITS
    _SPLITS = splits
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def write_shard(split_name: str, k: int, count: int, out: str, quality: int) -> dict:
    """Decodes clips k, k + count, ... of the split into shard k of `count`; returns (and writes) its JSON."""
    from array_record.python.array_record_module import ArrayRecordWriter

    split = _SPLITS[split_name]
    name = R.shard_name(split_name, k, count)
    final, tmp = Path(out) / f"{name}.array_record", Path(out) / f".{name}.array_record.{os.getpid()}.tmp"
    clips, failures = [], []
    writer = ArrayRecordWriter(str(tmp), "group_size:1,uncompressed")
    try:
        for i in range(k, len(split), count):
            try:
                jpegs, size = _encoded_frames(split.reader(i), quality)
            except (DecodeError, OSError) as e:
                failures.append([split.where(i), str(e)])
                continue
            writer.write(R.encode_clip(i, jpegs))
            segment = split.segment(i)
            clips.append({"source_index": i, "pos": len(clips), "num_frames": len(jpegs),
                          "height": size[0], "width": size[1],
                          "label": np.asarray(split.label(i)).tolist(), "segment": list(segment) if segment else None})
    finally:
        writer.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    meta = {"split": split_name, "shard": k, "shards": count, "file": final.name, "clips": clips,
            "failures": failures}
    atomic_write_json(Path(out) / f"{name}.json", meta)
    return meta


def _encoded_frames(reader, quality: int) -> tuple[list[bytes], tuple[int, int]]:
    """Every frame of the clip as JPEG, decoded DECODE_CHUNK frames at a time; and the frames' (height, width)."""
    jpegs, size = [], (0, 0)
    for lo in range(0, reader.num_frames, DECODE_CHUNK):
        frames = reader.frames(np.arange(lo, min(lo + DECODE_CHUNK, reader.num_frames)))
        size = (int(frames.shape[1]), int(frames.shape[2]))
        jpegs += [R.encode_jpeg(f, quality) for f in frames]
    return jpegs, size


def _write_shard_task(args) -> dict:
    return write_shard(*args)


# --------------------------------------------------------------------------------------------------------------
# the main side


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from vivit_cli.term import console

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("clips"), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[fail]}"),
                    console=console(stderr=True), disable=not enabled, transient=False)


def prepare(src, out: str | os.PathLike, *, short_side: int | None, quality: int = DEFAULT_QUALITY,
            clips_per_shard: int = DEFAULT_CLIPS_PER_SHARD, workers: int | None = None,
            progress: bool = True) -> dict:
    """Writes (or finishes) the records of `src` under `out`; returns the manifest."""
    out = Path(out).expanduser()
    if not 1 <= quality <= 100:
        raise VivitError(f"--quality {quality}: a JPEG quality is 1..100")
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(src, short_side, quality, clips_per_shard)
    _check_plan(out, plan)
    if (out / "manifest.json").is_file():
        return R.read_manifest(out)
    metas: dict[tuple[str, int], dict] = {}
    todo = []
    for name, entry in plan["splits"].items():
        for k in range(entry["shards"]):
            meta_path = out / f"{R.shard_name(name, k, entry['shards'])}.json"
            if meta_path.is_file() and (out / f"{R.shard_name(name, k, entry['shards'])}.array_record").is_file():
                metas[(name, k)] = R._read_json(meta_path, "shard list")
            else:
                todo.append((name, k, entry["shards"], str(out), quality))
    for stale in out.glob(".*.tmp"):  # shards a killed run had in flight
        stale.unlink(missing_ok=True)
    total = sum(e["clips"] for e in plan["splits"].values())
    done = sum(len(m["clips"]) + len(m["failures"]) for m in metas.values())
    failed = sum(len(m["failures"]) for m in metas.values())
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    with _progress(progress) as bar:
        task = bar.add_task(f"prepare {src.spec}", total=total, completed=done, fail="")
        if todo:
            splits = {name: src.splits[name] for name in plan["splits"]}
            if workers == 1:
                _init_worker(splits)
                results = (write_shard(*t) for t in todo)
                _collect(results, metas, bar, task, failed)
            else:
                import multiprocessing

                # spawn: a fork would copy this process's threads (PyAV's, grain's) mid-state
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                         initargs=(splits,)) as pool:
                    futures = [pool.submit(_write_shard_task, t) for t in todo]
                    _collect((f.result() for f in as_completed(futures)), metas, bar, task, failed)
    return _finish(src, out, plan, metas)


def _collect(results, metas: dict, bar, task, failed: int) -> None:
    for meta in results:
        metas[(meta["split"], meta["shard"])] = meta
        failed += len(meta["failures"])
        bar.update(task, advance=len(meta["clips"]) + len(meta["failures"]),
                   fail=f"{failed} failed" if failed else "")


def _finish(src, out: Path, plan: dict, metas: dict) -> dict:
    splits, failures = {}, [list(f) for f in src.failures]
    for name, entry in plan["splits"].items():
        count = entry["shards"]
        rows = []
        for k in range(count):
            meta = metas[(name, k)]
            rows += [(c["source_index"], k, c) for c in meta["clips"]]
            failures += meta["failures"]
        rows.sort(key=lambda r: r[0])
        clips = [c for _, _, c in rows]
        segments = [c["segment"] or [-1, -1] for c in clips]
        index = {"source_index": np.array([r[0] for r in rows], np.int64), "shard": np.array([r[1] for r in rows],
                                                                                             np.int32),
                 "pos": np.array([c["pos"] for c in clips], np.int64),
                 "labels": np.array([c["label"] for c in clips], np.int32) if clips else np.zeros(0, np.int32),
                 "num_frames": np.array([c["num_frames"] for c in clips], np.int64),
                 "height": np.array([c["height"] for c in clips], np.int32),
                 "width": np.array([c["width"] for c in clips], np.int32),
                 "segment": np.array(segments, np.int64).reshape(-1, 2)}
        index_name = f"{name}.index.npz"

        def write(f, index=index):
            np.savez(f, **index)

        from vivit_cli.io import atomic_write

        atomic_write(out / index_name, write)
        splits[name] = {"clips": len(clips), "source_clips": entry["clips"], "shards": count,
                        "files": [f"{R.shard_name(name, k, count)}.array_record" for k in range(count)],
                        "index": index_name}
    manifest = {"format": R.FORMAT, "version": R.VERSION, "source": src.spec, "kind": src.kind,
                "short_side": plan["short_side"], "jpeg_quality": plan["jpeg_quality"],
                "label_names": list(src.label_names),
                "heads": [[h, list(names)] for h, names in src.heads],
                "splits": splits, "split_order": list(splits),
                # what data.max_skip_fraction counts failures against: the source's files, else its clips
                "scanned": src.scanned or sum(e["clips"] for e in plan["splits"].values()), "source_failures": len(src.failures),
                "failures": failures, "source_info": src.info}
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
