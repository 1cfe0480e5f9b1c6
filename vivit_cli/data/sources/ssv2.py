"""`ssv2:PATH`: Something-Something v2, its labels/train/validation JSON files and the <id>.webm videos."""

from __future__ import annotations

import json
from pathlib import Path

from vivit_cli.errors import VivitError

from .base import Source
from .registry import OpenContext, register
from .scan import Item, video_source


@register("ssv2")
def open_ssv2(arg: str, ctx: OpenContext) -> Source:
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise VivitError(f"data.source=ssv2:{arg}: no such folder")

    def find(suffix: str) -> Path | None:
        hits = sorted(root.glob(f"*{suffix}"))
        return hits[0] if hits else None

    labels_file = find("labels.json")
    if labels_file is None:
        raise VivitError(f"data.source=ssv2:{arg}: no *labels.json (the template -> class id map)")
    try:
        template_ids = json.loads(labels_file.read_text())
        names = [None] * len(template_ids)
        for template, idx in template_ids.items():
            names[int(idx)] = template
    except (ValueError, IndexError, TypeError, AttributeError) as e:
        raise VivitError(f"{labels_file}: not a Something-Something v2 labels file ({e})") from None
    video_dirs = [d for d in (root, root / "videos", root / "20bn-something-something-v2") if d.is_dir()]
    items = []
    for split, suffix in (("train", "train.json"), ("val", "validation.json")):
        ann = find(suffix)
        if ann is None:
            continue
        try:
            entries = json.loads(ann.read_text())
        except ValueError as e:
            raise VivitError(f"{ann}: not valid JSON ({e})") from None
        for n, entry in enumerate(entries):
            try:
                vid, template = str(entry["id"]), entry["template"].replace("[", "").replace("]", "")
            except (KeyError, TypeError, AttributeError):
                raise VivitError(f"{ann}: entry {n} lacks id/template") from None
            if template not in template_ids:
                raise VivitError(f"{ann}: entry {n} (id {vid}) has template {template!r}, not in {labels_file.name}")
            path = next((d / f"{vid}{ext}" for d in video_dirs for ext in (".webm", ".mp4")
                         if (d / f"{vid}{ext}").is_file()), None)
            if path is None:
                raise VivitError(f"{ann}: video {vid}.webm for entry {n} not found under {root}")
            items.append(Item(split, str(path), int(template_ids[template])))
    if not items:
        raise VivitError(f"data.source=ssv2:{arg}: no *train.json or *validation.json annotations")
    return video_source("ssv2", f"ssv2:{arg}", items, tuple(names), ctx, {})
