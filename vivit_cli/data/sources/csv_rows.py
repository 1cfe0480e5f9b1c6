"""`csv:PATH`: rows path,label[,split]; PATH is a .csv or a folder with train.csv/val.csv/test.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from vivit_cli.errors import VivitError

from .base import SPLIT_ALIASES, Source
from .registry import OpenContext, register
from .scan import by_name, hash_split, sorted_labels, video_source


def read_rows(path: Path) -> list[list[str]]:
    """The CSV's rows, stripped (a file that cannot be read is bad input)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [[c.strip() for c in row] for row in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VivitError(f"cannot read CSV {path}: {e}") from None


def _read_csv(path: Path, default_split: str | None) -> list[tuple[str, str, str]]:
    items = []
    for lineno, row in enumerate(read_rows(path), 1):
        if not row or not row[0] or row[0].startswith("#"):
            continue
        if lineno == 1 and row[0].lower() in ("path", "file", "filename", "video"):
            continue  # header
        if len(row) < 2 or not row[1]:
            raise VivitError(f"{path}:{lineno}: expected path,label[,split], got {','.join(row)!r}")
        video = Path(row[0]).expanduser()
        if not video.is_absolute():
            video = path.parent / video
        if not video.is_file():
            raise VivitError(f"{path}:{lineno}: video file {video} does not exist")
        split = row[2] if len(row) > 2 and row[2] else (default_split or hash_split(row[0]))
        items.append((SPLIT_ALIASES.get(split, split), str(video), row[1]))
    return items


@register("csv")
def open_csv(arg: str, ctx: OpenContext) -> Source:
    root = Path(arg).expanduser()
    if root.is_dir():
        files = {SPLIT_ALIASES.get(p.stem, p.stem): p for p in sorted(root.glob("*.csv"))}
        files = {s: p for s, p in files.items() if s in ("train", "val", "test")}
        if not files:
            raise VivitError(f"data.source=csv:{arg}: the folder has no train.csv/val.csv/test.csv")
        items = [it for s, p in sorted(files.items()) for it in _read_csv(p, s)]
    elif root.is_file():
        items = _read_csv(root, None)
    else:
        raise VivitError(f"data.source=csv:{arg}: no such file or folder")
    if not items:
        raise VivitError(f"data.source=csv:{arg}: no rows")
    labels = sorted_labels(label for _, _, label in items)
    return video_source("csv", f"csv:{arg}", by_name(items, labels), labels, ctx, {})
