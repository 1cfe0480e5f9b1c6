"""Reports: the run store -> the paper's tables (mean over seeds with a 95% interval over seeds and clips, the rows
that are not distinguishable from each column's best, the paper's numbers beside ours).

Never imports JAX: `vivit report` must answer instantly, even while a sweep is running.
"""

from __future__ import annotations

import os

from vivit_cli.report import tables
from vivit_cli.report.aggregate import Report, build, completeness
from vivit_cli.report.store import LoadStats, load_records, load_runs

__all__ = ["LoadStats", "Report", "build", "completeness", "load_records", "load_runs", "overview", "report", "tables"]


def report(name: str, results_dir: str | os.PathLike = "results", accuracy: str = "top1", perf: bool = False,
           stat: str = "ci") -> Report:
    """The report of table `name` from the run store at `results_dir`; `perf` adds the perf columns; `stat` is
    ci (bootstrap intervals and marks), std or ci95 (the spread over seeds alone)."""
    spec = tables.with_perf(tables.get(name)) if perf else tables.get(name)
    runs, stats = load_records(results_dir)
    return build(spec, runs, stats, accuracy=accuracy, stat=stat)


def overview(results_dir: str | os.PathLike = "results") -> tuple[list[dict], list[str]]:
    """Completeness of every table, and notes on runs that no table shows."""
    runs, stats = load_records(results_dir)
    rows = [completeness(spec, runs) for spec in tables.TABLES.values()]
    notes = stats.notes()
    unknown = sorted({str(r["table"]) for r in runs if r["table"] not in tables.TABLES})
    if unknown:
        n = sum(r["table"] not in tables.TABLES for r in runs)
        notes.append(f"{n} run(s) belong to no known table: {', '.join(unknown)}")
    return rows, notes
