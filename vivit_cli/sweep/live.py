"""What the sweep shows while it runs: a rich live table on a terminal, one line per state change otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class Row:
    key: str  # grid/run id
    grid: str
    cell: str
    column: str
    seed: int
    run_id: str
    state: str
    steps: int | None = None
    step: int | None = None
    top1: float | None = None
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    note: str = ""

    def elapsed(self) -> str:
        if self.started is None:
            return ""
        return f"{(self.ended or time.time()) - self.started:.0f}s"


_STYLE = {"done": "green", "failed": "red", "running": "cyan", "partial": "yellow", "shared": "green",
          "waiting": "dim", "new": "", "blocked": "red"}


def table(rows: list[Row], title: str = "", show_grid: bool = False):
    """The cells as a rich table; columns with nothing in them are left out, so it fits a terminal."""
    from rich.table import Table
    from rich.text import Text

    cols = {
        "#": lambda i, r: str(i),
        "grid": lambda i, r: r.grid,
        "cell": lambda i, r: r.cell,
        "task": lambda i, r: r.column,
        "seed": lambda i, r: str(r.seed),
        "run id": lambda i, r: r.run_id,
        "state": lambda i, r: r.state,
        "step": lambda i, r: f"{r.step or 0}/{r.steps}" if r.state == "running" and r.steps else "",
        "top1": lambda i, r: "" if r.top1 is None else f"{r.top1:.3f}",
        "time": lambda i, r: r.elapsed(),
        "note": lambda i, r: (r.error or r.note or "")[:100],
    }
    if not show_grid:
        cols.pop("grid")
    cells = {name: [f(i, r) for i, r in enumerate(rows, 1)] for name, f in cols.items()}
    keep = [n for n in cols if n in ("#", "cell", "run id", "state") or any(cells[n])]
    t = Table(title=title, title_justify="left", pad_edge=False)
    for name in keep:
        t.add_column(name, no_wrap=name in ("#", "run id", "state", "seed", "step", "top1", "time"),
                     ratio=3 if name in ("cell", "note") else None, overflow="fold")
    for i, r in enumerate(rows):
        # Text, not markup: a note or cell with brackets prints as written, and a state without a style too.
        values = [Text(cells[n][i], style=_STYLE.get(r.state, "") if n == "state" else "") for n in keep]
        t.add_row(*values)
    return t


@dataclass
class Display:
    title: str
    rows: list[Row]
    live: bool = field(default_factory=lambda: sys.stderr.isatty())
    _live: object = None
    _last: dict = field(default_factory=dict)

    def __enter__(self):
        from vivit_cli import term

        # Off a terminal (a log file, CI) one line per state change, never wrapped mid-figure.
        self.console = term.console(stderr=True)
        if self.live:
            from rich.live import Live

            self._live = Live(table(self.rows, self.title), console=self.console, refresh_per_second=2,
                              transient=False)
            self._live.__enter__()
        else:
            self.console.print(f"{self.title}: {len(self.rows)} jobs", highlight=False)
        self.refresh()
        return self

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(table(self.rows, self.title))
            return
        for i, r in enumerate(self.rows, 1):
            if self._last.get(r.key) != r.state:
                self._last[r.key] = r.state
                extra = f" top1 {r.top1:.3f}" if r.top1 is not None and r.state == "done" else ""
                extra += f" ({r.elapsed()})" if r.ended else ""
                extra += f": {r.error}" if r.error and r.state == "failed" else ""
                self.console.print(f"[{i}/{len(self.rows)}] {r.state:<8} {r.run_id}  {r.cell}"
                                   f"{' / ' + r.column if r.column else ''}{' seed ' + str(r.seed) if r.seed else ''}"
                                   f"{extra}", highlight=False, markup=False)

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.update(table(self.rows, self.title))
            self._live.__exit__(*exc)
            self._live = None
