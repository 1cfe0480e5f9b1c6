"""`kinetics:PATH`: Kinetics 400/600/700 as distributed.

    PATH/annotations/{train,val,test}.csv   label,youtube_id,time_start,time_end,split[,is_cc]
    PATH/{train,val,test}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4          (flat, as the tarballs extract)
    PATH/{train,val,test}/<class>/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4  (per-class folders)

A file named `{youtube_id}_{start:06d}_{end:06d}` is the trimmed clip: the whole file is the example. A file
named `{youtube_id}` is the full YouTube video: the example is its segment time_start..time_end (seconds, turned
into frames with the video's frame rate). A row whose file is absent is a missing video, counted against
data.max_skip_fraction like a broken one. Without annotations/, per-class folders give the labels.

    PATH/replacement/replacement_for_corrupted_k400/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4

is the Kinetics-400 distribution's fix for about 1,400 clips found corrupted after release (any video under
PATH/replacement/ counts): a clip that has a replacement is read from it, whatever its split folder holds.
"""

from __future__ import annotations

from pathlib import Path

from vivit_cli.errors import VivitError

from .base import SPLIT_ALIASES, Source
from .csv_rows import check_segment, number, read_table
from .folder import split_class_items, split_dirs
from .registry import OpenContext, register
from .scan import Item, by_name, class_dirs, folder_arg, sorted_labels, video_source, videos_in

COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split", "is_cc")
REQUIRED = ("youtube_id", "time_start", "time_end")


def _annotation_files(ann_dir: Path) -> dict[str, Path]:
    found = {SPLIT_ALIASES.get(p.stem, p.stem): p for p in sorted(ann_dir.glob("*.csv"))}
    return {s: p for s, p in found.items() if s in ("train", "val", "test")}


def _rows(csv_path: Path, split: str, files: dict[str, str], video_dir: Path,
          replacements: dict[str, str]) -> tuple[list, list[str]] | None:
    """(items, label names) of one split's CSV; None for a CSV without labels (Kinetics-400's original test.csv)."""
    table = read_table(csv_path, REQUIRED, COLUMNS)
    if table and "label" not in table[0][1]:
        if split == "test":
            return None
        raise VivitError(f"{csv_path}: no column label (only test.csv may come without labels)")
    items, names = [], []
    for lineno, row in table:
        where = f"{csv_path}:{lineno}"
        yid, label = row["youtube_id"], row["label"]
        if not yid or not label:
            raise VivitError(f"{where}: empty youtube_id or label")
        start, end = number(csv_path, lineno, row, "time_start"), number(csv_path, lineno, row, "time_end")
        check_segment(where, start, end, "s")
        trimmed = f"{yid}_{int(start):06d}_{int(end):06d}"
        if trimmed in replacements:
            items.append(Item(split, replacements[trimmed], label, where=where))
        elif trimmed in files:
            items.append(Item(split, files[trimmed], label, where=where))
        elif yid in files:
            items.append(Item(split, files[yid], label, seconds=(start, end), where=where))
        else:
            items.append(Item(split, str(video_dir / f"{trimmed}.mp4"), label, where=where))
        names.append(label)
    return items, names


@register("kinetics")
def open_kinetics(arg: str, ctx: OpenContext) -> Source:
    root = folder_arg("kinetics", arg)
    folders = split_dirs(root)
    if not folders:
        raise VivitError(f"data.source=kinetics:{arg}: no train/, val/ or test/ folder of videos")
    ann_dir = root / "annotations"
    if not ann_dir.is_dir():
        if not all(class_dirs(d) for d in folders.values()):
            raise VivitError(f"{ann_dir}: missing annotation folder (train.csv, val.csv, test.csv); without it the "
                             "videos must sit in per-class folders PATH/<split>/<class>/")
        triples = split_class_items(folders)
        labels = sorted_labels(label for _, _, label in triples)
        return video_source("kinetics", f"kinetics:{arg}", by_name(triples, labels), labels, ctx,
                            {"layout": "split/class folders, no annotations"})
    csvs = _annotation_files(ann_dir)
    for split in folders:
        if split not in csvs:
            raise VivitError(f"{ann_dir / f'{split}.csv'}: missing annotation file (the videos of {folders[split]} "
                             "need their labels)")
    spare = root / "replacement"
    replacements = {f.stem: str(f) for f in videos_in(spare)} if spare.is_dir() else {}
    raw, names, unlabelled = [], [], []
    for split, csv_path in sorted(csvs.items()):
        if split not in folders:
            continue  # annotations of a split not downloaded
        files = {f.stem: str(f) for f in videos_in(folders[split])}
        got = _rows(csv_path, split, files, folders[split], replacements)
        if got is None:
            unlabelled.append(split)
            continue
        raw += got[0]
        names += got[1]
    if not raw:
        raise VivitError(f"data.source=kinetics:{arg}: no labelled rows in {ann_dir}")
    labels = sorted_labels(names)
    index = {name: i for i, name in enumerate(labels)}
    items = [Item(it.split, it.path, index[it.label], it.segment, it.seconds, it.where) for it in raw]
    layout = "split/class" if any(class_dirs(d) for d in folders.values()) else "split"
    spares = set(replacements.values())
    replaced = sum(it.path in spares for it in items)
    return video_source("kinetics", f"kinetics:{arg}", items, labels, ctx,
                        {"layout": layout, **({"unlabelled_splits": unlabelled} if unlabelled else {}),
                         **({"replaced": replaced} if replaced else {})})
