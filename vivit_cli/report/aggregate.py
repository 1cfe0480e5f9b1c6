"""Pure functions: runs (one per seed) -> cells (mean over seeds with an interval or spread) -> the table the paper
prints.

`stat` picks what a cell carries beside its mean: `ci` (the default) a 95% interval by hierarchical bootstrap over
seeds and clips, the column's best row and the rows not distinguishable from it, and the paired difference to the
table's reference row (`bootstrap.py`); `std` the sample std over seeds and `ci95` Student's t half width over
seeds, both as before intervals existed (those frames are what they always were).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vivit_cli.errors import VivitError
from vivit_cli.report import bootstrap, tables
from vivit_cli.report.store import DONE, FAILED, RUNNING, LoadStats, head_metric, read_predictions

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (scipy would cost a second to import).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

MISSING, PARTIAL = "missing", "partial"
NOT_RUN = "not run"  # a row that only the paper has (e.g. L_t=12): shown for reference, not counted as missing
# Cell states: done (every seed done), partial (some done, others failed or running), running, failed, missing.
CELL_STATES = (DONE, PARTIAL, RUNNING, FAILED, MISSING)
STATS = ("ci", "std", "ci95")
# The frame's per-column keys: always, and with stat="ci" (interval, mark, differences, how the interval was drawn).
FRAME_KEYS = ("mean", "std", "ci95", "n", "failed", "running", "status")
CELL_KEYS = ("row", "column", "status", "mean", "std", "ci95", "n", "failed", "running", "seeds", "errors")
CI_KEYS = ("lo", "hi", "mark", "vs_best", "vs_best_lo", "vs_best_hi", "vs_ref", "vs_ref_lo", "vs_ref_hi", "method")


def t975(dof: int) -> float:
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


def seed_stats(values) -> dict:
    """Mean, sample std (ddof=1), n and the 95% t-interval half width of accuracies, all in percent."""
    xs = [100.0 * float(v) for v in values]
    n = len(xs)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "ci95": math.nan}
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "std": math.nan, "n": 1, "ci95": math.nan}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return {"mean": mean, "std": std, "n": n, "ci95": t975(n - 1) * std / math.sqrt(n)}


def cell_state(n_done: int, n_failed: int, n_running: int) -> str:
    if n_done and not (n_failed or n_running):
        return DONE
    if n_done:
        return PARTIAL
    if n_running:
        return RUNNING
    return FAILED if n_failed else MISSING


@dataclass
class Report:
    """A table ready to render: `cell_records` (one per row x column) and `frame_records` (one per row), plain
    records that the renderers read; `cells`, `frame` and `runs` give them as pandas DataFrames, imported only
    then (the terminal, markdown, JSON and LaTeX outputs never import pandas: it is most of a second)."""

    spec: tables.TableSpec
    rows: list[str]  # rows with cells (expected or found in the store)
    display_rows: list[str]  # rows plus those only the paper has, in table order
    columns: list[str]
    cell_records: list[dict]
    frame_records: list[dict]
    run_records: list[dict]  # the runs of this table (store.RUN_COLUMNS and `acc`)
    devices: list[str]
    notes: list[str] = field(default_factory=list)
    accuracy: str = "top1"
    stat: str = "ci"
    seeds_planned: int = 0  # distinct seeds among the table's runs: a cell with fewer done says n=k/planned
    columns_stats: dict = field(default_factory=dict)  # column -> bootstrap.Column (stat="ci")
    resamples: int = bootstrap.RESAMPLES
    split: str | None = None  # the evaluation split(s) of the done runs, e.g. "val"

    @property
    def cells_done(self) -> int:
        return sum(c["status"] == DONE for c in self.cell_records)

    @property
    def cells_total(self) -> int:
        return len(self.cell_records)

    @property
    def cells(self):
        import pandas as pd

        keys = list(CELL_KEYS) + (list(CI_KEYS) if self.stat == "ci" else [])
        return pd.DataFrame.from_records(self.cell_records, columns=keys)

    @property
    def frame(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.frame_records) if self.frame_records else pd.DataFrame(columns=["row"])

    @property
    def runs(self):
        import pandas as pd

        from vivit_cli.report.store import RUN_COLUMNS

        return pd.DataFrame.from_records(self.run_records, columns=[*RUN_COLUMNS, "acc"])


def _ordered(expected, found, numeric: bool) -> list[str]:
    extra = [x for x in dict.fromkeys(found) if x not in expected]
    if not extra:
        return list(expected)
    if not numeric:
        return list(expected) + sorted(extra)
    # Numeric rows (L_t, tubelet length) take new rows in numeric order, in the direction the expected rows run.
    numbers = [tables.row_number(x) for x in expected]
    descending = len(numbers) > 1 and None not in numbers and numbers[0] > numbers[-1]

    def key(label):
        number = tables.row_number(label)
        return (number is None, (-number if descending else number) if number is not None else 0.0, label)

    return sorted(list(expected) + extra, key=key)


def _number(x) -> float:
    return math.nan if _isnan(x) else float(x)


def select_accuracy(runs: list[dict], accuracy: str = "top1") -> list[dict]:
    """Copies of the runs with an `acc`: summary.json's top1/top5, or `<split>@<T>x<S>` / `<split>@<T>x<S>:top5`
    from eval.json (nan where there is none).

    A done run without that eval entry counts as running: its evaluation has not been written yet.
    """
    if accuracy in ("top1", "top5"):
        return [{**r, "acc": _number(r[accuracy])} for r in runs]
    named = head_metric(accuracy)
    if named and "@" not in accuracy:  # one head's figure of multi-head runs; a single head is its own action
        def pick_head(run):
            if run["status"] != DONE:
                return math.nan
            if named[0] == "action" and not run["heads"]:
                return _number(run[named[1]])
            return _number((run["head_metrics"] or {}).get(accuracy))

        out = [{**r, "acc": pick_head(r)} for r in runs]
        return [r for r in out if r["status"] != DONE or not _isnan(r["acc"])]  # runs without that head: not shown
    key, _, metric = accuracy.partition(":")
    metric = metric or "top1"
    if "@" not in key or metric not in ("top1", "top5", "mean_class_accuracy"):
        raise VivitError(f"--accuracy {accuracy!r}: use top1, top5, a multi-head run's verb_top1 (any head's, or "
                         "action_top5), or an eval.json key like val@4x3[:top5]")

    def pick(ev):
        entry = ev.get(key) if isinstance(ev, dict) else None
        value = entry.get(metric) if isinstance(entry, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan

    out = []
    for r in runs:
        acc = pick(r["eval"]) if r["status"] == DONE else math.nan
        pending = r["status"] == DONE and _isnan(acc)
        out.append({**r, "acc": acc, "status": RUNNING if pending else r["status"]})
    return out


def runtime_ms(run) -> float:
    """Inference ms per clip: the benchmarked forward time if the run recorded one, else 1000 / eval clips per s."""
    if run["forward_ms_per_clip"] is not None and not _isnan(run["forward_ms_per_clip"]):
        return float(run["forward_ms_per_clip"])
    evals = run["eval"] if isinstance(run["eval"], dict) else {}
    for key in sorted(evals):
        entry = evals[key]
        if isinstance(entry, dict):
            if isinstance(entry.get("forward_ms_per_clip"), (int, float)):
                return float(entry["forward_ms_per_clip"])
            if isinstance(entry.get("clips_per_s"), (int, float)) and entry["clips_per_s"] > 0:
                return 1000.0 / float(entry["clips_per_s"])
    return math.nan


def _absent(x) -> bool:
    """None, or the NaN pandas puts for it (a DataFrame's records)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def _isnan(x) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def _mean(values) -> float:
    xs = [float(v) for v in values if not _isnan(v)]
    return sum(xs) / len(xs) if xs else math.nan


def _metric_values(metric: str, runs: list[dict]) -> float:
    if metric == "gflops":
        return _mean(r["gflops"] for r in runs)
    if metric == "params":
        return _mean(r["params"] for r in runs) / 1e6
    if metric == "runtime":
        return _mean(runtime_ms(r) for r in runs)
    if metric in tables.PERF_METRICS:
        return _mean(r[metric] for r in runs)
    raise ValueError(metric)


def perf_note(devices: list[str], without: int = 0) -> str:
    """What the perf columns measure: they are only comparable between runs on the same device."""
    note = ("Perf: each run's summary.json perf block, mean over the runs (seeds) behind a figure. Train clips/s: "
            "median of the run's timed steps (the compiling first step, eval and checkpoints excluded; the input "
            "pipeline included). MFU: 3 x forward FLOPs x clips/s over the matmul peak measured on the run's device "
            "in its precision. Peak memory: the device allocator's peak where it has one, else XLA's buffer "
            "assignment of the train step. Compile: the train step's XLA compile (loads from the persistent cache "
            "left out).")
    if len(devices) > 1:
        note += f" These runs ran on different devices ({', '.join(devices)}): compare like with like."
    elif devices:
        note += f" Device: {devices[0]}."
    if without:
        note += f" {without} done run(s) have no perf block (trained before runs recorded one)."
    return note


def numerics_note(versions) -> str | None:
    """Runs whose code (model or input pipeline) computed differently (`models.NUMERICS_VERSION`) should not share a table."""
    from vivit_cli.models import numerics_label

    names = sorted({numerics_label(v) for v in versions})
    if len(names) < 2:
        return None
    return (f"These runs come from different numerics versions ({', '.join(names)}): a later version "
            "(model or input code) computes some numbers differently, so the figures are not like with like. Rerun into a fresh --results "
            "folder to compare.")


def evaluation(run, accuracy: str = "top1") -> tuple[bootstrap.Evaluation, str]:
    """A done run's figure with its per-clip hits when it has predictions, and how: `paired`, `mismatch`
    (predictions that do not give the run's figure: not used) or `none`."""
    value = float(run["acc"])
    named = head_metric(accuracy) if "@" not in accuracy else None
    if accuracy in ("top1", "top5") or named:
        rel, clips, metric = run["predictions"], run["eval_videos"], named[1] if named else accuracy
    else:
        key, _, metric = accuracy.partition(":")
        entry = run["eval"].get(key) if isinstance(run["eval"], dict) else None
        entry = entry if isinstance(entry, dict) else {}
        rel, clips, metric = entry.get("predictions"), entry.get("videos"), metric or "top1"
    clips = int(clips) if isinstance(clips, (int, float)) and not isinstance(clips, bool) and clips > 0 else None
    pred = read_predictions(run["path"], rel) if rel else None
    if pred is None:
        return bootstrap.Evaluation(value, clips=clips), "none"
    # A multi-head run's hits are the action's (read_predictions), as its top1/top5 are; one head's, its own.
    correct = pred["hit5"] if metric == "top5" else pred["hit1"]
    names = [h.partition(":")[0] for h in run["heads"].split(",")] if run.get("heads") else []
    if named and named[0] != "action":
        h = names.index(named[0]) if named[0] in names else None
        if h is None or pred["label"].ndim != 2:
            return bootstrap.Evaluation(value, clips=clips), "none"
        label, top5 = pred["label"][:, h], pred["top5"][:, h]
        correct = (top5 == label[:, None]).any(axis=1) if metric == "top5" else top5[:, 0] == label
    groups = pred["classes"] if metric == "mean_class_accuracy" else None
    # Figures are rounded to 6 decimals in eval.json; one clip more or less would be 1/N.
    if abs(bootstrap.accuracy_of(correct, groups) - value) > min(1e-4, 0.5 / len(correct)):
        return bootstrap.Evaluation(value, clips=clips or len(correct)), "mismatch"
    return bootstrap.Evaluation(value, index=pred["index"], correct=correct, groups=groups), "paired"


def _split_of(run, accuracy: str) -> str | None:
    """The evaluation split a cell's figure comes from: the eval.json key's, or the predictions file's name."""
    if accuracy not in ("top1", "top5") and "@" in accuracy:
        return accuracy.partition(":")[0].split("@")[0]
    rel = run["predictions"]
    return rel.rsplit("/", 1)[-1].split("@")[0] if isinstance(rel, str) and "@" in rel else None


def _with_intervals(spec, runs, rows, columns, records, accuracy, resamples) -> tuple[dict, list[str], list[str]]:
    """Adds the CI_KEYS to each cell record; returns the columns' bootstrap.Column, notes, and the splits seen."""
    done = sorted((r for r in runs if r["status"] == DONE), key=lambda r: (r["seed"] is None, r["seed"] or 0))
    by_cell, how, splits = {}, {"paired": 0, "none": 0, "mismatch": 0}, set()
    for run in done:
        ev, kind = evaluation(run, accuracy)
        how[kind] += 1
        splits.add(_split_of(run, accuracy))
        by_cell.setdefault((run["row"], run["column"]), []).append(ev)
    out = {}
    for column in columns:
        per_row = {row: by_cell.get((row, column), []) for row in rows}
        out[column] = bootstrap.column(per_row, key=f"{spec.name}/{column}/{accuracy}", reference=spec.reference,
                                       resamples=resamples)
    for rec in records:
        col = out[rec["column"]]
        cell, row = col.cells.get(rec["row"]), rec["row"]
        best, ref = col.vs_best.get(row), col.vs_reference.get(row)
        rec.update({
            "lo": cell.lo if cell else math.nan, "hi": cell.hi if cell else math.nan,
            "mark": col.marks.get(row, math.nan), "method": col.methods.get(row, math.nan),
            "vs_best": best.mean if best else math.nan, "vs_best_lo": best.lo if best else math.nan,
            "vs_best_hi": best.hi if best else math.nan,
            "vs_ref": ref.mean if ref else math.nan, "vs_ref_lo": ref.lo if ref else math.nan,
            "vs_ref_hi": ref.hi if ref else math.nan,
        })
    notes = []
    if how["none"]:
        notes.append(f"{how['none']} run(s) have no per-clip predictions (trained before runs wrote them): their "
                     "clip sampling is drawn as a binomial of their clip count (or left out where the run does not "
                     "record it), and their comparisons are unpaired, so wider.")
    if how["mismatch"]:
        notes.append(f"{how['mismatch']} run(s) have per-clip predictions that do not give their reported figure: "
                     "not used (treated as runs without predictions).")
    return out, notes, sorted(s for s in splits if s)


def build(spec: tables.TableSpec, all_runs, stats: LoadStats | None = None, accuracy: str = "top1",
          stat: str = "ci", resamples: int = bootstrap.RESAMPLES) -> Report:
    """The report of one table from every run in the store (`store.load_records`, or `load_runs`' DataFrame)."""
    if stat not in STATS:
        raise VivitError(f"--stat {stat!r}: allowed values are {', '.join(STATS)}")
    if hasattr(all_runs, "to_dict"):
        all_runs = all_runs.to_dict("records")
    runs = select_accuracy([r for r in all_runs if r["table"] == spec.name], accuracy)
    unlabelled = sum(_absent(r["column"]) for r in runs)
    if unlabelled and len(spec.columns) == 1:
        runs = [{**r, "column": spec.columns[0]} if _absent(r["column"]) else r for r in runs]  # needs no label
        unlabelled = 0
    rows = _ordered(spec.rows, [r["row"] for r in runs], spec.numeric_rows)
    columns = _ordered(spec.columns, [r["column"] for r in runs if not _absent(r["column"])], False)

    by_cell = {}
    for run in runs:
        by_cell.setdefault((run["row"], run["column"]), []).append(run)
    cell_records = []
    for row in rows:
        for column in columns:
            sel = by_cell.get((row, column), [])
            done = [r for r in sel if r["status"] == DONE]
            n_failed = sum(r["status"] == FAILED for r in sel)
            n_running = sum(r["status"] == RUNNING for r in sel)
            st = seed_stats([r["acc"] for r in done])
            errors = sorted({r["error"] for r in sel if r["status"] == FAILED and r["error"]})
            cell_records.append({
                "row": row, "column": column, "status": cell_state(st["n"], n_failed, n_running),
                "mean": st["mean"], "std": st["std"], "ci95": st["ci95"], "n": st["n"],
                "failed": n_failed, "running": n_running,
                "seeds": sorted(int(r["seed"]) for r in done if not _isnan(r["seed"])), "errors": errors,
            })
    seeds_planned = len({int(r["seed"]) for r in runs if not _isnan(r["seed"])})
    interval_notes, columns_stats, splits = [], {}, []
    if stat == "ci":
        columns_stats, interval_notes, splits = _with_intervals(spec, runs, rows, columns, cell_records, accuracy,
                                                                resamples)
    paper_only = [r for p in spec.paper for r in p.values if r not in rows]
    display_rows = _ordered(rows, paper_only, spec.numeric_rows) if paper_only else rows
    frame = _frame(spec, display_rows, columns, cell_records, runs, FRAME_KEYS + (CI_KEYS if stat == "ci" else ()))
    done_runs = [r for r in runs if r["status"] == DONE]
    devices = sorted({str(r["device"]) for r in done_runs if not _absent(r["device"])})
    notes = stats.notes(grids=spec.grids, table=spec.name) if stats else []
    # Labels the table does not expect are still shown (never dropped), but most likely a grid's typo: say so.
    odd_rows = [] if spec.numeric_rows else [r for r in rows if r not in spec.rows]
    odd_columns = [c for c in columns if c not in spec.columns]
    if unlabelled:
        notes.append(f"{unlabelled} run(s) without a `column` in cell.json are not shown")
    if odd_rows or odd_columns:
        names = ", ".join(repr(x) for x in odd_rows + odd_columns)
        notes.append(f"labels not among this table's rows/columns (check the grid's cell.json labels): {names}")
    notes += interval_notes
    mixed = numerics_note([r["numerics"] for r in done_runs])
    if mixed:
        notes.append(mixed)
    if any(m in tables.PERF_METRICS for m in spec.metrics):
        without = sum(all(_isnan(r[m]) for m in tables.PERF_METRICS) for r in done_runs)
        notes.append(perf_note(devices, without))
    heads = sorted({str(r["heads"]) for r in done_runs if not _absent(r["heads"])})
    if heads:
        notes.append(f"Runs with several heads ({'; '.join(heads)}): top-1 is the action's (every head right), the "
                     "measure of the paper's EK column; --accuracy verb_top1 (any head's name) gives one head's.")
    if spec.paper_note:
        notes.append(spec.paper_note)
    return Report(spec=spec, rows=rows, display_rows=display_rows, columns=columns, cell_records=cell_records,
                  frame_records=frame, run_records=runs, devices=devices, notes=notes, accuracy=accuracy, stat=stat, seeds_planned=seeds_planned,
                  columns_stats=columns_stats, resamples=resamples, split=", ".join(splits) or None)


def _frame(spec, rows, columns, cells, runs, keys=FRAME_KEYS) -> list[dict]:
    """One record per table row: per column mean/std/ci95/n/status, the metrics, then the paper's numbers."""
    done = [r for r in runs if r["status"] == DONE]
    by_cell = {(c["row"], c["column"]): c for c in cells}
    not_run = {"n": 0, "failed": 0, "running": 0, "status": NOT_RUN}
    records = []
    for row in rows:
        rec = {"row": row}
        for column in columns:
            c = by_cell.get((row, column), not_run)
            for k in keys:
                rec[f"{column}_{k}"] = c.get(k, math.nan)
        for metric in spec.metrics:
            if spec.metrics_per_column:
                for column in columns:
                    sel = [r for r in done if r["row"] == row and r["column"] == column]
                    rec[f"{column}_{metric}"] = _metric_values(metric, sel)
            else:
                sel = [r for r in done if r["row"] == row]
                if spec.metric_source is not None and any(r["column"] == spec.metric_source for r in sel):
                    sel = [r for r in sel if r["column"] == spec.metric_source]
                rec[metric] = _metric_values(metric, sel)
        for paper in spec.paper:
            rec[paper.label] = paper.values.get(row, math.nan)
        records.append(rec)
    return records


def completeness(spec: tables.TableSpec, all_runs) -> dict:
    """Cells done / total and runs by state, for `vivit report` with no table."""
    rep = build(spec, all_runs, stat="std")  # counts only: no intervals to draw
    cells = [c["status"] for c in rep.cell_records]
    runs = [r["status"] for r in rep.run_records]
    return {
        "table": spec.name, "title": spec.title, "paper_ref": spec.paper_ref, "cells_done": rep.cells_done,
        "cells_total": rep.cells_total, "cells_partial": cells.count(PARTIAL), "cells_failed": cells.count(FAILED),
        "runs_done": runs.count(DONE), "runs_failed": runs.count(FAILED), "runs_running": runs.count(RUNNING),
    }
