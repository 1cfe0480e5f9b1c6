"""`ssv2:PATH`: Something-Something v2 as distributed.

    PATH/[labels/][something-something-v2-]labels.json       {"<template>": "<class id>", ...}
    PATH/[labels/][something-something-v2-]train.json        [{"id", "label", "template", "placeholders"}, ...]
    PATH/[labels/][something-something-v2-]validation.json   (test.json has ids only: no labels, not a split)
    PATH/[videos/|20bn-something-something-v2/]<id>.webm

A template's class is labels.json's id for it with the [brackets] removed. A video absent from the folders is a
missing file, counted against data.max_skip_fraction (every copy misses a few).
"""

from __future__ import annotations

import json
from pathlib import Path

from vivit_cli.errors import VivitError

from .base import Source
from .registry import OpenContext, register
from .scan import Item, folder_arg, video_source


def _annotation_dir(root: Path) -> Path | None:
    for d in (root, root / "labels", root / "annotations"):
        if d.is_dir() and sorted(d.glob("*labels.json")):
            return d
    return None


def _template_ids(labels_file: Path) -> dict[str, int]:
    try:
        ids = {str(t): int(i) for t, i in json.loads(labels_file.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise VivitError(f"{labels_file}: not a Something-Something v2 labels file ({e})") from None
    if sorted(ids.values()) != list(range(len(ids))):
        raise VivitError(f"{labels_file}: class ids are not 0..{len(ids) - 1}")
    return ids


@register("ssv2")
def open_ssv2(arg: str, ctx: OpenContext) -> Source:
    root = folder_arg("ssv2", arg)
    ann_dir = _annotation_dir(root)
    if ann_dir is None:
        raise VivitError(f"{root / 'labels.json'}: missing annotation file (*labels.json, the template -> class id "
                         "map; also looked in labels/)")

    def find(suffix: str) -> Path | None:
        hits = sorted(ann_dir.glob(f"*{suffix}"))
        return hits[0] if hits else None

    labels_file = find("labels.json")
    template_ids = _template_ids(labels_file)
    names = [""] * len(template_ids)
    for template, idx in template_ids.items():
        names[idx] = template
    # A few templates in train/validation.json differ from labels.json in case only.
    folded = {t.lower(): i for t, i in template_ids.items()}
    video_dirs = [d for d in (root, root / "videos", root / "20bn-something-something-v2") if d.is_dir()]
    items = []
    for split, suffix in (("train", "train.json"), ("val", "validation.json")):
        ann = find(suffix)
        if ann is None:
            raise VivitError(f"{ann_dir / suffix}: missing annotation file")
        try:
            entries = json.loads(ann.read_text())
        except ValueError as e:
            raise VivitError(f"{ann}: not valid JSON ({e})") from None
        for n, entry in enumerate(entries):
            try:
                vid, template = str(entry["id"]), entry["template"].replace("[", "").replace("]", "")
            except (KeyError, TypeError, AttributeError):
                raise VivitError(f"{ann}: entry {n} lacks id/template") from None
            idx = template_ids.get(template, folded.get(template.lower()))
            if idx is None:
                raise VivitError(f"{ann}: entry {n} (id {vid}) has template {template!r}, not in {labels_file.name}")
            path = next((d / f"{vid}{ext}" for d in video_dirs for ext in (".webm", ".mp4")
                         if (d / f"{vid}{ext}").is_file()), root / f"{vid}.webm")  # absent: a counted skip
            items.append(Item(split, str(path), idx, where=f"{ann}: entry {n}"))
    return video_source("ssv2", f"ssv2:{arg}", items, tuple(names), ctx, {"annotations": str(ann_dir)})
