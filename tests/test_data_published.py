"""The published layouts (Kinetics, Epic-Kitchens-100, Moments in Time, Something-Something v2), each built here
with small real videos (h264 and vp9, square and not, one truncated, one missing) and the real column names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vivit_cli.data import pipeline, sources
from vivit_cli.data.video import write_video
from vivit_cli.errors import VivitError

KINETICS_HEADER = "label,youtube_id,time_start,time_end,split,is_cc"
EPIC_HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
               "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VIVIT_CACHE", str(tmp_path_factory.getbasetemp() / "vivit-cache"))


def numbered(n: int, h: int = 16, w: int = 16) -> np.ndarray:
    """Frame k shows k in two channels (k % 16 and k // 16, 16 levels each): decoded frames say their index."""
    k = np.arange(n)
    x = np.zeros((n, h, w, 3), np.uint8)
    x[..., 0] = ((k % 16) * 16)[:, None, None]
    x[..., 1] = ((k // 16) * 16)[:, None, None]
    return x


def index_of(frames) -> np.ndarray:
    """The inverse of `numbered` for uint8 frames [..., H, W, 3] (or [-1, 1] floats)."""
    f = np.asarray(frames, np.float64)
    if f.min() < 0 or f.max() <= 1:
        f = (f + 1) * 127.5
    r, g = f[..., 0].mean(axis=(-2, -1)), f[..., 1].mean(axis=(-2, -1))
    return (np.round(r / 16) + 16 * np.round(g / 16)).astype(int)


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def open_(spec: str, **kw):
    return sources.open_source(spec, frames=kw.pop("frames", 4), crop=16, **kw)


# ------------------------------------------------------------------------------------------------- Kinetics


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    """Kinetics' flat layout: train/ and val/ of {id}_{start:06d}_{end:06d} clips, one full video, one truncated
    clip, one missing one; annotations/ with the real header."""
    root = tmp_path_factory.mktemp("kinetics")
    (root / "train").mkdir()
    (root / "val").mkdir()
    (root / "annotations").mkdir()
    train = [KINETICS_HEADER]
    for i, (label, codec, ext, w) in enumerate([("abseiling", "libx264", "mp4", 16), ("air drumming", "libvpx-vp9",
                                                "webm", 24), ("abseiling", "libx264", "mp4", 24),
                                               ("air drumming", "libx264", "mp4", 16)]):
        name = f"yt-{i}_a_{i * 10:06d}_{i * 10 + 10:06d}"
        write_video(str(root / "train" / f"{name}.{ext}"), numbered(12, 16, w), codec)
        train.append(f"{label},yt-{i}_a,{i * 10},{i * 10 + 10},train,0")
    write_video(str(root / "train" / "fullvid.mp4"), numbered(40), "libx264", fps=8)  # the full YouTube video
    train.append('"air drumming",fullvid,2,4,train,0')  # seconds 2..4 at 8 fps: frames 16..31
    truncate_me = root / "train" / "broken_000000_000010.mp4"
    write_video(str(truncate_me), numbered(12), "libx264")
    truncate(truncate_me)
    train.append("abseiling,broken,0,10,train,0")
    train.append("abseiling,gone,0,10,train,0")  # never downloaded
    (root / "annotations" / "train.csv").write_text("\n".join(train) + "\n")
    write_video(str(root / "val" / "v1_000001_000011.mp4"), numbered(12), "libvpx-vp9")
    (root / "annotations" / "val.csv").write_text(f"{KINETICS_HEADER}\nabseiling,v1,1,11,val,1\n")
    (root / "annotations" / "test.csv").write_text("youtube_id,time_start,time_end,split\nt1,0,10,test\n")
    return root


def test_kinetics_flat_layout(kinetics):
    src = open_(f"kinetics:{kinetics}", max_skip_fraction=0.5)
    assert src.label_names == ("abseiling", "air drumming") and src.num_examples("train") == 5
    assert src.num_examples("val") == 1 and "test" not in src.splits  # test.csv has no labels, and no test/ folder
    problems = {p.rsplit("/", 1)[-1]: why for p, why in src.failures}
    assert problems.keys() == {"broken_000000_000010.mp4", "gone_000000_000010.mp4"} and src.scanned == 8
    assert problems["gone_000000_000010.mp4"] == "missing file"
    train = src.split("train")
    full = train.paths.index(str(kinetics / "train" / "fullvid.mp4"))
    assert train.segment(full) == (16, 32) and train.label(full) == 1
    assert train.segment(0) == (0, 12)  # a trimmed clip is its whole file
    reader = train.reader(full)
    assert reader.num_frames == 16 and index_of(reader.frames(np.array([0, 15]))).tolist() == [16, 31]
    with pytest.raises(VivitError, match=r"broken_000000_000010.mp4: not a readable video .*\(2 of 8 files unusable"):
        open_(f"kinetics:{kinetics}", max_skip_fraction=0.1)


def test_kinetics_replacement_for_corrupted_clips(kinetics, tmp_path, capsys):
    """Kinetics-400's replacement/replacement_for_corrupted_k400/ stands in for the corrupted clips it names."""
    from vivit_cli.cli.app import main

    for part in ("train", "val", "annotations"):
        (tmp_path / part).symlink_to(kinetics / part)
    spare = tmp_path / "replacement" / "replacement_for_corrupted_k400"
    spare.mkdir(parents=True)
    write_video(str(spare / "broken_000000_000010.mp4"), numbered(12), "libx264")
    src = open_(f"kinetics:{tmp_path}", max_skip_fraction=0.5)
    assert [p.rsplit("/", 1)[-1] for p, _ in src.failures] == ["gone_000000_000010.mp4"]  # only the missing one
    train = src.split("train")
    i = train.paths.index(str(spare / "broken_000000_000010.mp4"))
    assert train.label(i) == 0 and index_of(train.reader(i).frames(np.array([0, 11]))).tolist() == [0, 11]
    assert src.num_examples("train") == 6 and src.info["replaced"] == 1
    assert main(["data", "inspect", f"kinetics:{tmp_path}", "--set", "data.frames=4",
                 "--set", "data.max_skip_fraction=0.5"]) == 0
    assert "replaced=1" in capsys.readouterr().out


def test_kinetics_per_class_layout_with_and_without_annotations(tmp_path):
    for split, n in (("train", 2), ("val", 1)):
        for cls in ("bowling", "juggling balls"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                write_video(str(d / f"{cls[:3]}{split}{i}_000000_000010.mp4"), numbered(8), "libx264")
    src = open_(f"kinetics:{tmp_path}")
    assert src.label_names == ("bowling", "juggling balls") and src.info["layout"] == "split/class folders, no annotations"
    assert src.num_examples("train") == 4 and src.num_examples("val") == 2
    (tmp_path / "annotations").mkdir()
    rows = [f"{'bowling' if f.parent.name == 'bowling' else 'juggling balls'},{f.stem[:-14]},0,10,{f.parts[-3]}"
            for f in sorted(tmp_path.glob("train/*/*.mp4"))]
    (tmp_path / "annotations" / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n" + "\n".join(rows))
    with pytest.raises(VivitError, match=r"annotations/val.csv: missing annotation file"):
        open_(f"kinetics:{tmp_path}")
    (tmp_path / "annotations" / "val.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                                      "bowling,bowval0,0,10,val\n")
    src = open_(f"kinetics:{tmp_path}")
    assert src.info["layout"] == "split/class" and src.num_examples("train") == 4 and src.num_examples("val") == 1


@pytest.mark.parametrize("row, problem", [
    ("abseiling,v1,1,11,val", r"val.csv:2: 5 fields, the header has 6"),
    ("abseiling,v1,one,11,val,0", r"val.csv:2: time_start='one' is not a number"),
    ("abseiling,v1,11,1,val,0", r"val.csv:2: segment stops \(1.0 s\) before it starts \(11.0 s\)"),
    ("abseiling,v1,3,3,val,0", r"val.csv:2: zero-length segment"),
    ("abseiling,v1,-1,3,val,0", r"val.csv:2: segment out of range"),
    ("abseiling,fullvid,2,9,val,0", r"val.csv:2: segment ends at frame 72 but .*fullvid.mp4 has only 40 frames"),
])
def test_kinetics_bad_rows(kinetics, tmp_path, row, problem):
    root = tmp_path / "k"
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    (root / "val" / "fullvid.mp4").symlink_to(kinetics / "train" / "fullvid.mp4")
    (root / "val" / "v1_000001_000011.mp4").symlink_to(kinetics / "val" / "v1_000001_000011.mp4")
    (root / "annotations" / "val.csv").write_text(f"{KINETICS_HEADER}\n{row}\n")
    with pytest.raises(VivitError, match=problem):
        open_(f"kinetics:{root}")
    (root / "annotations" / "val.csv").write_text("label,youtube_id,start,end\nabseiling,v1,1,11\n")
    with pytest.raises(VivitError, match=r"val.csv: unknown columns start,end"):
        open_(f"kinetics:{root}")


def test_inspect_lists_the_missing_and_broken_videos(kinetics, capsys):
    from vivit_cli.cli.app import main

    assert main(["data", "inspect", f"kinetics:{kinetics}", "--json", "--set", "data.frames=4"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["files_scanned"] == 8 and info["decode_failures"] == 2
    assert {f["file"].rsplit("/", 1)[-1] for f in info["failures"]} == {"broken_000000_000010.mp4",
                                                                      "gone_000000_000010.mp4"}
    assert info["splits"]["train"]["segments"] == 5 and set(info["splits"]["train"]["codecs"]) == {"h264", "vp9"}
    (kinetics / "annotations" / "val.csv").rename(kinetics / "annotations" / "val.csv.bak")
    try:
        assert main(["data", "inspect", f"kinetics:{kinetics}"]) == 2
        err = capsys.readouterr().err
        assert "annotations/val.csv: missing annotation file" in err and len(err.strip().splitlines()) == 1
    finally:
        (kinetics / "annotations" / "val.csv.bak").rename(kinetics / "annotations" / "val.csv")


# ------------------------------------------------------------------------------------------------- Epic-Kitchens


def epic_row(nid: str, video: str, start: int, stop: int, verb: int, noun: int) -> str:
    return (f"{nid},{video.split('_')[0]},{video},00:00:01.089,00:00:00.14,00:00:03.37,{start},{stop},"
            f"open door,open,{verb},door,{noun},['door'],[{noun}]")


@pytest.fixture(scope="module")
def epic(tmp_path_factory):
    """One long video (P01_01.MP4, 120 frames, non-square h264 with a keyframe every 10) and one rgb_frames folder
    (P02_101, 60 JPEG frames), the two annotation files with the real 15 columns, and the verb classes file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("epic")
    (root / "P01" / "videos").mkdir(parents=True)
    write_video(str(root / "P01" / "videos" / "P01_01.MP4"), numbered(120, 16, 24), "libx264", fps=25, gop=10)
    frames = root / "P02" / "rgb_frames" / "P02_101"
    frames.mkdir(parents=True)
    for k, f in enumerate(numbered(60, 16, 16), 1):
        Image.fromarray(f).save(frames / f"frame_{k:010d}.jpg", quality=95)
    (root / "EPIC_100_train.csv").write_text("\n".join([
        EPIC_HEADER, epic_row("P01_01_0", "P01_01", 1, 21, 3, 3), epic_row("P01_01_1", "P01_01", 81, 101, 0, 299),
        epic_row("P02_101_0", "P02_101", 11, 31, 96, 7), epic_row("P03_01_0", "P03_01", 1, 21, 1, 1)]) + "\n")
    (root / "EPIC_100_validation.csv").write_text(
        f"{EPIC_HEADER}\n{epic_row('P02_101_1', 'P02_101', 41, 61, 2, 2)}\n")
    verbs = ["id,key,instances,category"] + [f"{i},verb{i},\"['verb{i}']\",cat" for i in range(97)]
    (root / "EPIC_100_verb_classes.csv").write_text("\n".join(verbs) + "\n")
    return root


def test_epic_segments_over_a_long_video_and_frames(epic):
    src = open_(f"epic:{epic}", max_skip_fraction=0.5)
    assert [(name, len(names)) for name, names in src.heads] == [("verb", 97), ("noun", 300)]
    assert src.label_names[3] == "verb3" and src.heads[1][1][299] == "299"  # no noun classes file: ids
    assert [p for p, why in src.failures] == [str(epic / "P03" / "videos" / "P03_01.MP4")]  # missing: counted
    train = src.split("train")
    assert train.labels.tolist() == [[3, 3], [0, 299], [96, 7]] and train.labels.dtype == np.int32
    assert [train.segment(i) for i in range(3)] == [(0, 20), (80, 100), (10, 30)]
    spec = pipeline.T.ClipSpec(frames=4, stride=2, crop=16)
    for i, first in ((1, 80), (2, 10)):  # a segment far into the long video (decoded after a seek), and frames
        ex = pipeline.EvalMap(train, spec, (2, 1), max_skip_fraction=0.0)(i)
        assert index_of(ex["video"]).tolist() == [[first + k for k in (0, 2, 4, 6)],
                                                  [first + 13 + k for k in (0, 2, 4, 6)]]
        assert ex["label"].tolist() == train.labels[i].tolist()
    val = src.split("validation")
    assert val.segment(0) == (40, 60) and index_of(val.reader(0).frames(np.array([19]))).tolist() == [59]
    it = pipeline.train_iterator(_cfg(f"epic:{epic}"), batch_size=3, seed=0, source=src)
    assert next(it)["label"].shape == (3, 2)


def _cfg(source):
    from vivit_cli import config

    return config.build({"data.source": source, "data.frames": 4, "data.stride": 2, "data.crop": 16,
                         "data.max_skip_fraction": 0.5})


@pytest.mark.parametrize("row, problem", [
    (epic_row("x", "P02_101", 31, 11, 0, 0), r"train.csv:2: segment stops \(11 frames\) before it starts"),
    (epic_row("x", "P02_101", 11, 11, 0, 0), r"train.csv:2: zero-length segment"),
    (epic_row("x", "P02_101", 0, 11, 0, 0), r"train.csv:2: segment out of range \(start_frame 0"),
    (epic_row("x", "P02_101", 41, 71, 0, 0), r"train.csv:2: segment ends at frame 70 but .*P02_101 has only 60"),
    (epic_row("x", "P02_101", 1, 21, 97, 0), r"train.csv:2: verb_class 97 is outside the 97 verb classes"),
    (epic_row("x", "P02_101", 1, 21, 0, 300), r"train.csv:2: noun_class 300 is outside the 300 noun classes"),
])
def test_epic_bad_rows(epic, tmp_path, row, problem):
    (tmp_path / "P02" / "rgb_frames").mkdir(parents=True)
    (tmp_path / "P02" / "rgb_frames" / "P02_101").symlink_to(epic / "P02" / "rgb_frames" / "P02_101")
    (tmp_path / "EPIC_100_train.csv").write_text(f"{EPIC_HEADER}\n{row}\n")
    (tmp_path / "EPIC_100_validation.csv").write_text(f"{EPIC_HEADER}\n{epic_row('y', 'P02_101', 1, 21, 0, 0)}\n")
    with pytest.raises(VivitError, match=problem):
        open_(f"epic:{tmp_path}")


EPIC_TEST_HEADER = "narration_id,participant_id,video_id,start_timestamp,stop_timestamp,start_frame,stop_frame"


def test_epic_unlabelled_test_segments_are_checked_and_counted(epic, tmp_path):
    for name in ("EPIC_100_train.csv", "EPIC_100_validation.csv", "EPIC_100_verb_classes.csv"):
        (tmp_path / name).write_text((epic / name).read_text())
    (tmp_path / "P02" / "rgb_frames").mkdir(parents=True)
    (tmp_path / "P02" / "rgb_frames" / "P02_101").symlink_to(epic / "P02" / "rgb_frames" / "P02_101")
    (tmp_path / "P01").symlink_to(epic / "P01")
    assert "unlabelled_splits" not in open_(f"epic:{tmp_path}", max_skip_fraction=0.5).info
    test = tmp_path / "EPIC_100_test_timestamps.csv"
    test.write_text(f"{EPIC_TEST_HEADER}\nP01_11_0,P01,P01_11,00:00:00.00,00:00:01.00,1,51\n"
                    "P01_11_1,P01,P01_11,00:00:01.00,00:00:02.00,51,101\n")
    src = open_(f"epic:{tmp_path}", max_skip_fraction=0.5)
    assert (src.info["unlabelled_splits"], src.info["test_segments"]) == (["test"], 2)
    assert src.num_examples("train") == 3  # not trained on: no labels
    test.write_text(f"{EPIC_TEST_HEADER}\nP01_11_0,P01,P01_11,00:00:00.00,00:00:01.00,51,51\n")
    with pytest.raises(VivitError, match=r"EPIC_100_test_timestamps.csv:2: zero-length segment"):
        open_(f"epic:{tmp_path}", max_skip_fraction=0.5)
    test.write_text("narration_id,video_id,start_frame\n")
    with pytest.raises(VivitError, match=r"EPIC_100_test_timestamps.csv: no column stop_frame"):
        open_(f"epic:{tmp_path}", max_skip_fraction=0.5)


def test_epic_missing_annotations(epic, tmp_path):
    with pytest.raises(VivitError, match=r"EPIC_100_train.csv: missing annotation file"):
        open_(f"epic:{tmp_path}")
    (tmp_path / "EPIC_100_train.csv").write_text((epic / "EPIC_100_train.csv").read_text())
    with pytest.raises(VivitError, match=r"EPIC_100_validation.csv: missing annotation file"):
        open_(f"epic:{tmp_path}")
    (tmp_path / "EPIC_100_validation.csv").write_text("narration_id,video_id,start_frame,stop_frame,verb_class\n")
    with pytest.raises(VivitError, match=r"EPIC_100_validation.csv: no column noun_class"):
        open_(f"epic:{tmp_path}")


# ------------------------------------------------------------------------------------------------- Moments, SSv2


def test_moments_in_time(tmp_path):
    (tmp_path / "moments_categories.txt").write_text("adult+female+singing,0\nblocking,1\n")
    for folder, cls, i, codec, ext in (("training", "blocking", 0, "libx264", "mp4"),
                                       ("training", "adult+female+singing", 1, "libvpx-vp9", "webm"),
                                       ("validation", "blocking", 2, "libx264", "mp4")):
        (tmp_path / folder / cls).mkdir(parents=True, exist_ok=True)
        write_video(str(tmp_path / folder / cls / f"getty-{i}.{ext}"), numbered(8, 16, 20), codec)
    (tmp_path / "trainingSet.csv").write_text("blocking/getty-0.mp4,blocking,3,0\n"
                                              "adult+female+singing/getty-1.webm,adult+female+singing,2,1\n"
                                              "blocking/getty-9.mp4,blocking,3,0\n")
    (tmp_path / "validationSet.csv").write_text("blocking/getty-2.mp4,blocking,3,0\n")
    src = open_(f"mit:{tmp_path}", max_skip_fraction=0.5)
    assert src.label_names == ("adult+female+singing", "blocking") and src.split("train").labels.tolist() == [1, 0]
    assert src.num_examples("val") == 1 and [why for _, why in src.failures] == ["missing file"]
    (tmp_path / "validationSet.csv").write_text("blocking/getty-2.mp4,juggling,3,0\n")
    with pytest.raises(VivitError, match=r"validationSet.csv:1: label 'juggling' is not in moments_categories.txt"):
        open_(f"mit:{tmp_path}")
    (tmp_path / "validationSet.csv").write_text("blocking/getty-2.mp4\n")
    with pytest.raises(VivitError, match=r"validationSet.csv:1: expected filename,label"):
        open_(f"mit:{tmp_path}")


def test_ssv2_published_layout(tmp_path):
    """The download's labels/ folder ({labels,train,validation,test}.json), a template that differs from labels.json
    in case only, and a video missing from the folder (a counted skip)."""
    (tmp_path / "labels").mkdir()
    (tmp_path / "20bn-something-something-v2").mkdir()
    labels = {"Pushing something from left to right": "0", "Putting something on a surface": "1"}
    (tmp_path / "labels" / "labels.json").write_text(json.dumps(labels))
    entries = []
    for i in range(4):
        if i < 3:
            write_video(str(tmp_path / "20bn-something-something-v2" / f"{i + 1}.webm"), numbered(8, 16, 20),
                        "libvpx-vp9")
        template = "Pushing [something] from left to right" if i % 2 == 0 else "Putting [Something] on a surface"
        entries.append({"id": str(i + 1), "label": "pushing a cup from left to right", "template": template,
                        "placeholders": ["a cup"]})
    (tmp_path / "labels" / "train.json").write_text(json.dumps(entries[:3]))
    (tmp_path / "labels" / "validation.json").write_text(json.dumps(entries[3:]))
    (tmp_path / "labels" / "test.json").write_text(json.dumps([{"id": "5"}]))
    src = open_(f"ssv2:{tmp_path}", max_skip_fraction=0.5)
    assert src.split("train").labels.tolist() == [0, 1, 0] and "val" not in src.splits
    assert [(p.rsplit("/", 1)[-1], why) for p, why in src.failures] == [("4.webm", "missing file")]
