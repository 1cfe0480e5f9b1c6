"""Output that is not a terminal (a pipe, a file, CI) is not wrapped at 80 columns: table cells stay on one line and
a progress line is never split mid-figure. COLUMNS, when set, still sets the width."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_report import make_store
from vivit_cli import term

ROOT = Path(__file__).resolve().parents[1]


def vivit(*args: str, columns: str | None = None) -> subprocess.CompletedProcess:
    """`vivit ARGS` with stdout and stderr pipes (not terminals), as `vivit ... | cat` runs it."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"PYTHONPATH": str(ROOT)}
    if columns is not None:
        env["COLUMNS"] = columns
    proc = subprocess.run([sys.executable, "-m", "vivit_cli.cli.app", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def line_with(text: str, needle: str) -> str:
    (line,) = [x for x in text.splitlines() if needle in x]
    return line


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("piped") / "results")


def test_status_list_and_report_are_not_wrapped_when_piped(store):
    status = vivit("status", "--results", str(store)).stdout
    # Each run on one line with its cell, state and the whole note: the 80-column wrap cut these into fragments.
    line = line_with(status, "m1a-s1")
    cells = r"Model 1: Spatio-temporal\s*│ appearance\s*│ 1\s*│ m1a-s1\s*│ done\s*│ 0\.600"
    assert re.search(cells, line), line
    assert "older numerics version (before 3, now " in line and len(line) > 80

    listing = vivit("sweep", "--list").stdout
    line = line_with(listing, "│ model-variants ")
    what = "Model variants (paper Table 2): models 1-4 and the model-2 average-pool baseline, on both tasks."
    assert what in line

    overview = vivit("report", "--results", str(store)).stdout
    line = line_with(overview, "4/10")
    assert re.search(r"model-variants\s*│\s*4/10\s*│.*│ Model variants\s*│ Table 2", line), line

    table = vivit("report", "-t", "model-variants", "--results", str(store)).stdout
    rows = [x for x in table.splitlines() if x.startswith("│")]
    assert len(rows) == 5 and all(len(x) == len(rows[0]) > 150 for x in rows)  # one line per model, none cut
    # The footnotes are the table's caption: they wrap at the table's width, not at 80.
    assert len(line_with(table, "Ours: top-1 accuracy in %, mean over 3 seeds").rstrip()) > 150


def test_columns_still_sets_the_width(store):
    listing = vivit("sweep", "--list", columns="70").stdout
    assert max(len(x) for x in listing.splitlines()) <= 70


def test_sweep_progress_lines_are_whole_off_a_terminal(monkeypatch, capsys):
    from vivit_cli.sweep.live import Display, Row

    monkeypatch.delenv("COLUMNS", raising=False)
    cell = "Model 4: Fact. dot product with a long label that pushes the line past eighty columns"
    row = Row(key="g/x", grid="g", cell=cell, column="motion", seed=2, run_id="model4-motion-0123abcd-s2",
              state="running", started=0.0)
    with Display("model-variants", [row], live=False) as display:
        row.state, row.top1, row.ended = "done", 0.652, 21.0
        display.refresh()
    err = capsys.readouterr().err
    line = line_with(err, "done")
    assert line == f"[1/1] done     model4-motion-0123abcd-s2  {cell} / motion seed 2 top1 0.652 (21s)"


def test_console_widths(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert term.console().width == term.UNWRAPPED  # pytest captures stdout: not a terminal
    assert term.console(width=50).width == 50
    monkeypatch.setenv("COLUMNS", "90")
    assert term.console(stderr=True).width == 90
    assert term.console(force_terminal=True).width == 90  # a terminal: rich's own width (here from COLUMNS)
