"""`epic:PATH`: Epic-Kitchens-100 action recognition, two heads (verb 97, noun 300).

    PATH/EPIC_100_train.csv, PATH/EPIC_100_validation.csv            (or under PATH/annotations/ or
    PATH/EPIC_100_verb_classes.csv, PATH/EPIC_100_noun_classes.csv    PATH/epic-kitchens-100-annotations/)
    PATH/<participant>/rgb_frames/<video_id>/frame_0000000001.jpg ...  the extracted frames, read when present
    PATH/<participant>/videos/<video_id>.MP4                           else the video (the download scripts' layout)
    PATH/EPIC_100_test_timestamps.csv                                  optional: the challenge's unlabelled test

An example is one action: stop_frame - start_frame frames of its video from start_frame, in the numbering from 1
of rgb_frames (0-based frames [start_frame - 1, stop_frame - 1); the count Epic's own loaders use). Labels are
[verb_class, noun_class]. Class names are the classes files' `key`s when those files are there, else the ids.
"""

from __future__ import annotations

from pathlib import Path

from vivit_cli.errors import VivitError

from .base import Source
from .csv_rows import check_segment, number, read_table
from .registry import OpenContext, register
from .scan import Item, folder_arg, video_source

COLUMNS = ("uid", "narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
           "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun", "noun_class",
           "all_nouns", "all_noun_classes")
REQUIRED = ("narration_id", "video_id", "start_frame", "stop_frame", "verb_class", "noun_class")
SPLITS = {"train": "EPIC_100_train.csv", "val": "EPIC_100_validation.csv"}
# The challenge's test segments come without labels: checked and counted (`vivit data inspect`), not trained on or
# scored, as Kinetics-400's unlabelled test.csv.
TEST = "EPIC_100_test_timestamps.csv"
TEST_REQUIRED = ("narration_id", "video_id", "start_frame", "stop_frame")
HEADS = (("verb", "EPIC_100_verb_classes.csv", 97), ("noun", "EPIC_100_noun_classes.csv", 300))
CLASS_COLUMNS = ("id", "key", "instances", "category")


def _annotation_dir(root: Path) -> Path:
    for d in (root, root / "annotations", root / "epic-kitchens-100-annotations"):
        if (d / SPLITS["train"]).is_file():
            return d
    raise VivitError(f"{root / SPLITS['train']}: missing annotation file (also looked in annotations/ and "
                     "epic-kitchens-100-annotations/)")


def _class_names(ann_dir: Path, filename: str, size: int) -> tuple[str, ...]:
    path = ann_dir / filename
    if not path.is_file():
        return tuple(str(i) for i in range(size))
    rows = read_table(path, ("id", "key"), CLASS_COLUMNS)
    names = {}
    for lineno, row in rows:
        names[number(path, lineno, row, "id", int)] = row["key"]
    if sorted(names) != list(range(len(names))):
        raise VivitError(f"{path}: class ids are not 0..{len(names) - 1}")
    return tuple(names[i] for i in range(len(names)))


def _media(root: Path, participant: str, video_id: str) -> str:
    """The video's extracted frames if present, else its MP4 (named even when absent: a missing video)."""
    frames = root / participant / "rgb_frames" / video_id
    if frames.is_dir():
        return str(frames)
    videos = root / participant / "videos"
    for ext in (".MP4", ".mp4"):
        if (videos / f"{video_id}{ext}").is_file():
            return str(videos / f"{video_id}{ext}")
    return str(videos / f"{video_id}.MP4")


def _segment(path: Path, lineno: int, row: dict) -> tuple[int, int]:
    """start_frame, stop_frame of a row (numbered from 1), checked."""
    start, stop = (number(path, lineno, row, c, int) for c in ("start_frame", "stop_frame"))
    if start < 1:
        raise VivitError(f"{path}:{lineno}: segment out of range (start_frame {start}; frames are numbered from 1)")
    check_segment(f"{path}:{lineno}", start, stop, "frames")
    return start, stop


@register("epic")
def open_epic(arg: str, ctx: OpenContext) -> Source:
    root = folder_arg("epic", arg)
    ann_dir = _annotation_dir(root)
    heads = tuple((name, _class_names(ann_dir, filename, size)) for name, filename, size in HEADS)
    sizes = [len(names) for _, names in heads]
    items = []
    for split, filename in SPLITS.items():
        path = ann_dir / filename
        for lineno, row in read_table(path, REQUIRED, COLUMNS):
            where = f"{path}:{lineno}"
            start, stop = _segment(path, lineno, row)
            label = []
            for (head, _), size in zip(heads, sizes):
                value = number(path, lineno, row, f"{head}_class", int)
                if not 0 <= value < size:
                    raise VivitError(f"{where}: {head}_class {value} is outside the {size} {head} classes")
                label.append(value)
            video_id = row["video_id"]
            participant = row.get("participant_id") or video_id.split("_")[0]
            items.append(Item(split, _media(root, participant, video_id), tuple(label), segment=(start - 1, stop - 1),
                              where=where))
    test, unlabelled = ann_dir / TEST, {}
    if test.is_file():
        rows = read_table(test, TEST_REQUIRED, COLUMNS)
        for lineno, row in rows:
            _segment(test, lineno, row)
        unlabelled = {"unlabelled_splits": ["test"], "test_segments": len(rows)}
    return video_source("epic", f"epic:{arg}", items, heads[0][1], ctx,
                        {"annotations": str(ann_dir), "heads": {name: n for (name, _), n in zip(heads, sizes)},
                         **unlabelled}, heads=heads)
