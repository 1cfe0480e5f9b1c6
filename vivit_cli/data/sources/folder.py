"""`folder:PATH`: video files in class subfolders, PATH/<class>/* or PATH/{train,val,test}/<class>/*."""

from __future__ import annotations

from pathlib import Path

from vivit_cli.errors import VivitError

from .base import SPLIT_ALIASES, VIDEO_EXTENSIONS, Source
from .registry import OpenContext, register
from .scan import by_name, class_dirs, folder_arg, hash_split, sorted_labels, video_source, videos_in


def class_files(cdir: Path) -> list[Path]:
    files = videos_in(cdir)
    if not files:
        raise VivitError(f"class folder {cdir} has no video files ({', '.join(VIDEO_EXTENSIONS[:4])}, ...)")
    return files


def split_dirs(root: Path) -> dict[str, Path]:
    """PATH/{train,val,test} (or their aliases: validation, ...) that exist."""
    return {SPLIT_ALIASES.get(d.name, d.name): d for d in class_dirs(root)
            if SPLIT_ALIASES.get(d.name, d.name) in ("train", "val", "test")}


def split_class_items(splits: dict[str, Path]) -> list[tuple[str, str, str]]:
    """(split, path, class) of PATH/<split>/<class>/<video> files."""
    return [(split, str(f), cdir.name) for split, sdir in sorted(splits.items()) for cdir in class_dirs(sdir)
            for f in class_files(cdir)]


@register("folder")
def open_folder(arg: str, ctx: OpenContext) -> Source:
    root = folder_arg("folder", arg)
    splits = split_dirs(root)
    if splits:
        layout = "split/class"
        items = split_class_items(splits)
    else:
        layout = "class (80/10/10 split by file name hash)"
        classes = class_dirs(root)
        if not classes:
            raise VivitError(f"data.source=folder:{arg}: no class subfolders (expected PATH/<class>/<video>)")
        items = [(hash_split(str(f.relative_to(root))), str(f), cdir.name) for cdir in classes
                 for f in class_files(cdir)]
    if not items:
        raise VivitError(f"data.source=folder:{arg}: no video files found")
    labels = sorted_labels(label for _, _, label in items)
    return video_source("folder", f"folder:{arg}", by_name(items, labels), labels, ctx, {"layout": layout})
