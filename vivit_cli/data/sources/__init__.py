"""Sources: random-access splits of examples (reader, labels, segment), one opener per kind of `data.source`.

`base.py` has the types, `registry.py` the `@register("kind")` table and `open_source`, `scan.py` what the
video-file kinds share; each kind is its own module, registered by importing it here.
"""

from __future__ import annotations

from ..video import DecodeError
from . import (  # noqa: F401  (each registers its opener)
    csv_rows,
    dmvr,
    embedded,
    epic,
    folder,
    kinetics,
    mit,
    npy,
    records,
    ssv2,
    tfds,
)
from .base import (
    SPLIT_ALIASES,
    VIDEO_EXTENSIONS,
    ArrayReader,
    ArraySplit,
    Example,
    SegmentReader,
    Source,
    Split,
    VideoSplit,
)
from .registry import OPENERS, OpenContext, open_source, register
from .tfds import TfdsSplit

__all__ = ["OPENERS", "SPLIT_ALIASES", "VIDEO_EXTENSIONS", "ArrayReader", "ArraySplit", "DecodeError", "Example",
           "OpenContext", "SegmentReader", "Source", "Split", "TfdsSplit", "VideoSplit", "open_source", "register"]
