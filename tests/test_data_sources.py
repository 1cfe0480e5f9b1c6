"""Real video files (PyAV, several codecs, a corrupt file), CSV, SSv2, TFDS built locally, NumPy, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vivit_cli import config
from vivit_cli.data import pipeline, sources
from vivit_cli.data.video import DecodeError, VideoReader, probe, write_video
from vivit_cli.errors import VivitError

CODECS = [("libx264", "mp4"), ("mpeg4", "mp4"), ("libvpx-vp9", "webm"), ("mjpeg", "avi")]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path_factory.getbasetemp() / "vivit-cache"))


def _frames(label: int, n: int = 12, size: int = 40) -> np.ndarray:
    """A clip whose colour says its class and whose brightness ramps with time."""
    x = np.zeros((n, size, size + 8, 3), np.uint8)
    x[..., label % 3] = 200
    x[..., (label + 1) % 3] = (np.arange(n) * 15)[:, None, None]
    return x


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """root/<class>/<clip>.<ext> in four codecs, plus one corrupt file."""
    root = tmp_path_factory.mktemp("videos")
    for label, cls in enumerate(["archery", "bowling", "cooking"]):
        (root / cls).mkdir()
        for i, (codec, ext) in enumerate(CODECS):
            write_video(str(root / cls / f"{cls}_{i}.{ext}"), _frames(label), codec)
    (root / "bowling" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    return root


def _cfg(source, **sets):
    return config.build({"data.source": source, **{k.replace("__", "."): v for k, v in sets.items()}})


def test_codecs_round_trip(tmp_path):
    for codec, ext in CODECS:
        path = str(tmp_path / f"clip.{ext}")
        write_video(path, _frames(1, n=10), codec)
        meta = probe(path)
        assert meta["num_frames"] == 10 and (meta["width"], meta["height"]) == (48, 40)
        got = VideoReader(path, meta, short_side=20).frames(np.array([0, 9]))
        assert got.shape == (2, 20, 24, 3)
        # brightness ramp of channel 2 survives the codec (lossy, so loosely)
        assert got[1, ..., 2].mean() - got[0, ..., 2].mean() > 80


def test_folder_source_counts_the_corrupt_file(video_folder):
    src = sources.open_source(f"folder:{video_folder}", frames=4, crop=16, max_skip_fraction=0.2)
    assert src.label_names == ("archery", "bowling", "cooking")
    assert src.scanned == 13 and len(src.failures) == 1 and src.failures[0][0].endswith("broken.mp4")
    total = sum(len(s) for s in src.splits.values())
    assert total == 12
    with pytest.raises(VivitError, match="broken.mp4"):
        sources.open_source(f"folder:{video_folder}", frames=4, crop=16, max_skip_fraction=0.0)


def test_folder_source_trains_and_labels_match_content(video_folder):
    cfg = _cfg(f"folder:{video_folder}", data__frames=4, data__stride=2, data__crop=16, data__max_skip_fraction=0.2,
               data__train_split="train")
    src = sources.open_source(cfg.data.source, frames=4, stride=2, crop=16, max_skip_fraction=0.2)
    n = len(src.split("train"))
    it = pipeline.train_iterator(cfg, batch_size=min(n, 4), seed=0, source=src)
    for _ in range(3):
        b = next(it)
        assert b["video"].shape[1:] == (4, 16, 16, 3)
        # the saturated channel of each clip is its label (flip/crop do not change colour)
        channel_means = b["video"].mean(axis=(1, 2, 3))
        assert (channel_means[:, :3].argmax(-1) == b["label"] % 3).all()


def test_split_subfolders_and_bad_layouts(tmp_path):
    for split in ("train", "val"):
        for label, cls in enumerate(["a", "b"]):
            d = tmp_path / "ds" / split / cls
            d.mkdir(parents=True)
            write_video(str(d / "x.mp4"), _frames(label), "libx264")
    src = sources.open_source(f"folder:{tmp_path / 'ds'}", frames=4)
    assert set(src.splits) == {"train", "val"} and src.num_examples("val") == 2
    with pytest.raises(VivitError, match="no such folder"):
        sources.open_source(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "ds" / "train" / "c").mkdir()
    with pytest.raises(VivitError, match="has no video files"):
        sources.open_source(f"folder:{tmp_path / 'ds'}")


def test_short_clips_are_skipped_and_counted(video_folder):
    src = sources.open_source(f"folder:{video_folder}", frames=8, stride=2, max_skip_fraction=None)
    # 12-frame clips are shorter than 8 x 2: every good file is counted as too short
    problems = [p for _, p in src.failures]
    assert len(problems) == 13 and sum("only 12 frames" in p for p in problems) == 12
    with pytest.raises(VivitError, match="data.max_skip_fraction"):
        sources.open_source(f"folder:{video_folder}", frames=8, stride=2)


def test_csv_source(video_folder, tmp_path):
    rows = ["path,label"]
    files = sorted(video_folder.glob("*/*_*.*"))
    for f in files:
        rows.append(f"{f},{f.parent.name},{'val' if f.stem.endswith('_0') else 'train'}")
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    src = sources.open_source(f"csv:{tmp_path / 'all.csv'}", frames=4)
    assert src.num_examples("val") == 3 and src.num_examples("train") == 9
    assert src.label_names == ("archery", "bowling", "cooking")
    # relative paths, one file per split
    (tmp_path / "csvdir").mkdir()
    (tmp_path / "csvdir" / "train.csv").write_text(f"{files[0]},archery\n{files[5]},bowling\n")
    src = sources.open_source(f"csv:{tmp_path / 'csvdir'}", frames=4)
    assert src.num_examples("train") == 2
    (tmp_path / "bad.csv").write_text(f"{files[0]},archery\nnot/there.mp4,bowling\n")
    with pytest.raises(VivitError, match=r"bad.csv:2: video file .*not/there.mp4 does not exist"):
        sources.open_source(f"csv:{tmp_path / 'bad.csv'}")


def test_ssv2_source(tmp_path):
    templates = {"Pushing something from left to right": "0", "Pushing something from right to left": "1"}
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps(templates))
    train, val = [], []
    for i in range(6):
        vid = str(100 + i)
        write_video(str(tmp_path / f"{vid}.webm"), _frames(i % 2), "libvpx-vp9")
        entry = {"id": vid, "label": "pushing a cup from left to right",
                 "template": "Pushing [something] from left to right" if i % 2 == 0 else
                 "Pushing [something] from right to left", "placeholders": ["a cup"]}
        (train if i < 4 else val).append(entry)
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps(train))
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps(val))
    src = sources.open_source(f"ssv2:{tmp_path}", frames=4)
    assert src.num_classes == 2 and src.num_examples("train") == 4 and src.num_examples("validation") == 2
    assert src.split("train").labels.tolist() == [0, 1, 0, 1]
    val.append({"id": "999", "template": "Pushing [something] from left to right"})
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps(val))
    with pytest.raises(VivitError, match="999.webm"):
        sources.open_source(f"ssv2:{tmp_path}", frames=4)


def test_runtime_decode_failure_is_skipped_and_counted(tmp_path):
    split = sources.VideoSplit("train", np.array([0, 1], np.int32), paths=[str(tmp_path / "gone.mp4")] * 2,
                               metas=[{"num_frames": 8, "width": 8, "height": 8}] * 2)
    spec = pipeline.T.ClipSpec(frames=2, stride=1, crop=8)
    fn = pipeline.TrainMap(split, spec, max_skip_fraction=0.5)
    assert fn(0, np.random.default_rng(0)) is None  # skipped, counted
    with pytest.raises(VivitError, match="gone.mp4.*failed to decode"):
        fn(1, np.random.default_rng(0))
    with pytest.raises(DecodeError):
        VideoReader(str(tmp_path / "gone.mp4"), {"num_frames": 8, "width": 8, "height": 8}, None).frames([0])


def _build_tfds(data_dir):
    import tensorflow_datasets as tfds

    class TinyClips(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(10, 20, 24, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=["left", "right", "still"]),
            }))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(9), "test": self._generate_examples(3)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"video": _frames(i % 3, n=10, size=20)[:, :, :24], "label": i % 3}

    TinyClips(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_tfds_source_built_locally(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    _build_tfds(tmp_path)
    cfg = _cfg("tfds:tiny_clips", data__data_dir=str(tmp_path), data__frames=4, data__crop=16,
               data__eval_split="test")
    src = sources.open_source(cfg.data.source, data_dir=str(tmp_path), frames=4, crop=16)
    assert src.label_names == ("left", "right", "still") and src.num_examples("train") == 9
    reader, label, segment = src.split("train").example(4)  # labels come from the split, not patched on readers
    assert not hasattr(reader, "label") and segment is None and label == src.split("train").label(4)
    assert reader.frames(np.array([0]))[0].mean(axis=(0, 1)).argmax() == label % 3
    b = next(pipeline.train_iterator(cfg, batch_size=3, seed=0, source=src))
    assert b["video"].shape == (3, 4, 16, 16, 3)
    assert (b["video"].mean(axis=(1, 2, 3))[:, :3].argmax(-1) == b["label"] % 3).all()
    ev = list(pipeline.eval_iterator(cfg, split="test", views=(2, 1), batch_size=2, source=src))
    assert sum(int(b["mask"].sum()) for b in ev) == 3
    with pytest.raises(VivitError, match="tfds:no_such_set"):
        sources.open_source("tfds:no_such_set", data_dir=str(tmp_path))


def test_npy_formats_and_refusals(tmp_path):
    video = np.zeros((4, 8, 12, 12, 3), np.uint8)
    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "train_video.npy", video)
    np.save(tmp_path / "dir" / "train_label.npy", np.array([0, 1, 2, 1]))
    (tmp_path / "dir" / "label_names.txt").write_text("a\nb\nc\n")
    src = sources.open_source(f"npy:{tmp_path / 'dir'}", frames=8)
    assert src.label_names == ("a", "b", "c") and src.num_examples("train") == 4
    np.savez(tmp_path / "obj.npz", train_video=np.array([object()] * 2, dtype=object), train_label=np.zeros(2))
    with pytest.raises(VivitError, match="cannot load"):
        sources.open_source(f"npy:{tmp_path / 'obj.npz'}")
    np.savez(tmp_path / "f.npz", train_video=video.astype(np.float32), train_label=np.zeros(4, int))
    with pytest.raises(VivitError, match="must be uint8"):
        sources.open_source(f"npy:{tmp_path / 'f.npz'}")
    with pytest.raises(VivitError, match="no such"):
        sources.open_source(f"npy:{tmp_path / 'none.npz'}")


def test_cli_inspect_and_list(video_folder, capsys):
    from vivit_cli.cli.app import main

    assert main(["data", "inspect", f"folder:{video_folder}", "--json", "--set", "data.frames=4"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 3 and info["decode_failures"] == 1 and info["files_scanned"] == 13
    assert sum(s["clips"] for s in info["splits"].values()) == 12
    assert {c for s in info["splits"].values() for c in s["codecs"]} <= {"h264", "mpeg4", "vp9", "mjpeg"}
    assert main(["data", "inspect", "folder:/definitely/not/here"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_data_list_imports_no_jax():
    code = ("import sys; from vivit_cli.cli.app import main; rc = main(['data', 'list', '--json']); "
            "assert rc == 0; bad = [m for m in ('jax', 'flax', 'grain', 'av', 'tensorflow') if m in sys.modules]; "
            "print('BAD', bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "BAD []" in out.stdout and '"folder"' in out.stdout
