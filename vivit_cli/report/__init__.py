"""Reports: the run store -> the paper's tables (mean over seeds with a 95% interval over seeds and clips, the rows
that are not distinguishable from each column's best, the paper's numbers beside ours).

Never imports JAX: `vivit report` must answer instantly, even while a sweep is running. Importing the package
loads `tables` alone: the grids import its row names, and `sweep --list` / `--dry-run` would otherwise pay for
numpy and the bootstrap (0.2 s of their 0.9 s, 2026-12-02); the rest loads on first use.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from vivit_cli.report import tables

if TYPE_CHECKING:
    from vivit_cli.report.aggregate import Report

_LAZY = {"Report": "aggregate", "build": "aggregate", "completeness": "aggregate",
         "LoadStats": "store", "load_records": "store", "load_runs": "store"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"vivit_cli.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vivit_cli.report' has no attribute {name!r}")

__all__ = ["LoadStats", "Report", "build", "completeness", "load_records", "load_runs", "overview", "report", "tables"]


def report(name: str, results_dir: str | os.PathLike = "results", accuracy: str = "top1", perf: bool = False,
           stat: str = "ci") -> "Report":
    """The report of table `name` from the run store at `results_dir`; `perf` adds the perf columns; `stat` is
    ci (bootstrap intervals and marks), std or ci95 (the spread over seeds alone)."""
    from vivit_cli.report.aggregate import build
    from vivit_cli.report.store import load_records

    spec = tables.with_perf(tables.get(name)) if perf else tables.get(name)
    runs, stats = load_records(results_dir)
    return build(spec, runs, stats, accuracy=accuracy, stat=stat)


def overview(results_dir: str | os.PathLike = "results") -> tuple[list[dict], list[str]]:
    """Completeness of every table, and notes on runs that no table shows."""
    from vivit_cli.report.aggregate import completeness
    from vivit_cli.report.store import load_records

    runs, stats = load_records(results_dir)
    rows = [completeness(spec, runs) for spec in tables.TABLES.values()]
    notes = stats.notes()
    unknown = sorted({str(r["table"]) for r in runs if r["table"] not in tables.TABLES})
    if unknown:
        n = sum(r["table"] not in tables.TABLES for r in runs)
        notes.append(f"{n} run(s) belong to no known table: {', '.join(unknown)}")
    return rows, notes
