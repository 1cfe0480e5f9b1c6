"""Reads the run store (`results/<grid>/<run-id>/`) into one record per run (`load_runs`: a pandas DataFrame of them).

A sweep may be writing to the same folder while we read it: any file that is missing or not valid JSON yet is
treated as "not written yet", never as an error, so a report never crashes on a half-written run.
The store may be a gs:// URL (read through `vivit_cli.io`, one request per file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vivit_cli.errors import VivitError
from vivit_cli.io import as_path, read_json
from vivit_cli.report import tables

# One row of `load_runs`'s DataFrame, in this column order.
RUN_COLUMNS = ("grid", "run_id", "table", "cell", "row", "column", "seed", "status", "top1", "top5", "params",
               "gflops", "forward_ms_per_clip", "device", "numerics", "steps", "train_seconds", "error", "eval",
               "mtime", "path", "predictions", "eval_videos", "heads", "head_metrics", *tables.PERF_METRICS)

DONE, FAILED, RUNNING = "done", "failed", "running"


@dataclass
class LoadStats:
    """Folders that hold no usable run: counted and reported, never silently dropped."""

    no_cell: list[str] = field(default_factory=list)  # "<grid>/<run>" folders without a readable cell.json
    superseded: dict[str, int] = field(default_factory=dict)  # per table: older runs of the same row/column/seed

    def notes(self, grids: tuple[str, ...] | None = None, table: str | None = None) -> list[str]:
        """What was skipped: everywhere, or only what concerns one table (its grids, its runs)."""
        no_cell = [p for p in self.no_cell if grids is None or p.split("/")[0] in grids]
        superseded = sum(n for t, n in self.superseded.items() if table is None or t == table)
        out = []
        if no_cell:
            out.append(f"{len(no_cell)} run folder(s) without a readable cell.json (with a row) ignored "
                       f"(e.g. {no_cell[0]})")
        if superseded:
            out.append(f"{superseded} older run(s) of the same cell and seed superseded by newer ones "
                       "(a grid rerun with other settings)")
        return out


def _float(value):
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _perf_columns(summary: dict) -> dict:
    """The report's perf columns from summary.json's `perf` block (runs trained before it have none)."""
    perf = summary.get("perf") if isinstance(summary.get("perf"), dict) else {}
    memory = _float(perf.get("peak_memory_bytes"))
    # A load from the persistent compilation cache takes a fraction of a compile: averaging the two says nothing.
    compiled = perf.get("compile_source") != "persistent cache"
    return {"train_clips_per_s": _float(perf.get("train_clips_per_s")), "mfu": _float(perf.get("mfu")),
            "peak_memory_gib": None if memory is None else memory / 2**30,
            "compile_s": _float(perf.get("compile_seconds")) if compiled else None}


def _first_line(text) -> str | None:
    lines = str(text).strip().splitlines() if text is not None else []
    return lines[0][:300] if lines else None


def _mtime(path) -> float:
    """pathlib's st_mtime, or epath's mtime for a gs:// object."""
    st = path.stat()
    return float(getattr(st, "st_mtime", None) or getattr(st, "mtime", 0) or 0)


def _run_record(grid: str, run_dir: Path, cell: dict) -> dict:
    summary = read_json(run_dir / "summary.json")
    if not isinstance(summary, dict):
        summary = {}
    status = summary.get("status")
    top1 = _float(summary.get("top1"))
    if status == "done" and top1 is None:
        status = FAILED  # a "done" run with no accuracy cannot be reported as one
        summary.setdefault("error", "summary.json says done but has no top1")
    elif status not in (DONE, FAILED):
        status = RUNNING  # no summary yet (running, interrupted, or half-written): the sweep will finish it
    evals = read_json(run_dir / "eval.json")
    try:
        mtime = _mtime(run_dir / ("summary.json" if summary else "cell.json"))
    except OSError:
        mtime = 0.0
    seed = cell.get("seed")
    return {
        "grid": grid,
        "run_id": str(cell.get("run_id") or run_dir.name),
        "table": cell.get("table") or tables.table_for_grid(grid),
        "cell": cell.get("cell"),
        "row": None if cell.get("row") is None else str(cell["row"]),
        "column": None if cell.get("column") is None else str(cell["column"]),
        "seed": int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None,
        "status": status,
        "top1": top1 if status == DONE else None,
        "top5": _float(summary.get("top5")) if status == DONE else None,
        "params": _float(summary.get("params")),
        "gflops": _float(summary.get("gflops")),
        "forward_ms_per_clip": _float(summary.get("forward_ms_per_clip")),
        "device": summary.get("device"),
        "numerics": summary.get("numerics") if isinstance(summary.get("numerics"), int) else None,
        "steps": _float(summary.get("steps")),
        "train_seconds": _float(summary.get("train_seconds")),
        "error": _first_line(summary.get("error")),
        "eval": evals if isinstance(evals, dict) else {},
        "mtime": mtime,
        "path": str(run_dir),
        # The final eval's per-clip predictions (relative to the run folder) and its clip count: the report's
        # intervals resample those clips. Runs trained before predictions were written have neither or only the count.
        "predictions": summary.get("predictions") if isinstance(summary.get("predictions"), str) else None,
        "eval_videos": int(summary["eval_videos"]) if _float(summary.get("eval_videos")) else None,
        # A multi-head run's (Epic-Kitchens: "verb:97,noun:300"): top1/top5 are then the action's, and each head's
        # and the action's figures are in `head_metrics` by name (`--accuracy verb_top1`).
        "heads": summary.get("heads") if isinstance(summary.get("heads"), str) and summary.get("heads") else None,
        "head_metrics": {k: _float(v) for k, v in summary.items() if head_metric(k) and _float(v) is not None}
        if status == DONE else {},
        **_perf_columns(summary),
    }


def head_metric(name) -> tuple[str, str] | None:
    """"verb_top1" -> ("verb", "top1"): a figure of one head of a multi-head run (or "action_*": all heads)."""
    head, sep, metric = str(name).rpartition("_")
    return (head, metric) if sep and head and metric in ("top1", "top5") else None


def read_predictions(run_path: str, rel) -> dict | None:
    """`predictions/<split>@<T>x<S>.npz` of a run: index, label, top5 (int arrays, index sorted and unique), and
    each clip's hits as the run's figures count them: `hit1`, `hit5` (bool [N]) and `classes` (int [N], what mean
    class accuracy averages over). A multi-head run's (label [N, H], top5 [N, H, k], action_top5 [N, k']) are the
    action's: every head's best class right, the joint label among the best joint classes.

    None when the run has none, or it is missing, half-written or malformed: the report then falls back to the
    run's figure alone, as for a run trained before predictions were written."""
    import io

    import numpy as np

    if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in rel.split("/"):
        return None
    try:
        with np.load(io.BytesIO((as_path(run_path) / rel).read_bytes()), allow_pickle=False) as npz:
            index, label, top5 = (np.asarray(npz[k]) for k in ("index", "label", "top5"))
            action, sizes = (np.asarray(npz[k]) for k in ("action_top5", "head_sizes")) if label.ndim == 2 \
                else (None, None)
    except Exception:  # noqa: BLE001 - missing, torn (BadZipFile, EOFError), or a key absent: all "not written"
        return None
    n = len(index)
    arrays = (index, label, top5) + (() if action is None else (action,))
    ok = (index.ndim == 1 and n > 0 and all(len(a) == n and np.issubdtype(a.dtype, np.integer) for a in arrays)
          and bool(np.all(np.diff(index) > 0)) and top5.shape[-1] >= 1
          and (label.ndim, top5.ndim) in ((1, 2), (2, 3)) and top5.shape[1:-1] == label.shape[1:]
          and (action is None or (action.ndim == 2 and action.shape[1] >= 1 and sizes.shape == label.shape[1:])))
    if not ok:
        return None
    if action is None:
        hit1, hit5, classes = top5[:, 0] == label, (top5 == label[:, None]).any(axis=1), label
    else:  # the joint label in action_top5's numbering: mixed-radix over the heads, head 0 most significant
        classes = label[:, 0].astype(np.int64)
        for h in range(1, label.shape[1]):
            classes = classes * int(sizes[h]) + label[:, h]
        hit1, hit5 = (top5[:, :, 0] == label).all(axis=1), (action == classes[:, None]).any(axis=1)
    return {"index": index, "label": label, "top5": top5, "hit1": hit1, "hit5": hit5, "classes": classes}


def _run_dirs(root: Path):
    """(grid, run folder) pairs; hidden and temp folders (names starting with . or _) are skipped."""
    for grid_dir in sorted(root.iterdir()):
        if not grid_dir.is_dir() or grid_dir.name[0] in "._":
            continue
        for run_dir in sorted(grid_dir.iterdir()):
            if run_dir.is_dir() and run_dir.name[0] not in "._":
                yield grid_dir.name, run_dir


def load_records(results_dir: str | os.PathLike) -> tuple[list[dict], LoadStats]:
    """All runs under `results_dir` as records (RUN_COLUMNS, None where absent) and the LoadStats of what was
    skipped. What the report computes from: plain Python, since `import pandas` alone is 0.6-0.8 s here, most
    of what a report answering in well under a second may spend."""
    root = as_path(results_dir)
    if not root.is_dir():
        raise VivitError(f"results dir {str(root)!r} does not exist (run `vivit sweep GRID` first, or pass --results)")
    stats = LoadStats()
    records = []
    for grid, run_dir in _run_dirs(root):
        cell = read_json(run_dir / "cell.json")
        if not isinstance(cell, dict) or cell.get("row") is None:
            stats.no_cell.append(f"{grid}/{run_dir.name}")
            continue
        records.append(_run_record(grid, run_dir, cell))
    records, stats.superseded = _drop_superseded(records)
    return records, stats


def load_runs(results_dir: str | os.PathLike):
    """All runs under `results_dir` as a pandas DataFrame (RUN_COLUMNS), and the LoadStats of what was skipped."""
    import pandas as pd

    records, stats = load_records(results_dir)
    return pd.DataFrame.from_records(records, columns=list(RUN_COLUMNS)), stats


def _drop_superseded(records: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """Keeps the newest run per (table, row, column, seed); returns the runs in (grid, run id) order and the drop
    count per table.

    Two run folders land on the same seed of the same cell only when a grid is rerun with other overrides (so
    other run ids): averaging both would mix two different experiments, and the newer one is what the user asked for.
    """
    newest: dict[tuple, dict] = {}
    for rec in sorted(records, key=lambda r: (-r["mtime"], r["run_id"])):
        if rec["seed"] is not None:
            newest.setdefault((rec["table"], rec["row"], rec["column"], rec["seed"]), rec)
    kept = {id(r) for r in newest.values()}
    dropped: dict[str, int] = {}
    for rec in records:
        if rec["seed"] is not None and id(rec) not in kept:
            dropped[str(rec["table"])] = dropped.get(str(rec["table"]), 0) + 1
    out = [r for r in records if r["seed"] is None or id(r) in kept]
    return sorted(out, key=lambda r: (r["grid"], r["run_id"])), dropped
