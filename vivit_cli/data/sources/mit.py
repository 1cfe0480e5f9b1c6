"""`mit:PATH`: Moments in Time as distributed.

    PATH/moments_categories.txt        one `category,index` per line
    PATH/trainingSet.csv               no header: filename,label[,positive responses,negative responses]
    PATH/validationSet.csv             (the three files may also sit in PATH/annotations/)
    PATH/training/<filename>, PATH/validation/<filename>    e.g. training/blocking/getty-...-id635808620_4.mp4
"""

from __future__ import annotations

from pathlib import Path

from vivit_cli.errors import VivitError

from .base import Source
from .csv_rows import read_rows
from .registry import OpenContext, register
from .scan import Item, folder_arg, video_source

SPLITS = (("train", "trainingSet.csv", "training"), ("val", "validationSet.csv", "validation"))
CATEGORIES = "moments_categories.txt"


def _categories(path: Path) -> tuple[str, ...]:
    names: dict[int, str] = {}
    for lineno, row in enumerate(read_rows(path), 1):
        if not any(row):
            continue
        try:
            name, idx = row[0], int(row[1])
        except (IndexError, ValueError):
            raise VivitError(f"{path}:{lineno}: expected category,index, got {','.join(row)!r}") from None
        names[idx] = name
    if sorted(names) != list(range(len(names))):
        raise VivitError(f"{path}: category indices are not 0..{len(names) - 1}")
    return tuple(names[i] for i in range(len(names)))


@register("mit")
def open_mit(arg: str, ctx: OpenContext) -> Source:
    root = folder_arg("mit", arg)
    ann_dir = next((d for d in (root, root / "annotations") if (d / CATEGORIES).is_file()), None)
    if ann_dir is None:
        raise VivitError(f"{root / CATEGORIES}: missing annotation file (the class index order)")
    names = _categories(ann_dir / CATEGORIES)
    index = {n: i for i, n in enumerate(names)}
    items = []
    for split, filename, folder in SPLITS:
        path = ann_dir / filename
        if not path.is_file():
            raise VivitError(f"{path}: missing annotation file")
        for lineno, row in enumerate(read_rows(path), 1):
            if not any(row):
                continue
            where = f"{path}:{lineno}"
            if len(row) not in (2, 4) or not row[0]:
                raise VivitError(f"{where}: expected filename,label[,positive,negative], got {','.join(row)[:120]!r}")
            if row[1] not in index:
                raise VivitError(f"{where}: label {row[1]!r} is not in {CATEGORIES}")
            items.append(Item(split, str(root / folder / row[0]), index[row[1]], where=where))
    return video_source("mit", f"mit:{arg}", items, names, ctx, {"annotations": str(ann_dir)})
