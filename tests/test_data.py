"""The embedded dataset, clip sampling and the grain iterators (determinism, resume, sharding, views)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vivit_cli import config
from vivit_cli.data import embedded, pipeline, sources
from vivit_cli.data import transforms as T
from vivit_cli.errors import VivitError


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path_factory.getbasetemp() / "vivit-cache"))


def _npy_source(tmp_path, n=24, frames=12, size=20, labels=None, name="clips.npz"):
    """Clips whose pixel values encode (frame index, clip index), so tests can see what was sampled."""
    video = np.zeros((n, frames, size, size, 3), np.uint8)
    video[..., 0] = (np.arange(frames) * 12)[None, :, None, None]
    video[..., 1] = (np.arange(n) * 10 % 250)[:, None, None, None]
    lab = np.arange(n) if labels is None else labels
    path = tmp_path / name
    np.savez(path, train_video=video, train_label=lab, val_video=video[: n // 2], val_label=lab[: n // 2])
    return f"npy:{path}"


def _cfg(source, **sets):
    return config.build({"data.source": source, **{k.replace("__", "."): v for k, v in sets.items()}})


# ------------------------------------------------------------------------------------------------ generator


def test_generator_is_deterministic_and_seeded():
    a, la = embedded.generate("motion", "val", seed=0, count=40)
    b, lb = embedded.generate("motion", "val", seed=0, count=40)
    c, lc = embedded.generate("motion", "val", seed=1, count=40)
    assert a.shape == (40, embedded.MIN_FRAMES, embedded.SIZE, embedded.SIZE, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    # splits draw from different streams
    t, _ = embedded.generate("motion", "test", seed=0, count=40)
    assert not np.array_equal(a, t)


def test_generator_uses_every_class_and_moves():
    for task, k in (("motion", 8), ("appearance", 10)):
        v, lab = embedded.generate(task, "train", count=300)
        counts = np.bincount(lab, minlength=k)
        assert len(counts) == k and counts.min() > 8, counts
        # something changes between frames (the objects move), but the background stays put
        diff = np.abs(v[:, 1:].astype(int) - v[:, :-1].astype(int)).mean()
        assert 3 < diff < 40


def test_motion_clips_are_one_clip_long_and_move_every_frame(monkeypatch):
    monkeypatch.setattr(embedded, "SPLIT_SIZES", {"train": 16, "val": 8, "test": 8})
    src = sources.open_source("embedded:motion", frames=8)
    reader = src.split("train").reader(0)
    assert reader.num_frames == 8  # no temporal offset: the turn stays near the middle
    v = np.stack([src.split("train").reader(i).frames(np.arange(8)) for i in range(16)]).astype(np.float32)
    step = np.abs(np.diff(v, axis=1)).mean(axis=(0, 2, 3, 4))
    assert (step > 0.5 * step.mean()).all()  # every frame-to-frame step moves the target


def test_motion_order_is_not_in_the_bag_of_frames():
    """A nearest-centroid classifier on time-averaged clips cannot tell which actor moved first."""
    g = embedded.Geometry(frames=8)
    v, lab = embedded.generate("motion", "train", count=1500, geometry=g)
    vt, lt = embedded.generate("motion", "val", count=400, geometry=g)
    first, first_t = lab // 4, lt // 4  # 0: the disk moved first, 1: the square
    feats = v.astype(np.float32).mean(axis=1).reshape(len(v), -1)
    feats_t = vt.astype(np.float32).mean(axis=1).reshape(len(vt), -1)
    centroids = np.stack([feats[first == c].mean(0) for c in range(2)])
    pred = ((feats_t[:, None] - centroids[None]) ** 2).sum(-1).argmin(-1)
    assert 0.38 < (pred == first_t).mean() < 0.62


def test_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded, "SPLIT_SIZES", {"train": 16, "val": 8, "test": 8})
    g = embedded.Geometry()
    v1, l1 = embedded.load("appearance", "val", seed=5, geometry=g)
    vpath, lpath = embedded.cached_paths("appearance", "val", 5, g)
    assert vpath.is_file() and lpath.is_file()
    mtime = vpath.stat().st_mtime_ns
    v2, l2 = embedded.load("appearance", "val", seed=5, geometry=g)
    assert vpath.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(v1, v2)
    assert not list(vpath.parent.glob(".*.tmp"))



# Two processes that miss the cache together: the second waits on the folder's lock and reads the first one's
# files. The patched generate records each call and sleeps, so that without the lock both would generate.
_LOAD_TWICE = """
import sys, time
from vivit_cli.data import embedded
embedded.SPLIT_SIZES = {"train": 16, "val": 8, "test": 8}
real = embedded.generate
def generate(*a, **k):
    with open(sys.argv[1], "a") as f:
        f.write("generated\\n")
    time.sleep(1.0)
    return real(*a, **k)
embedded.generate = generate
videos, labels = embedded.load("motion", "val", seed=3)
print(int(videos.astype("int64").sum()), labels.tolist())
"""


def test_concurrent_misses_generate_a_split_once(tmp_path):
    log = tmp_path / "calls.log"
    env = {**os.environ, "VIVIT_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", _LOAD_TWICE, str(log)], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] and outs[0].strip()
    assert log.read_text().splitlines() == ["generated"]

# The first chunk of each split as the tables' runs read it (sha256 of the clips' and labels' bytes). A change here
# changes every table: a new split goes at the end of SPLIT_SIZES, a new generator bumps embedded.VERSION.
FIRST_CHUNKS = {("appearance", "train"): "d27e27dec96ebef2", ("appearance", "val"): "bd97e007c0a3b628",
                ("motion", "train"): "456106f693a81166", ("motion", "val"): "2748c6e72e120d56"}


def test_train_and_val_clips_are_pinned():
    for (task, split), digest in FIRST_CHUNKS.items():
        v, lab = embedded.generate(task, split, count=embedded._CHUNK, geometry=embedded.Geometry(frames=8))
        assert hashlib.sha256(v.tobytes() + lab.tobytes()).hexdigest()[:16] == digest, (task, split)


def test_test_split_is_large_held_out_and_last():
    # One run's sampling standard error at 50% top-1, sqrt(p (1 - p) / n), is about a point: 1.0 at 2,500 clips.
    assert list(embedded.SPLIT_SIZES) == ["train", "val", "test"]  # streams are keyed by position: append only
    n = embedded.SPLIT_SIZES["test"]
    assert n >= 2500 and 100 * math.sqrt(0.25 / n) <= 1.0
    for task in embedded.TASKS:
        digests = {}
        for split in embedded.SPLIT_SIZES:
            v, _ = embedded.generate(task, split, count=200, geometry=embedded.Geometry(frames=4))
            digests[split] = {hashlib.sha1(c.tobytes()).hexdigest() for c in v}
            assert len(digests[split]) == 200
        assert not digests["test"] & (digests["train"] | digests["val"])


def test_final_eval_scores_test_and_choices_use_val():
    cfg = config.build([])
    assert (cfg.data.train_split, cfg.data.val_split, cfg.data.eval_split) == ("train", "val", "test")
    # Smoke runs prove wiring, not accuracy; the paper's recipe reports Kinetics' validation set as the paper does.
    assert config.build([], preset="smoke").data.eval_split == "val"
    assert config.build([], preset="paper").data.eval_split == "val"


def test_cached_split_of_another_size_is_made_again(monkeypatch):
    g = embedded.Geometry(frames=4)
    monkeypatch.setattr(embedded, "SPLIT_SIZES", {"train": 16, "val": 8, "test": 8})
    small, _ = embedded.load("motion", "test", seed=7, geometry=g)
    assert len(small) == 8
    monkeypatch.setattr(embedded, "SPLIT_SIZES", {"train": 16, "val": 8, "test": 24})  # the split grew
    grown, labels = embedded.load("motion", "test", seed=7, geometry=g)
    assert len(grown) == len(labels) == 24
    np.testing.assert_array_equal(np.asarray(grown), embedded.generate("motion", "test", seed=7, geometry=g)[0])


def test_inspect_shows_every_split_and_what_it_is_for(monkeypatch, capsys):
    from vivit_cli.cli.app import main

    monkeypatch.setattr(embedded, "SPLIT_SIZES", {"train": 16, "val": 8, "test": 24})
    assert main(["data", "inspect", "embedded:motion:11", "--json"]) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    assert {k: v["clips"] for k, v in splits.items()} == {"train": 16, "val": 8, "test": 24}
    assert splits["test"]["role"] == "final eval, tables" and "train.eval_every" in splits["val"]["role"]
    assert main(["data", "inspect", "embedded:motion:11", "--set", "data.eval_split=val"]) == 0
    out = capsys.readouterr().out
    assert "48 clips in 3 splits" in out and "24" in out


def test_embedded_source_and_flip_default(monkeypatch):
    monkeypatch.setattr(embedded, "SPLIT_SIZES", {"train": 32, "val": 8, "test": 8})
    src = sources.open_source("embedded:motion:3", frames=8)
    assert src.num_classes == 8 and src.num_examples("train") == 32 and src.num_examples("validation") == 8
    assert src.label_names[0] == "disk-right-then-square"
    assert pipeline.clip_spec(_cfg("embedded:motion")).flip is False
    assert pipeline.clip_spec(_cfg("embedded:appearance")).flip is True
    assert pipeline.clip_spec(_cfg("embedded:motion", data__flip="true")).flip is True
    # longer clips than the stored 12 frames are generated on demand
    long = sources.open_source("embedded:appearance", frames=16, stride=1)
    assert long.split("train").reader(0).num_frames >= 16
    with pytest.raises(VivitError, match="embedded tasks"):
        sources.open_source("embedded:colour")
    with pytest.raises(VivitError, match="KIND:ARG"):
        sources.open_source("youtube:cats")


# ------------------------------------------------------------------------------------------------ transforms


def test_crop_resize_identity_and_scale_jitter():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
    np.testing.assert_allclose(T.crop_resize(x, 0, 0, 16, 16, 16, 16), x.astype(np.float32), atol=1e-4)
    spec = T.ClipSpec(frames=2, stride=1, crop=8, scale_min=0.9, scale_max=1.33)
    out = T.random_crop(x, rng, spec)
    assert out.shape == (2, 8, 8, 3) and out.min() >= 0 and out.max() <= 255


def test_batched_crop_resize_is_the_per_clip_one_bit_for_bit():
    rng = np.random.default_rng(5)
    for h, w in ((36, 36), (20, 28), (100, 120)):  # square, not square, large (the per-clip gather path)
        x = rng.integers(0, 256, (6, 3, h, w, 3)).astype(np.uint8)
        spec = T.ClipSpec(frames=3, stride=1, crop=16, scale_min=0.7, scale_max=1.4)  # s < 1 squeezes
        boxes = [T.crop_box(h, w, rng, spec) for _ in range(5)] + [(h - 1.0, w - 1.0, 1.0, 1.0)]  # edge: one tap
        tops, lefts, sizes_h, sizes_w = zip(*boxes)
        got = T.crop_resize_batch(x, tops, lefts, sizes_h, sizes_w, 16, 16)
        want = np.stack([T.crop_resize(x[i], *boxes[i], 16, 16) for i in range(6)])
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_resize_then_crop_geometry_is_scenics():
    # DMVR's resize_smallest (long side rounded down) and Scenic's three crops, at the paper's 256 / 224.
    assert T.default_resize(224) == 256 and T.default_resize(32) == 37
    assert T.resized_size(272, 640, 256) == (256, 602) and T.resized_size(640, 272, 256) == (602, 256)
    assert T.resized_size(36, 36, 37) == (37, 37)
    assert T.view_offsets(256, 341, 224, 1) == [(16, 58)]  # centre, rounded down (DMVR, Hugging Face)
    assert T.view_offsets(256, 341, 224, 3) == [(16, 0), (16, 59), (16, 117)]  # 0, ceil(room / 2), room
    assert T.view_offsets(341, 256, 224, 3) == [(0, 16), (59, 16), (117, 16)]  # taller than wide: down the height
    assert T.view_offsets(256, 256, 224, 3) == [(16, 0), (16, 16), (16, 32)]  # square: along the width, distinct
    assert T.view_offsets(37, 37, 32, 3) == [(3, 0), (3, 3), (3, 5)]
    assert T.view_offsets(37, 37, 32, 2) == [(3, 0), (3, 5)]


def test_views_are_crops_of_the_resized_frame():
    rng = np.random.default_rng(2)
    spec = T.ClipSpec(frames=2, stride=1, crop=16)  # resize 18
    at_size = rng.integers(0, 256, (2, 18, 30, 3)).astype(np.uint8)  # decoded video: already at the short side
    for (top, left), view in zip(T.view_offsets(18, 30, 16, 3), T.spatial_views(at_size, spec, 3)):
        np.testing.assert_array_equal(view, at_size[:, top:top + 16, left:left + 16].astype(np.float32))
    native = rng.integers(0, 256, (2, 27, 45, 3)).astype(np.uint8)  # anything else: one resample of the crop
    resized = T.crop_resize(native, 0, 0, 27, 45, 18, 30)
    for (top, left), view in zip(T.view_offsets(18, 30, 16, 3), T.spatial_views(native, spec, 3)):
        np.testing.assert_allclose(view, resized[:, top:top + 16, left:left + 16], atol=1e-3)


def test_random_crop_boxes_cover_the_jittered_scale():
    rng = np.random.default_rng(3)
    spec = T.ClipSpec(frames=1, stride=1, crop=224, scale_min=0.9, scale_max=1.33)
    h, w = 272, 640  # resized to 256 x 602, then each side scaled by its own s in [0.9, 1.33)
    boxes = np.array([T.crop_box(h, w, rng, spec) for _ in range(2000)])
    top, left, side_h, side_w = boxes.T
    scale = 272 / 256
    assert side_h.min() >= 224 * scale / 1.33 - 1e-6 and side_h.max() <= 224 * scale / 0.9 + 0.5
    assert np.ptp(side_h / side_w) > 0.3  # the two sides drawn apart (DMVR's scale_jitter_augm)
    assert top.min() >= 0 and (top + side_h).max() <= h + 1e-6 and (left + side_w).max() <= w + 1e-6
    assert left.max() > 0.9 * (w - side_w.min())  # offsets reach the far end
    squeezed = T.ClipSpec(frames=1, stride=1, crop=32, scale_min=0.5, scale_max=0.6)  # 37 * 0.6 < 32
    assert T.crop_box(36, 36, rng, squeezed) == (0.0, 0.0, 36.0, 36.0)


def test_augmentations_keep_shape_and_range():
    rng = np.random.default_rng(1)
    clip = rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    for name, op in T.RANDAUGMENT_OPS.items():
        y = np.clip(op(clip, 0.5, rng), 0, 255)
        assert y.shape == clip.shape, name
    spec = T.ClipSpec(frames=4, stride=1, crop=16, flip=True, color_jitter=1.0, randaugment_layers=2)
    out = T.augment(clip, rng, spec)
    assert out.dtype == np.float32 and out.shape == clip.shape and out.min() >= -1 and out.max() <= 1
    video, soft = T.mixup(np.stack([out, -out]), np.array([0, 1]), 3, 0.4, rng)
    np.testing.assert_allclose(soft.sum(-1), 1, atol=1e-6)
    assert video.shape == (2, 4, 16, 16, 3)


def test_even_starts():
    spec = T.ClipSpec(frames=4, stride=2, crop=8)  # span 7
    assert T.even_starts(20, spec, 1) == [6]
    assert T.even_starts(20, spec, 3) == [0, 6, 13]
    assert T.even_starts(7, spec, 4) == [0, 0, 0, 0]


# ------------------------------------------------------------------------------------------------ iterators


def test_train_iterator_shapes_range_and_determinism(tmp_path):
    cfg = _cfg(_npy_source(tmp_path), data__frames=4, data__stride=2, data__crop=16)
    it = pipeline.train_iterator(cfg, batch_size=5, seed=3)
    b = next(it)
    assert b["video"].shape == (5, 4, 16, 16, 3) and b["video"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["label"].shape == (5,)
    assert -1 <= b["video"].min() and b["video"].max() <= 1
    # stride 2: red channel (frame index * 12) steps by 24 between sampled frames, up to interpolation
    red = (b["video"][..., 0].mean(axis=(2, 3)) + 1) * 127.5
    np.testing.assert_allclose(np.diff(red, axis=1), 24, atol=1)
    same = [next(pipeline.train_iterator(cfg, batch_size=5, seed=3))["video"] for _ in range(2)]
    np.testing.assert_array_equal(same[0], b["video"])
    other = next(pipeline.train_iterator(cfg, batch_size=5, seed=4))
    assert not np.array_equal(other["label"], b["label"])


def test_train_iterator_resumes_exactly(tmp_path):
    cfg = _cfg(_npy_source(tmp_path), data__frames=4, data__crop=16)
    it = pipeline.train_iterator(cfg, batch_size=7, seed=0)
    for _ in range(5):  # past one epoch of 24 clips
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # survives a JSON checkpoint
    expected = [next(it) for _ in range(4)]
    resumed = pipeline.train_iterator(cfg, batch_size=7, seed=0)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["label"], want["label"])
        np.testing.assert_array_equal(got["video"], want["video"])


def test_epochs_reshuffle_and_cover_the_split(tmp_path):
    cfg = _cfg(_npy_source(tmp_path), data__frames=2, data__crop=8)
    it = pipeline.train_iterator(cfg, batch_size=6, seed=0)
    epoch1 = np.concatenate([next(it)["label"] for _ in range(4)])
    epoch2 = np.concatenate([next(it)["label"] for _ in range(4)])
    assert sorted(epoch1) == list(range(24)) and sorted(epoch2) == list(range(24))
    assert not np.array_equal(epoch1, epoch2)


def test_train_shards_are_disjoint_and_cover_everything(tmp_path):
    cfg = _cfg(_npy_source(tmp_path), data__frames=2, data__crop=8)
    seen = []
    for shard in range(3):
        it = pipeline.train_iterator(cfg, batch_size=4, seed=0, shard_index=shard, shard_count=3)
        seen.append(np.concatenate([next(it)["label"] for _ in range(2)]))  # one epoch of 8 clips
    assert sorted(np.concatenate(seen).tolist()) == list(range(24))
    with pytest.raises(VivitError, match="shard_index"):
        pipeline.train_iterator(cfg, batch_size=4, shard_index=3, shard_count=3)


def test_global_batch_does_not_depend_on_the_process_count(tmp_path):
    """Two processes' local batches, stacked in process order, are the one-process batch: same clips, same
    augmentation, so a multi-host run follows the single-process loss curve."""
    cfg = _cfg(_npy_source(tmp_path), data__frames=2, data__crop=8, data__color_jitter=0.8)
    single = pipeline.train_iterator(cfg, batch_size=6, seed=3)
    shards = [pipeline.train_iterator(cfg, batch_size=3, seed=3, shard_index=p, shard_count=2) for p in range(2)]
    for _ in range(6):  # crosses an epoch boundary (24 clips, global batch 6)
        whole = next(single)
        parts = [next(it) for it in shards]
        np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), whole["label"])
        np.testing.assert_array_equal(np.concatenate([p["video"] for p in parts]), whole["video"])


def test_eval_iterator_views_padding_and_sharding(tmp_path):
    cfg = _cfg(_npy_source(tmp_path, n=22, frames=20, size=24), data__frames=4, data__stride=2, data__crop=16)
    indices = []
    for shard in range(3):
        batches = list(pipeline.eval_iterator(cfg, split="train", views=(3, 2), batch_size=4,
                                              shard_index=shard, shard_count=3))
        assert len(batches) == 2  # ceil(ceil(22/3)/4): every shard yields the same number of batches
        for b in batches:
            assert b["video"].shape == (4, 6, 4, 16, 16, 3)
            assert b["mask"].dtype == bool
            indices += b["index"][b["mask"]].tolist()
            np.testing.assert_array_equal(b["label"][b["mask"]], b["index"][b["mask"]])
            assert (b["index"][~b["mask"]] == -1).all()
        first = batches[0]["video"][0]
        red = (first[..., 0].mean(axis=(2, 3)) + 1) * 127.5  # [views, frames] -> frame index * 12
        starts = np.rint(red[::2, 0] / 12).astype(int)
        assert starts.tolist() == [0, 6, 13]  # 3 temporal views spread over 20 frames (span 7)
    assert sorted(indices) == list(range(22))


def _train_split(cfg):
    d = cfg.data
    return sources.open_source(d.source, frames=d.frames, stride=d.stride, crop=d.crop).split("train")


def _per_clip_batches(cfg, count: int, batch: int = 32, seed: int = 0, shard_index: int = 0, shard_count: int = 1):
    """The per-clip pipeline (TrainMap on each clip, then stacking) without grain: the reference of BatchTrainMap."""
    from vivit_cli.data.batches import GlobalOrder

    split = _train_split(cfg)
    fn = pipeline._PositionalMap(pipeline.TrainMap(split, pipeline.clip_spec(cfg), 0.01), seed + 1)
    order = GlobalOrder(len(split), seed, batch, shard_index, shard_count)
    for b in range(count):
        clips = [fn(order[k]) for k in range(b * batch, (b + 1) * batch)]
        yield {k: np.stack([c[k] for c in clips]) for k in clips[0]}


@pytest.mark.parametrize("sets", [
    {"data.source": "embedded:motion:31"},
    {"data.source": "embedded:appearance:31"},  # flips
    {"data.source": "embedded:appearance:31", "data.color_jitter": 0.8, "data.randaugment_layers": 2,
     "data.scale_min": 0.7, "data.scale_max": 1.4},
    {"data.source": "embedded:motion:31", "data.flip": "true", "data.color_jitter": 1.0, "data.randaugment_layers": 3,
     "data.randaugment_magnitude": 9, "data.frames": 4, "model.tubelet": "2x8x8"},
    {"data.source": "embedded:appearance:31", "data.frames": 4, "data.stride": 2, "data.crop": 24},
])
def test_batched_train_batches_are_the_per_clip_pipelines(monkeypatch, sets):
    """Array-held clips are cropped a batch at a time (BatchTrainMap); the batches are the per-clip map's, byte for
    byte, across an epoch boundary, for a shard, and for every augmentation."""
    monkeypatch.setattr(embedded, "SPLIT_SIZES", {"train": 80, "val": 8, "test": 8})
    cfg = config.build(sets)
    assert isinstance(_train_split(cfg), sources.ArraySplit)
    for seed, shard, count in ((0, 0, 1), (3, 1, 2)):
        it = pipeline.train_iterator(cfg, batch_size=16, seed=seed, shard_index=shard, shard_count=count)
        for want in _per_clip_batches(cfg, 6, batch=16, seed=seed, shard_index=shard, shard_count=count):
            got = next(it)
            assert got.keys() == want.keys()
            for k in want:
                assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
                np.testing.assert_array_equal(got[k], want[k])


def test_batched_iterator_state_counts_clips(tmp_path):
    cfg = _cfg(_npy_source(tmp_path), data__frames=4, data__crop=16)
    it = pipeline.train_iterator(cfg, batch_size=4, seed=1)
    for _ in range(3):
        next(it)
    assert it.get_state() == {"next_index": 12}  # as the per-clip pipeline counts: a checkpoint of either resumes
    want = next(it)
    resumed = pipeline.train_iterator(cfg, batch_size=4, seed=1)
    resumed.set_state({"next_index": 12})
    np.testing.assert_array_equal(next(resumed)["video"], want["video"])
    with pytest.raises(VivitError, match="whole number of batches"):
        resumed.set_state({"next_index": 13})


def test_short_array_clips_are_an_error(tmp_path):
    cfg = _cfg(_npy_source(tmp_path, frames=6), data__frames=4, data__stride=2)
    with pytest.raises(VivitError, match="shorter than data.frames x data.stride"):
        pipeline.train_iterator(cfg, batch_size=2)


def test_still_images(tmp_path):
    cfg = _cfg(_npy_source(tmp_path), data__crop=16)
    images, labels = pipeline_still(cfg)
    assert images.shape == (12, 16, 16, 3) and labels.tolist() == list(range(12))
    red = (images[..., 0].mean() + 1) * 127.5
    assert abs(red - 6 * 12) < 1  # the middle frame


def pipeline_still(cfg):
    from vivit_cli import data

    return data.still_images(cfg, "val")


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(tmp_path):
    src = _npy_source(tmp_path)
    cfg0 = _cfg(src, data__frames=4, data__crop=16)
    cfg1 = _cfg(src, data__frames=4, data__crop=16, data__workers=1)
    a = pipeline.train_iterator(cfg0, batch_size=4, seed=2)
    b = pipeline.train_iterator(cfg1, batch_size=4, seed=2)
    for _ in range(3):
        x, y = next(a), next(b)
        np.testing.assert_array_equal(x["video"], y["video"])
    state = b.get_state()
    json.dumps(state)
    want = next(b)
    c = pipeline.train_iterator(cfg1, batch_size=4, seed=2)
    c.set_state(state)
    np.testing.assert_array_equal(next(c)["label"], want["label"])


def test_equalize_spreads_a_low_contrast_clip_monotonically():
    rng = np.random.default_rng(0)
    clip = rng.integers(100, 140, (4, 16, 16, 3)).astype(np.float32)
    out = T.equalize(clip)
    assert out.shape == clip.shape and out.dtype == clip.dtype
    assert out.min() < 10 and out.max() > 230  # 40 grey levels spread over the whole range
    for c in range(3):  # a monotone map of the values, the same for every frame
        order = np.argsort(clip[..., c].ravel(), kind="stable")
        assert np.all(np.diff(out[..., c].ravel()[order]) >= 0)
    flat = np.full((2, 8, 8, 3), 77.0, np.float32)
    np.testing.assert_array_equal(T.equalize(flat), flat)  # one colour: nothing to spread


@pytest.mark.slow
def test_profile_run_accounts_for_the_wall_time(tmp_path):
    """benchmarks/profile_run.py end to end (smoke preset): every phase is timed and the rows add up to the wall."""
    out = tmp_path / "profile.json"
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "benchmarks/profile_run.py", "--preset", "smoke", "--rounds", "1",
                        "--pipeline-seconds", "1", "--json", str(out)], cwd=root, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    cold, warm = report["runs"]
    assert "persistent cache" in warm["summary"]["perf"]["compile_source"]
    for run in (cold, warm):
        assert not run["timers"].get("missing"), run["timers"]["missing"]
        rows = run["breakdown"]
        assert all(v is not None for _, v, _ in rows)
        assert sum(v for _, v, _ in rows) == pytest.approx(run["wall_s"], rel=1e-6)
    assert report["pipeline"][0]["clips_per_s"] > 0
