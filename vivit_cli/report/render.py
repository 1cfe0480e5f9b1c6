"""Renders a Report: rich (terminal), markdown, CSV, LaTeX (booktabs) and JSON.

Every form shows the same cells: the mean over seeds with its interval (or spread) and seed count, the column's best
row and the rows not distinguishable from it, the paired difference to the table's reference row, the state of
cells without a result (missing, running, failed), and the paper's numbers in their own, labelled columns.
`spread` (the CLI's --stat) is `ci`, `std` or `ci95`; left out, it is the stat the report was built with.
"""

from __future__ import annotations

import io
import json
import math

from vivit_cli.errors import VivitError
from vivit_cli.report import bootstrap, tables
from vivit_cli.report.aggregate import DONE, FAILED, MISSING, NOT_RUN, PARTIAL, RUNNING, STATS, Report

FORMATS = ("table", "markdown", "csv", "latex", "json")
SPREADS = STATS
DASH = "—"
# A cell's mark in its column: the best mean, and the rows whose paired difference to it is not resolved.
MARKS = {bootstrap.BEST: "*", bootstrap.TIED: "†"}


def _nan(x) -> bool:
    try:
        return x is None or math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def _decimals(x: float) -> int:
    """Decimals for about three significant digits: metrics span 0.002 GFLOPs (CPU models) to 455 (ViViT-B)."""
    x = abs(x)
    if x >= 100:
        return 1
    if x >= 1 or x == 0:
        return 2
    return min(6, 2 - math.floor(math.log10(x)))


def numbers(values) -> list[str]:
    """One column of metric values with the same number of decimals, so they line up and compare at a glance."""
    finite = [float(v) for v in values if not _nan(v)]
    d = max((_decimals(v) for v in finite), default=2)
    return [DASH if _nan(v) else f"{float(v):.{d}f}" for v in values]


def _spread(report: Report, spread: str | None) -> str:
    spread = spread or report.stat
    if spread == "ci" and report.stat != "ci":
        raise VivitError("the intervals need a report built with stat='ci'")
    return spread


def accuracy_text(rec: dict, column: str, spread: str = "std", pm: str = "±", planned: int = 0) -> str:
    """`52.3 ± 1.2 (n=3)` (std, ci95) or `52.3 [48.1, 56.4]* (n=2/3)` (ci: the interval, the mark, and n only where
    fewer seeds than the table's are done), with failed/running seeds named; or the state of a cell without result."""
    status = rec[f"{column}_status"]
    n = int(rec[f"{column}_n"])
    if status == NOT_RUN:
        return DASH
    if status == MISSING:
        return "missing"
    counts = int(rec[f"{column}_failed"]), int(rec[f"{column}_running"])
    if status in (RUNNING, FAILED):
        k = counts[1] if status == RUNNING else counts[0]
        return f"{status} ({k})" if k else status
    mean = rec[f"{column}_mean"]
    if spread == "ci":
        lo, hi = rec[f"{column}_lo"], rec[f"{column}_hi"]
        text = f"{mean:.1f}" + ("" if _nan(lo) else f" [{lo:.1f}, {hi:.1f}]")
        text += MARKS.get(rec[f"{column}_mark"], "") if isinstance(rec[f"{column}_mark"], str) else ""
        extra = [f"n={n}/{planned}"] if n < planned else []
    else:
        sd = rec[f"{column}_{spread}"]
        text = f"{mean:.1f}" if _nan(sd) else f"{mean:.1f} {pm} {sd:.1f}"
        extra = [f"n={n}"]
    if status == PARTIAL:
        extra += [f"{k} {what}" for k, what in zip(counts, ("failed", "running")) if k]
    return f"{text} ({', '.join(extra)})" if extra else text


def difference_text(rec: dict, column: str, reference: str) -> str:
    """`-3.2 [-6.0, -0.4]`: the row minus the reference row, in points, with the paired interval."""
    if rec["row"] == reference and rec.get(f"{column}_status") in (DONE, PARTIAL):
        return "ref"
    d, lo, hi = (rec.get(f"{column}_{k}") for k in ("vs_ref", "vs_ref_lo", "vs_ref_hi"))
    if _nan(d):
        return DASH
    return f"{d:+.1f}" if _nan(lo) else f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _reference(report: Report, spread: str) -> str | None:
    """The reference row when differences to it are shown: intervals on, and the row has a result somewhere."""
    ref = report.spec.reference
    if spread != "ci" or ref is None:
        return None
    return ref if any(c["row"] == ref and c["status"] in (DONE, PARTIAL) for c in report.cell_records) else None


def _records(report: Report) -> list[dict]:
    return report.frame_records


def header_and_rows(report: Report, spread: str | None = None,
                    pm: str = "±") -> tuple[list[str], list[list[str]], list[str]]:
    """Display headers, cell strings, and the kind of each column (row / ours / paper) for styling."""
    spread = _spread(report, spread)
    spec = report.spec
    reference = _reference(report, spread)
    headers, kinds = [spec.row_header], ["row"]
    for column in report.columns:
        headers.append(spec.column_label(column))
        kinds.append("ours")
    if reference:
        for column in report.columns:
            headers.append(f"Δ {column} vs {spec.reference_short or reference}")
            kinds.append("ours")
    metric_columns = []
    for metric in spec.metrics:
        label = tables.METRICS[metric]
        if metric == "runtime" and len(report.devices) == 1:
            label = f"Runtime (ms/clip, {report.devices[0]})"
        if spec.metrics_per_column:
            for column in report.columns:
                metric_columns.append((f"{column}_{metric}", f"{column} {label}"))
        else:
            metric_columns.append((metric, label))
    for key, label in metric_columns:
        headers.append(label)
        kinds.append("ours")
    for paper in spec.paper:
        headers.append(paper.label)
        kinds.append("paper")
    recs = _records(report)
    metric_text = {key: numbers([rec.get(key) for rec in recs]) for key, _ in metric_columns}
    body = []
    for i, rec in enumerate(recs):
        line = [rec["row"]]
        line += [accuracy_text(rec, c, spread, pm, report.seeds_planned) for c in report.columns]
        if reference:
            line += [difference_text(rec, c, reference) for c in report.columns]
        line += [metric_text[key][i] for key, _ in metric_columns]
        # The paper prints one decimal everywhere.
        line += [DASH if _nan(rec.get(p.label)) else f"{float(rec[p.label]):.1f}" for p in spec.paper]
        body.append(line)
    return headers, body, kinds


def _clip_text(report: Report) -> str:
    clips = sorted({n for col in report.columns_stats.values() for n in col.clips})
    count = "" if not clips else f"{clips[0]} " if len(clips) == 1 else f"{clips[0]}-{clips[-1]} "
    return f"the {count}{report.split + ' ' if report.split else ''}{'clips' if count else 'evaluation clips'}"


def method_note(report: Report) -> str:
    """The one line that says what a cell's interval and mark mean."""
    acc = "top-1" if report.accuracy == "top1" else report.accuracy
    planned = report.seeds_planned
    fewer = any(int(n) < planned for n, st in ((c["n"], c["status"]) for c in report.cell_records) if st in (DONE, PARTIAL))
    if planned <= 1:
        what = (f"one seed; [lo, hi] = 95% interval over the sampling of {_clip_text(report)} only (one seed: "
                "seed-to-seed variation is not in it)")
    else:
        what = (f"mean over {planned} seeds{' (n=k/' + str(planned) + ' where fewer are done)' if fewer else ''}; "
                f"[lo, hi] = 95% interval by hierarchical bootstrap over seeds and {_clip_text(report)}")
    return (f"Ours: {acc} accuracy in %, {what} ({report.resamples} resamples); * = the column's best, † = not "
            "distinguishable from it (paired over the same clips: the 95% interval of the difference contains 0).")


def footnotes(report: Report, spread: str | None = None) -> list[str]:
    spread = _spread(report, spread)
    source = f"runs read from summary.json{'' if '@' not in report.accuracy else ' and eval.json'}"
    if spread == "ci":
        notes = [method_note(report)]
        reference = _reference(report, spread)
        if reference:
            notes.append(f"Δ vs {report.spec.reference_short or reference}: the row's mean minus that of "
                         f"{reference!r} in the same column, in points, with its paired 95% interval.")
        lone = {m for col in report.columns_stats.values() for m in col.methods.values()}
        if lone & {bootstrap.SEEDS, bootstrap.NONE}:
            notes.append("Cells whose runs record neither predictions nor a clip count: the interval covers seeds "
                         "only, and with one seed the cell is the bare mean.")
        if lone & {bootstrap.CLIPS, bootstrap.CLIPS_AND_SEEDS}:
            source += " and their per-clip predictions (predictions/*.npz)"
        notes[0] = notes[0][:-1] + f"; {source}."
    else:
        what = "sample std" if spread == "std" else "95% t-interval half width"
        acc = "top-1" if report.accuracy == "top1" else report.accuracy
        notes = [f"Ours: {acc} accuracy in %, mean over seeds ± {what} (n = seeds done); {source}."]
    for paper in report.spec.paper:
        notes.append(f"{paper.label}: {paper.benchmark}.")
    notes += report.notes
    errors = sorted({e for c in report.cell_records for e in c["errors"]})
    for err in errors[:5]:
        notes.append(f"failed run: {err}")
    return notes


# ---- formats -------------------------------------------------------------------------------------------------


def to_markdown(report: Report, spread: str | None = None) -> str:
    headers, body, kinds = header_and_rows(report, spread)
    out = [f"### {report.spec.full_title}", ""]
    out.append("| " + " | ".join(_md(h) for h in headers) + " |")
    out.append("|" + "|".join("---" if k == "row" else "---:" for k in kinds) + "|")
    for line in body:
        out.append("| " + " | ".join(_md(x) for x in line) + " |")
    out.append("")
    out += [f"- {_md(n)}" for n in footnotes(report, spread)]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    report.frame.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DASH: "--",
                  "±": r"$\pm$", "→": r"$\to$", "†": r"\dag{}", "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(report: Report, spread: str | None = None) -> str:
    """A booktabs tabular, ready to `\\input` inside a table environment (needs \\usepackage{booktabs})."""
    headers, body, kinds = header_and_rows(report, spread)
    spec = "l" + "".join("l" if k == "row" else "r" for k in kinds[1:])
    n_ours = sum(k == "ours" for k in kinds)
    n_paper = sum(k == "paper" for k in kinds)
    lines = [f"% {latex_escape(report.spec.full_title)} -- generated by `vivit report --table {report.spec.name}`",
             f"\\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if n_paper:
        # A group header makes it impossible to confuse our numbers with the paper's.
        lines.append(f" & \\multicolumn{{{n_ours}}}{{c}}{{Ours}} & \\multicolumn{{{n_paper}}}{{c}}{{Paper}} \\\\")
        lines.append(f"\\cmidrule(lr){{2-{1 + n_ours}}} \\cmidrule(lr){{{2 + n_ours}-{1 + n_ours + n_paper}}}")
    lines.append(" & ".join(latex_escape(h) for h in headers) + r" \\")
    lines.append(r"\midrule")
    for line in body:
        lines.append(" & ".join(latex_escape(x) for x in line) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    lines += [f"% {latex_escape(n)}" for n in footnotes(report, spread)]
    return "\n".join(lines) + "\n"


def _clean(x):
    """JSON has no NaN: missing numbers become null."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if hasattr(x, "item"):  # numpy scalars
        return _clean(x.item())
    return x


def _cell_intervals(c: dict) -> dict:
    """A cell's interval, mark and differences (stat ci) as JSON."""
    def pair(k):
        return {"mean": _clean(c[k]), "lo": _clean(c[f"{k}_lo"]), "hi": _clean(c[f"{k}_hi"])}

    return {"interval": [_clean(c["lo"]), _clean(c["hi"])], "mark": c["mark"] if isinstance(c["mark"], str) else None,
            "method": c["method"] if isinstance(c["method"], str) else None, "vs_best": pair("vs_best"),
            "vs_reference": pair("vs_ref")}


def to_dict(report: Report, spread: str | None = None) -> dict:
    spread = _spread(report, spread)
    spec = report.spec
    recs = {r["row"]: r for r in report.frame_records}
    cells = {(c["row"], c["column"]): c for c in report.cell_records}
    rows = []
    for row in report.display_rows:
        rec = recs[row]
        entry = {"row": row, "cells": {}, "metrics": {}, "paper": {}}
        for column in report.columns:
            c = cells.get((row, column))
            if c is None:
                entry["cells"][column] = {"status": NOT_RUN}
                continue
            entry["cells"][column] = {k: _clean(c[k]) for k in ("status", "mean", "std", "ci95", "n", "failed",
                                                                 "running")}
            entry["cells"][column]["seeds"] = [int(s) for s in c["seeds"]]
            entry["cells"][column]["errors"] = list(c["errors"])
            if spread == "ci":
                entry["cells"][column].update(_cell_intervals(c))
        for metric in spec.metrics:
            keys = [f"{c}_{metric}" for c in report.columns] if spec.metrics_per_column else [metric]
            for key in keys:
                entry["metrics"][key] = _clean(rec.get(key))
        for paper in spec.paper:
            entry["paper"][paper.label] = _clean(rec.get(paper.label))
        rows.append(entry)
    return {
        "table": spec.name, "title": spec.title, "paper_ref": spec.paper_ref, "accuracy": report.accuracy, "unit": "percent",
        "spread": spread, "columns": {c: spec.column_label(c) for c in report.columns},
        "metrics": {m: tables.METRICS[m] for m in spec.metrics}, "devices": report.devices,
        "paper": [{"label": p.label, "benchmark": p.benchmark} for p in spec.paper],
        "paper_note": spec.paper_note or None,
        "cells_done": report.cells_done, "cells_total": report.cells_total,
        "rows": rows, "notes": footnotes(report, spread),
        **({"method": method_note(report), "level": bootstrap.LEVEL, "resamples": report.resamples,
            "seeds_planned": report.seeds_planned, "reference": _reference(report, spread), "split": report.split,
            "clips": sorted({n for col in report.columns_stats.values() for n in col.clips}),
            "marks": {"*": "the column's best mean", "†": "not distinguishable from the best (paired)"}}
           if spread == "ci" else {}),
    }


def to_json(report: Report, spread: str | None = None) -> str:
    return json.dumps(to_dict(report, spread), indent=2) + "\n"


_STYLE = {DONE: "", PARTIAL: "yellow", RUNNING: "yellow", FAILED: "red", MISSING: "dim", NOT_RUN: "dim"}


def _rich_widths(headers, body) -> list[int]:
    # The widest cell, and the longest word of the header, so that headers wrap between words only.
    return [max([len(line[i]) for line in body] + [len(w) for w in headers[i].split()]) for i in range(len(headers))]


def rich_min_width(report: Report, spread: str | None = None) -> int:
    """Console width the rich table needs for its cells not to wrap (headers may still wrap)."""
    headers, body, _ = header_and_rows(report, spread)
    widths = _rich_widths(headers, body)
    return sum(w + 3 for w in widths) + 1


def to_rich(report: Report, spread: str | None = None):
    """A rich Table (printed by the CLI) with the notes as its caption. Cells never wrap (print it on a console at
    least `rich_min_width` wide); headers do."""
    from rich.table import Table
    from rich.text import Text

    headers, body, kinds = header_and_rows(report, spread)
    widths = _rich_widths(headers, body)
    table = Table(title=f"{report.spec.full_title}  [{report.cells_done}/{report.cells_total} cells done]",
                  caption=Text("\n".join(footnotes(report, spread))), caption_justify="left")  # not markup: [lo, hi]
    for i, (header, kind) in enumerate(zip(headers, kinds)):
        table.add_column(header, justify="left" if kind == "row" else "right", min_width=widths[i],
                         style="italic cyan" if kind == "paper" else None, no_wrap=kind == "row")
    recs = _records(report)
    statuses = [[r.get(f"{c}_status") for c in report.columns] for r in recs]
    bests = [[r.get(f"{c}_mark") == bootstrap.BEST for c in report.columns] for r in recs]
    for line, sts, best in zip(body, statuses, bests):
        cells = [line[0]]
        for text, st, b in zip(line[1:1 + len(sts)], sts, best):
            cells.append(Text(text, style=" ".join(x for x in (_STYLE.get(st, ""), "bold" if b else "") if x)))
        cells += line[1 + len(sts):]
        table.add_row(*cells)
    return table


def provenance(results_dir) -> str:
    """`Generated by vivit report on <date> at commit <sha> from <dir>`: where a committed table came from."""
    import datetime
    import subprocess
    from pathlib import Path

    commit = "unknown"
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent)
        if proc.returncode == 0 and proc.stdout.strip():
            commit = proc.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    today = datetime.date.today().isoformat()
    return f"Generated by `vivit report` on {today} at commit {commit} from {results_dir}"


def render(report: Report, fmt: str, spread: str | None = None) -> str:
    """Any text format; `table` gives rich's rendering without colour (for --out)."""
    if fmt == "markdown":
        return to_markdown(report, spread)
    if fmt == "csv":
        return to_csv(report)
    if fmt == "latex":
        return to_latex(report, spread)
    if fmt == "json":
        return to_json(report, spread)
    from rich.console import Console

    console = Console(file=io.StringIO(), width=max(120, rich_min_width(report, spread)), color_system=None)
    # crop=False: rich's column fitting can end wider than rich_min_width, and a cropped export loses columns.
    console.print(to_rich(report, spread), crop=False)
    return console.file.getvalue()
