"""Where a run reports: `metrics.jsonl` (the source of truth), a progress display, and when it is time.

Only process 0 writes; the other processes get a `MetricsLog(enabled=False)` that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

from vivit_cli.io import as_path, is_remote, write_text


def itstime(step: int, every: int, total: int) -> bool:
    """True after `step` completed steps when a periodic action (log, checkpoint, eval) is due.

    Always due at the last step; `every <= 0` means only then. One helper so the log, checkpoint and eval
    schedules cannot drift apart.
    """
    return step == total or (every > 0 and step % every == 0)


class MetricsLog:
    """Appends one JSON object per logged step to metrics.jsonl, line-buffered and fsynced at close.

    On resume the lines past the restored step (written after the last checkpoint by the run that died) are
    dropped first, so the file reads as one uninterrupted run.

    An object store cannot append: there the whole file is rewritten (one atomic object write) at most every
    `remote_every` seconds, at each checkpoint (`flush`) and at close, so a live `vivit status` lags a little
    and a crash loses at most the lines after the last checkpoint, which a resume drops anyway.
    """

    def __init__(self, path, resume_step: int, enabled: bool = True, remote_every: float = 30.0):
        self.enabled = enabled
        self.path = path = as_path(path)
        self._f = None
        self._lines: list[str] | None = None  # the whole file, when it lives on an object store
        self._dirty, self._flushed_at, self._every = False, time.time(), remote_every
        if not enabled:
            return
        local = not is_remote(path)
        if path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if int(json.loads(line).get("step", 0)) <= resume_step:
                        kept.append(line)
                except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                    continue  # a torn last line from a kill
            if local:
                write_text(path, "".join(k + "\n" for k in kept))
            else:
                self._lines, self._dirty = kept, True
        if local:
            self._f = open(path, "a", encoding="utf-8")
        elif self._lines is None:
            self._lines = []

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        line = json.dumps(clean, sort_keys=True)
        if self._f is not None:
            self._f.write(line + "\n")
            self._f.flush()
            return
        if self._lines is None:  # closed
            return
        self._lines.append(line)
        self._dirty = True
        if time.time() - self._flushed_at >= self._every:
            self.flush()

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()
        elif self._lines is not None and self._dirty:
            write_text(self.path, "".join(k + "\n" for k in self._lines))
            self._dirty, self._flushed_at = False, time.time()

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
        self.flush()
        self._lines = None


class Progress:
    """A rich progress bar with loss, lr and clips/s on a terminal; one plain line per log step otherwise
    (sweep logs, CI), so captured output stays readable."""

    def __init__(self, total: int, start: int, title: str, enabled: bool = True):
        self.enabled = enabled
        self.total = total
        self._bar = None
        self._t0 = time.time()
        if not enabled:
            return
        from vivit_cli import term

        self.console = term.console(stderr=True)  # a log file's lines unwrapped (a group's line is long)
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeRemainingColumn

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                                     transient=False)
            self._task = self._bar.add_task(title, total=total, completed=start, info="")
            self._bar.start()
        else:
            self.console.print(f"{title}: steps {start}..{total}", highlight=False)

    def update(self, step: int, record: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        info = ""
        if record:
            info = f"loss {_fmt(record['loss'], '.4f')}  lr {record['lr']:.2e}  {record['clips_per_s']:.0f} clips/s"
            if "top1" in record:
                info += f"  top1 {_fmt(record['top1'], '.3f')}"
        if self._bar is not None:
            kw = {"info": info} if info else {}
            self._bar.update(self._task, completed=step, **kw)
        elif info:
            self.console.print(f"step {step}/{self.total}  {info}", highlight=False)

    def message(self, text: str) -> None:
        if self.enabled:
            (self._bar.console if self._bar is not None else self.console).print(text, highlight=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _fmt(value, spec: str) -> str:
    """A figure, or a group's figures side by side (one per seed: 2.0822/2.1108/2.1060)."""
    return "/".join(format(v, spec) for v in value) if isinstance(value, (list, tuple)) else format(value, spec)


def note(text: str, enabled: bool = True) -> None:
    """A one-line status message on stderr (process 0 only)."""
    if enabled:
        sys.stderr.write(text.rstrip() + "\n")
        sys.stderr.flush()
