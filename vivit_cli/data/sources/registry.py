"""One opener per `data.source` kind: `@register("kind")` on `open_KIND(arg, ctx) -> Source`.

A kind's module registers itself when `vivit_cli.data.sources` imports it; its spec string and help line live
in `data/spec.py` KINDS (which `vivit data list` reads without importing any of this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vivit_cli.errors import VivitError

from .. import spec as spec_mod
from ..transforms import default_resize
from .base import ArraySplit, Source


@dataclass(frozen=True)
class OpenContext:
    """What an opener may need from the config: clip length (`span` = (frames - 1) * stride + 1 frames, the
    shortest usable clip or segment), the decode size and TFDS's data_dir."""

    frames: int = 8
    stride: int = 1
    span: int = 8
    crop: int = 32
    short_side: int | None = None
    data_dir: str | None = None


Opener = Callable[[str, OpenContext], Source]
OPENERS: dict[str, Opener] = {}


def register(kind: str) -> Callable[[Opener], Opener]:
    def deco(fn: Opener) -> Opener:
        if kind in OPENERS:
            raise ValueError(f"two openers for data.source kind {kind!r}")
        OPENERS[kind] = fn
        return fn

    return deco


def context(*, frames: int = 8, stride: int = 1, crop: int = 32, short_side: int | None = None,
            data_dir: str | None = None) -> OpenContext:
    # short_side: data.eval_resize (`data.api.short_side`), by default the reference's 256 : 224 of the crop.
    return OpenContext(frames=frames, stride=stride, span=(frames - 1) * stride + 1, crop=crop,
                       short_side=default_resize(crop) if short_side is None else short_side, data_dir=data_dir)


def check_skips(src: Source, max_skip_fraction: float | None) -> None:
    """Too many unreadable files (more than `max_skip_fraction` of those scanned) is an error naming the first."""
    if max_skip_fraction is None or not src.failures:
        return
    fraction = len(src.failures) / max(src.scanned, 1)
    if fraction > max_skip_fraction:
        path, problem = src.failures[0]
        raise VivitError(f"{path}: {problem} ({len(src.failures)} of {src.scanned} files unusable, more than "
                         f"data.max_skip_fraction={max_skip_fraction})")


def open_source(source: str, *, frames: int = 8, stride: int = 1, crop: int = 32, data_dir: str | None = None,
                max_skip_fraction: float | None = 0.01, short_side: int | None = None) -> Source:
    """Opens a `data.source` spec. With `max_skip_fraction` set, too many unreadable files is an error."""
    kind, arg = spec_mod.parse(source)
    if kind not in OPENERS:
        raise VivitError(f"data.source={source!r}: kind {kind!r} has no opener in this version")
    ctx = context(frames=frames, stride=stride, crop=crop, short_side=short_side, data_dir=data_dir)
    src = OPENERS[kind](arg, ctx)
    for split in src.splits.values():
        if isinstance(split, ArraySplit) and len(split) and split._array().shape[1] < ctx.span:
            raise VivitError(f"{src.spec}: split {split.name} has clips of {split._array().shape[1]} frames, "
                             f"shorter than data.frames x data.stride ({ctx.span} frames)")
    check_skips(src, max_skip_fraction)
    return src
