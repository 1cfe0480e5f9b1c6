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


def read_table(path: Path, required: tuple[str, ...], known: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) of an annotation CSV with a header row. The header must name every
    `required` column and nothing outside `known` (a file of another dataset or version is refused, not guessed);
    a row with another number of fields than the header is bad input too."""
    if not path.is_file():
        raise VivitError(f"{path}: missing annotation file")
    rows = read_rows(path)
    if not rows:
        raise VivitError(f"{path}: empty annotation file (expected a header {','.join(required)},...)")
    header = rows[0]
    unknown = [c for c in header if c not in known]
    missing = [c for c in required if c not in header]
    if unknown or missing:
        what = f"unknown columns {','.join(unknown)}" if unknown else f"no column {','.join(missing)}"
        raise VivitError(f"{path}: {what} (expected {','.join(known)})")
    out = []
    for lineno, row in enumerate(rows[1:], 2):
        if not any(row):
            continue
        if len(row) != len(header):
            raise VivitError(f"{path}:{lineno}: {len(row)} fields, the header has {len(header)} ({','.join(row)[:120]!r})")
        out.append((lineno, dict(zip(header, row))))
    return out


def number(path: Path, lineno: int, row: dict[str, str], column: str, kind=float):
    try:
        return kind(row[column])
    except ValueError:
        raise VivitError(f"{path}:{lineno}: {column}={row[column]!r} is not a number") from None


def check_segment(where: str, start, stop, unit: str) -> None:
    """Segments given by annotations: from >= 0, and stop after start."""
    if start < 0:
        raise VivitError(f"{where}: segment out of range (starts at {start} {unit})")
    if stop < start:
        raise VivitError(f"{where}: segment stops ({stop} {unit}) before it starts ({start} {unit})")
    if stop == start:
        raise VivitError(f"{where}: zero-length segment ({start} to {stop} {unit})")
