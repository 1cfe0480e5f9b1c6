"""Consoles for tables and progress lines: the terminal's width on a terminal, lines unwrapped off one.

rich wraps at 80 columns when its output is not a terminal (a pipe, a file, CI), which cuts table cells into
four-line fragments and a log line mid-figure ("top1" on one line, "0.652" on the next). Off a terminal there is
no width to fit, so lines keep their natural length; COLUMNS, when set, still wins (rich reads it), for whoever
wants a fixed width. Imports rich only: any package may use it (the CLI, the sweep's live view, the trainer's log).
"""

from __future__ import annotations

import os

UNWRAPPED = 10_000  # columns: wider than any table or line we print, so none wraps; tables take their own width


def console(stderr: bool = False, **kwargs):
    """A rich Console on stdout (or stderr): as rich makes it on a terminal, unwrapped when not a terminal."""
    from rich.console import Console

    out = Console(stderr=stderr, **kwargs)
    if "width" not in kwargs and not out.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
        out.width = UNWRAPPED
    return out
