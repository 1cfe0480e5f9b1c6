"""benchmarks/RESULTS.md: each script owns one block between its markers and replaces only that block."""

from __future__ import annotations

import os
from pathlib import Path

PATH = Path(__file__).resolve().parent / "RESULTS.md"


def replace_block(begin: str, end: str, new: str, path: Path = PATH) -> None:
    """Puts `new` (which starts with `begin` and ends with `end`) where the old block was, else at the end."""
    text = path.read_text()
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + new + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
