"""records:DIR (`vivit data prepare`) and dmvr:PATH on real files: h264 and vp9 videos written with PyAV, real
ArrayRecord shards, TFRecords written here with TFRecord framing and protobuf SequenceExamples."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vivit_cli import config
from vivit_cli.data import pipeline, sources
from vivit_cli.data.prepare import prepare
from vivit_cli.data.sources import dmvr
from vivit_cli.data.sources import records as R
from vivit_cli.data.video import target_size, write_video
from vivit_cli.errors import VivitError

ROOT = Path(__file__).resolve().parents[1]
# JPEG tolerance: what a stored frame (quality 90, 4:4:4) may differ from the decoded video by, in 0-255 levels,
# on these small, colourful frames (the worst case for JPEG). Measured here: mean up to 2.3, 99.9th percentile 17.
MEAN_TOL, P999_TOL = 3.0, 28


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path_factory.getbasetemp() / "vivit-cache"))


def _clip(label: int, n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Smooth moving gradients whose hue says the class (real footage compresses like this; noise would not)."""
    t, y, x = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    phase = seed * 0.7
    base = [np.sin(x / 7 + t / 3 + phase), np.cos(y / 5 - t / 4), np.sin((x + y) / 9 + phase)]
    video = np.stack([110 + 90 * base[(c + label) % 3] for c in range(3)], -1)
    return np.clip(video, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    """split/class/*: h264 non-square (96x64) and vp9 square (56x56) clips, one truncated and one missing frame."""
    root = tmp_path_factory.mktemp("rec-videos")
    k = 0
    for split, per in (("train", 3), ("val", 2)):
        for label, cls in enumerate(["archery", "bowling"]):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per):
                codec, ext, (h, w) = (("libx264", "mp4", (64, 96)) if i % 2 == 0 else
                                      ("libvpx-vp9", "webm", (56, 56)))
                write_video(str(d / f"{cls}_{i}.{ext}"), _clip(label, 14 + i, h, w, k), codec)
                k += 1
    good = (root / "train" / "archery" / "archery_0.mp4").read_bytes()
    (root / "train" / "bowling" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    return root


def _cfg(source, **sets):
    base = {"data.source": source, "data.frames": 4, "data.stride": 2, "data.crop": 32, "data.max_skip_fraction": 0.5}
    return config.build({**base, **sets})


def _open(spec, cfg=None):
    d = (cfg or _cfg(spec)).data
    return sources.open_source(spec, frames=d.frames, stride=d.stride, crop=d.crop, max_skip_fraction=None)


@pytest.fixture(scope="module")
def prepared(video_root, tmp_path_factory):
    # Set for the preparation only (a module fixture is made before the per-test one above): a bare os.environ
    # write here once sent every later test of the session to this empty cache, compiling and generating cold.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIVIT_CACHE", str(tmp_path_factory.getbasetemp() / "vivit-cache"))
        out = tmp_path_factory.mktemp("rec") / "records"
        src = _open(f"folder:{video_root}")
        manifest = prepare(src, out, short_side=37, clips_per_shard=2, workers=1, progress=False)
    return src, out, manifest


def _close(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
    return float(diff.mean()), float(np.percentile(diff, 99.9))


def test_same_clips_as_the_source_within_jpeg_tolerance(prepared):
    src, out, _ = prepared
    rec = _open(f"records:{out}")
    assert rec.label_names == src.label_names and set(rec.splits) == set(src.splits)
    for name, sp in src.splits.items():
        rsp = rec.split(name)
        assert len(rsp) == len(sp) and np.array_equal(rsp.labels, sp.labels)
        for i in range(len(sp)):
            a, b = sp.reader(i), rsp.reader(i)
            assert a.num_frames == b.num_frames
            idx = np.array([0, b.num_frames - 1, 3, 3])
            fa, fb = a.frames(idx), b.frames(idx)
            assert fa.shape == fb.shape  # the short side resize (37) happened once, before encoding
            mean, p999 = _close(fa, fb)
            assert mean <= MEAN_TOL and p999 <= P999_TOL, (sp.where(i), mean, p999)
    shapes = {(s.shape[0], s.shape[1]) for s in (rec.split("train").reader(i).frames(np.array([0]))[0]
                                                  for i in range(len(rec.split("train"))))}
    assert shapes == {target_size(64, 96, 37), (37, 37)}  # non-square and square kept their aspect


def test_train_and_multi_view_eval_batches_match_the_source(prepared, video_root):
    _, out, _ = prepared
    a_cfg, b_cfg = _cfg(f"folder:{video_root}"), _cfg(f"records:{out}")
    a = pipeline.train_iterator(a_cfg, batch_size=2, seed=3)
    b = pipeline.train_iterator(b_cfg, batch_size=2, seed=3)
    for _ in range(3):  # same clips, starts, crops, flips: only the JPEG differs
        x, y = next(a), next(b)
        assert np.array_equal(x["label"], y["label"])
        assert np.abs(x["video"] - y["video"]).mean() * 127.5 <= MEAN_TOL
    assert a.get_state() == b.get_state()
    ea = list(pipeline.eval_iterator(a_cfg, split="val", views=(2, 3), batch_size=3))
    eb = list(pipeline.eval_iterator(b_cfg, split="val", views=(2, 3), batch_size=3))
    for x, y in zip(ea, eb, strict=True):
        assert x["video"].shape[1] == 6
        assert np.array_equal(x["index"], y["index"]) and np.array_equal(x["label"], y["label"])
        assert np.abs(x["video"] - y["video"]).mean() * 127.5 <= MEAN_TOL


def test_open_shard_files_are_bounded(prepared):
    _, out, _ = prepared
    sp = _open(f"records:{out}").split("train")
    sp.max_open = 2
    first = [sp.reader(i).frames(np.array([0])) for i in range(len(sp))]
    assert len(sp._readers) == 2
    for _ in range(2):
        again = [sp.reader(i).frames(np.array([0])) for i in reversed(range(len(sp)))][::-1]
        assert len(sp._readers) <= 2 and all(np.array_equal(a, b) for a, b in zip(first, again))


def test_layout_shards_by_process(prepared):
    _, out, manifest = prepared
    from vivit_cli.data.prepare import shard_count

    # a multiple of 8 shards (1, 2, 4 or 8 processes each read whole shards), never more shards than clips
    assert (shard_count(100, 32), shard_count(1000, 32), shard_count(6, 2), shard_count(9, 1)) == (8, 32, 6, 9)
    assert manifest["splits"]["train"]["shards"] == 6
    rec = _open(f"records:{out}")
    sp = rec.split("train")
    # clip i of the source split lives in shard i % S: a process evaluating i::n (n dividing S) reads its shards only
    assert [int(s) for s in sp.shard] == [i % 6 for i in sp.source_index] and list(sp.source_index) == list(range(6))
    meta = json.loads((out / "train-00000-of-00006.json").read_text())
    assert [c["source_index"] for c in meta["clips"]] == [0]


def test_inspect_gives_the_source_counts_and_lists_failures(prepared, video_root, capsys):
    from vivit_cli.cli.app import main

    _, out, _ = prepared
    assert main(["data", "inspect", f"folder:{video_root}", "--json", "--set", "data.frames=4"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["data", "inspect", f"records:{out}", "--json", "--set", "data.frames=4"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert {n: (s["clips"], s["per_class"]) for n, s in a["splits"].items()} == \
        {n: (s["clips"], s["per_class"]) for n, s in b["splits"].items()}
    assert a["decode_failures"] == b["decode_failures"] == 1
    assert [f["file"] for f in b["failures"]] == [f["file"] for f in a["failures"]]
    assert b["files_scanned"] == a["files_scanned"] and b["info"]["prepared_from"] == f"folder:{video_root}"


def test_bad_records_folders(prepared, video_root, tmp_path, capsys):
    from vivit_cli.cli.app import main

    _, out, _ = prepared
    other = tmp_path / "other"
    other.mkdir()
    for f in out.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "version": 0}))
    assert main(["data", "inspect", f"records:{other}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "version 0" in err and "manifest.json" in err and len(err.splitlines()) == 1
    # prepare into it: refused, nothing touched
    before = {f.name: f.read_bytes() for f in other.iterdir()}
    plan = json.loads((other / "prepare.json").read_text())
    (other / "prepare.json").write_text(json.dumps({**plan, "version": 0}))
    before["prepare.json"] = (other / "prepare.json").read_bytes()
    assert main(["data", "prepare", f"folder:{video_root}", "--out", str(other), "--set", "data.frames=4",
                 "--set", "data.stride=2"]) == 2
    assert "version 0" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in other.iterdir()} == before
    # incomplete: a shard gone, or no manifest
    (other / "manifest.json").write_text(json.dumps(manifest))
    (other / "val-00001-of-00004.array_record").unlink()
    with pytest.raises(VivitError, match="val-00001-of-00004.array_record: missing shard"):
        _open(f"records:{other}")
    (other / "manifest.json").unlink()
    with pytest.raises(VivitError, match="incomplete records"):
        _open(f"records:{other}")
    # another source into a finished folder: refused
    assert main(["data", "prepare", f"folder:{video_root / 'train'}", "--out", str(out)]) == 2
    assert "prepared with source=" in capsys.readouterr().err
    # another crop than it was prepared for
    with pytest.raises(VivitError, match="short side 37, this config needs 64"):
        sources.open_source(f"records:{out}", frames=4, stride=2, crop=56)


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_same_records(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cmd(out, workers):
        return [sys.executable, "-m", "vivit_cli.cli.app", "data", "prepare", "embedded:motion", "--out", str(out),
                "--workers", str(workers), "--clips-per-shard", "25", "--json"]

    whole = tmp_path / "whole"
    subprocess.run(cmd(whole, 2), env=env, check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed, 2), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("*-of-*.json"))) < 8:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the prepare and its workers, mid-run
    proc.wait()
    time.sleep(0.5)
    done = len(list(killed.glob("*-of-*.json")))
    assert not (killed / "manifest.json").exists() and 8 <= done < 240, done
    with pytest.raises(VivitError, match="incomplete records"):
        _open(f"records:{killed}", _cfg("embedded:motion", **{"data.frames": 8, "data.stride": 1}))
    subprocess.run(cmd(killed, 2), env=env, check=True, capture_output=True, timeout=300)
    files = sorted(f.name for f in whole.iterdir())
    assert files == sorted(f.name for f in killed.iterdir())  # no temp file left
    assert all((whole / f).read_bytes() == (killed / f).read_bytes() for f in files)


def test_prepare_decodes_long_clips_in_chunks_to_the_same_bytes(prepared, video_root, tmp_path, monkeypatch):
    """Clips longer than DECODE_CHUNK frames are decoded a chunk at a time (a bounded memory for long Epic-Kitchens
    segments): 5-frame chunks of the 14-16-frame h264 and vp9 clips give the same records, byte for byte."""
    from vivit_cli.data import prepare as P

    src, whole, _ = prepared
    monkeypatch.setattr(P, "DECODE_CHUNK", 5)
    chunked = tmp_path / "chunked"
    prepare(_open(f"folder:{video_root}"), chunked, short_side=37, clips_per_shard=2, workers=1, progress=False)
    files = sorted(f.name for f in whole.iterdir())
    assert files == sorted(f.name for f in chunked.iterdir())
    assert all((whole / f).read_bytes() == (chunked / f).read_bytes() for f in files)


# --------------------------------------------------------------------------------------------------------------
# dmvr


def test_crc32c_and_framing_match_tensorflow_s():
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value
    crc = google_crc32c.value(b"abc")  # TFRecord's mask: rotate right by 15, add 0xa282ead8
    assert dmvr.masked_crc(b"abc") == ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _dmvr_folder(root: Path) -> dict:
    clips = {}
    for split, n in (("train", 4), ("validation", 2)):
        payloads = []
        for i in range(n):
            video = _clip(i % 2, 9 + i, 48, 64, i + (10 if split == "train" else 20))
            clips[(split, i)] = video
            payloads.append(dmvr.sequence_example([R.encode_jpeg(f, 95) for f in video], i % 2,
                                                  ["disk", "square"][i % 2]))
        half = n // 2
        dmvr.write_tfrecord(root / f"{split}.tfrecord-00000-of-00002", payloads[:half])
        dmvr.write_tfrecord(root / f"{split}.tfrecord-00001-of-00002", payloads[half:])
    return clips


def test_dmvr_read_back(tmp_path):
    clips = _dmvr_folder(tmp_path)
    (tmp_path / "README.txt").write_text("not a record")
    src = sources.open_source(f"dmvr:{tmp_path}", frames=4, stride=2, crop=42)  # short side 48: no resize
    assert src.label_names == ("disk", "square") and {k: len(v) for k, v in src.splits.items()} == {"train": 4,
                                                                                                   "val": 2}
    for (split, i), video in clips.items():
        sp = src.split(split)
        assert sp.label(i) == i % 2
        r = sp.reader(i)
        assert r.num_frames == len(video)
        mean, p999 = _close(r.frames(np.arange(len(video))), video)
        assert mean <= MEAN_TOL and p999 <= P999_TOL
    batch = next(pipeline.train_iterator(_cfg(f"dmvr:{tmp_path}", **{"data.crop": 40}), batch_size=2))
    assert batch["video"].shape == (2, 4, 40, 40, 3) and set(batch["label"]) <= {0, 1}
    small = sources.open_source(f"dmvr:{tmp_path}", frames=4, stride=2, crop=28)  # short side 32: resized
    assert small.split("train").reader(0).frames(np.array([0])).shape == (1, *target_size(48, 64, 32), 3)


def test_dmvr_corrupt_record_is_a_counted_failure(tmp_path):
    _dmvr_folder(tmp_path)
    path = tmp_path / "train.tfrecord-00001-of-00002"
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # inside the first record's bytes: its data CRC no longer matches
    path.write_bytes(bytes(data))
    src = sources.open_source(f"dmvr:{tmp_path}", frames=4, stride=2, crop=42, max_skip_fraction=None)
    assert len(src.split("train")) == 2 and len(src.failures) == 1
    assert "CRC mismatch" in src.failures[0][1] and str(path) in src.failures[0][0]
    with pytest.raises(VivitError, match="CRC mismatch"):
        sources.open_source(f"dmvr:{tmp_path}", frames=4, stride=2, crop=42, max_skip_fraction=0.01)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VivitError, match="no <split>"):
        sources.open_source(f"dmvr:{tmp_path / 'empty'}", frames=4)


def test_large_frame_crop_is_the_plain_formula_bit_for_bit():
    from vivit_cli.data import transforms as T

    def plain(frames, top, left, size_h, size_w, out_h, out_w):  # the formula as written before it was sped up
        r0, r1, wr = T._axis_weights(frames.shape[1], top, size_h, out_h)
        c0, c1, wc = T._axis_weights(frames.shape[2], left, size_w, out_w)
        lo, hi = int(c0.min()), int(c1.max()) + 1
        a = frames[:, r0, lo:hi].astype(np.float32)
        rows = a + (frames[:, r1, lo:hi].astype(np.float32) - a) * wr[None, :, None, None]
        left_cols = rows[:, :, c0 - lo]
        return left_cols + (rows[:, :, c1 - lo] - left_cols) * wc[None, None, :, None]

    frames = np.random.default_rng(0).integers(0, 256, (3, 120, 161, 3), dtype=np.uint8)
    for box in [(0, 0, 120, 120, 104, 104), (3.7, 20.2, 95.5, 95.5, 104, 104), (0, 0, 120, 161, 50, 70)]:
        assert np.array_equal(T.crop_resize(frames, *box), plain(frames, *box))
        # The flip and the scaling done frame by frame inside the crop: the same pixels as after it, small frames too.
        for f in (frames, frames[:, :40, :50]):
            whole = T.crop_resize(f, *box)
            for flip in (False, True):
                after = T.to_unit_range(np.ascontiguousarray(whole[:, :, ::-1] if flip else whole))
                assert np.array_equal(T.crop_resize(f, *box, flip=flip, unit_range=True), after)


def test_segments_and_two_heads_survive_prepare(tmp_path):
    """An Epic-Kitchens-like source: segments of longer clips, labels [N, 2] (verb, noun) and two heads."""
    rng = np.random.default_rng(1)
    videos = np.stack([_clip(i % 2, 20, 40, 48, i) for i in range(4)])
    labels = rng.integers(0, 3, (4, 2)).astype(np.int32)
    segments = np.array([[0, 10], [5, 20], [2, 9], [11, 19]], np.int64)
    heads = (("verb", ("cut", "wash", "open")), ("noun", ("knife", "pan", "tap")))
    src = sources.Source("npy", "npy:synthetic", heads[0][1], {"train": sources.ArraySplit(
        "train", labels, segments=segments, videos=videos)}, heads=heads)
    out = tmp_path / "rec"
    prepare(src, out, short_side=37, workers=1, progress=False)
    rec = sources.open_source(f"records:{out}", frames=4, stride=2, crop=32)
    sp = rec.split("train")
    assert rec.heads == heads and np.array_equal(sp.labels, labels) and sp.labels.shape == (4, 2)
    for i, (a, b) in enumerate(segments):
        r = sp.reader(i)
        assert r.num_frames == b - a and sp.segment(i) is None  # the record is the segment
        mean, _ = _close(r.frames(np.array([0, b - a - 1])), videos[i, [a, b - 1]])
        assert mean <= MEAN_TOL
    with np.load(out / "train.index.npz") as z:
        assert np.array_equal(z["segment"], segments)  # where each clip came from


class _OneBroken(sources.ArraySplit):
    def open_reader(self, i):
        if i == 1:
            raise sources.DecodeError("truncated: needed frame 9, the file ends before it")
        return super().open_reader(i)


def test_a_clip_that_fails_while_preparing_is_listed_not_fatal(tmp_path, capsys):
    from vivit_cli.cli.app import main

    videos = np.stack([_clip(i % 2, 10, 40, 48, i) for i in range(3)])
    src = sources.Source("npy", "npy:synthetic", ("a", "b"), {"train": _OneBroken(
        "train", np.array([0, 1, 0], np.int32), videos=videos)})
    out = tmp_path / "rec"
    manifest = prepare(src, out, short_side=37, workers=1, progress=False)
    assert manifest["splits"]["train"]["clips"] == 2 and manifest["splits"]["train"]["source_clips"] == 3
    assert manifest["failures"] == [["train[1]", "truncated: needed frame 9, the file ends before it"]]
    assert main(["data", "inspect", f"records:{out}", "--json", "--set", "data.frames=4"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"]["train"]["clips"] == 2 and info["failures"][0]["file"] == "train[1]"
    with pytest.raises(VivitError, match=r"train\[1\]: truncated.*1 of 3 files unusable"):  # as its source would
        sources.open_source(f"records:{out}", frames=4, stride=2, crop=32)
    rec = sources.open_source(f"records:{out}", frames=4, stride=2, crop=32, max_skip_fraction=0.5)
    assert list(rec.split("train").source_index) == [0, 2] and list(rec.split("train").labels) == [0, 0]


# ---- data.crop_on_device: the host sends uint8 windows, the compiled step crops ------------------------------
# Tolerance, in [-1, 1] units: the step computes the sampling positions in window coordinates (top - first row)
# and sums the two taps as a product, where the host adds a + (b - a) * w; at positions near 250 a float32 ulp
# is 1.5e-5 pixels, so pixels on a steep edge move by up to about 1e-4 (measured: 1.2e-4 at 224 crops). 5e-4 is
# 0.06 of a grey level: any wrong tap, row or flip moves pixels by whole levels.
DEVICE_TOL = 5e-4


@pytest.mark.parametrize("crop,scale_min,scale_max,h,w", [
    (224, 0.9, 1.33, 256, 455), (224, 0.9, 1.33, 341, 256), (32, 0.9, 1.33, 37, 37),
    (32, 0.5, 2.0, 37, 60), (224, 0.5, 1.0, 256, 455), (16, 1.0, 1.0, 18, 30)])
def test_device_crop_matches_the_host_crop(crop, scale_min, scale_max, h, w):
    import jax

    from vivit_cli.data import transforms as T
    from vivit_cli.train.device_crop import crop_batch

    spec = T.ClipSpec(frames=2, stride=1, crop=crop, scale_min=scale_min, scale_max=scale_max, flip=True,
                      on_device=True)
    frames = np.random.default_rng(h * w).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    windows, geometry, host = [], [], []
    for i in range(24):  # the same draws both ways: crop box, then flip
        cut = T.train_window(frames, np.random.default_rng(i), spec)
        assert cut is not None and cut[0].shape == (2, T.device_canvas(spec), T.device_canvas(spec), 3)
        windows.append(cut[0])
        geometry.append(cut[1])
        host.append(T.train_clip(frames, np.random.default_rng(i), spec))
    assert {g[6] for g in geometry} == {0.0, 1.0}  # both flips were drawn
    out = np.asarray(jax.jit(crop_batch, static_argnums=2)(np.stack(windows), np.stack(geometry), crop))
    assert out.shape == (24, 2, crop, crop, 3)
    assert np.abs(out - np.stack(host)).max() <= DEVICE_TOL


def test_device_crop_batches_are_the_host_batches_windowed(prepared):
    import jax

    from vivit_cli.train.device_crop import crop_batch

    _, out, _ = prepared
    host = pipeline.train_iterator(_cfg(f"records:{out}"), batch_size=2, seed=3)
    dev = pipeline.train_iterator(_cfg(f"records:{out}", **{"data.crop_on_device": True}), batch_size=2, seed=3)
    crop = jax.jit(crop_batch, static_argnums=2)
    for _ in range(4):
        x, y = next(host), next(dev)
        assert set(y) == {"window", "geometry", "label"} and y["window"].dtype == np.uint8
        assert np.array_equal(x["label"], y["label"])
        assert np.abs(np.asarray(crop(y["window"], y["geometry"], 32)) - x["video"]).max() <= DEVICE_TOL
    assert host.get_state() == dev.get_state()


def test_device_crop_refuses_frames_above_the_short_side_and_colour_augmentation(video_root):
    # Decoders and records give frames at the short side; in-memory clips (as TFDS gives them) need not.
    from vivit_cli.data.sources.base import ArraySplit

    split = ArraySplit("train", np.zeros(2, np.int32), videos=np.zeros((2, 4, 64, 96, 3), np.uint8))
    spec = pipeline.clip_spec(_cfg(f"folder:{video_root}", **{"data.crop_on_device": True, "data.crop": 16}))
    with pytest.raises(VivitError, match=r"train\[1\]: frames of 64x96 .* window of 21 .* short side 18"):
        pipeline.TrainMap(split, spec, 0.0)(1, np.random.default_rng(0))
    with pytest.raises(VivitError, match="data.crop_on_device=true .* data.color_jitter=0"):
        _cfg(f"records:{video_root}", **{"data.crop_on_device": True, "data.color_jitter": 0.5})


@pytest.mark.slow
def test_training_from_records_crops_on_device_as_on_the_host(prepared, tmp_path):
    from vivit_cli import train

    _, out, _ = prepared
    fast = {"model.hidden": 32, "model.layers": 1, "model.heads": 2, "model.mlp": 64, "model.tubelet": "2x8x8",
            "train.batch_size": 2, "train.steps": 4, "train.warmup_steps": 1, "run.log_every": 1,
            "data.eval_split": "val"}
    curves = {}
    for on in (False, True):
        cfg = _cfg(f"records:{out}", **fast, **{"data.crop_on_device": on})
        summary = train.run(cfg, tmp_path / str(on))
        assert summary["status"] == "done"
        rows = [json.loads(line) for line in (tmp_path / str(on) / "metrics.jsonl").read_text().splitlines()]
        curves[on] = [r["loss"] for r in rows if "loss" in r]
    assert len(curves[True]) == 4 and np.allclose(curves[True], curves[False], rtol=1e-4)
