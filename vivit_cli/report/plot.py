"""The figure that fits each table: accuracy vs GFLOPs (model variants), accuracy vs a number (L_t, tubelet
length), or grouped bars with error bars. Ours and the paper's in separate, labelled series. The error bars are the
report's: the 95% bootstrap interval (stat ci, asymmetric) or the std over seeds (stat std / ci95 as the table)."""

from __future__ import annotations

import io
import math
import os

from vivit_cli.io import atomic_write_bytes
from vivit_cli.report import tables
from vivit_cli.report.aggregate import Report

_MARKERS = "osD^v<>"


def _figure(width: float, height: float):
    # Figure + the Agg canvas directly: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _series(report: Report, column: str):
    """(row, mean, (below, above)) of each row that has a result in this column: the error bar's extent under and
    over the mean (the interval's ends, or ± the spread over seeds); 0 where there is none (one seed, no clips)."""
    out = []
    for rec in report.frame_records:
        mean = rec.get(f"{column}_mean")
        if _nan(mean):
            continue
        if report.stat == "ci":
            lo, hi = rec.get(f"{column}_lo"), rec.get(f"{column}_hi")
            err = (0.0, 0.0) if _nan(lo) else (max(mean - lo, 0.0), max(hi - mean, 0.0))
        else:
            spread = rec.get(f"{column}_{report.stat}")
            err = (0.0, 0.0) if _nan(spread) else (spread, spread)
        out.append((rec["row"], mean, err))
    return out


def _yerr(errors):
    """matplotlib's asymmetric yerr: [[below...], [above...]]."""
    return [[e[0] for e in errors], [e[1] for e in errors]]


def _what(report: Report) -> str:
    return {"ci": "mean, 95% CI", "std": "mean ± std over seeds", "ci95": "mean ± t 95% over seeds"}[report.stat]


def _short(row: str) -> str:
    return row.split(":")[0] + (" ave-pool" if "pool" in row.lower() else "")


def _paper_accuracy_columns(report: Report):
    return [p for p in report.spec.paper if "top-1" in p.label]


def _plot_flops(report: Report, fig) -> None:
    paper_flops = next((p for p in report.spec.paper if "GFLOPs" in p.label), None)
    axes = fig.subplots(1, 2 if paper_flops else 1, squeeze=False)[0]
    ax = axes[0]
    gflops = {rec["row"]: rec.get("gflops") for rec in report.frame_records}
    for i, column in enumerate(report.columns):
        pts = [(gflops.get(r), m, s, r) for r, m, s in _series(report, column)
               if gflops.get(r) is not None and not math.isnan(gflops.get(r))]
        if not pts:
            continue
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=_yerr([p[2] for p in pts]), fmt=_MARKERS[i % 7],
                    capsize=3, label=report.spec.column_label(column))
        for x, y, _s, r in pts:
            ax.annotate(_short(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("GFLOPs per clip (ours)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Ours ({_what(report)})")
    if ax.has_data():
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
    if paper_flops:
        ax = axes[1]
        for i, paper in enumerate(_paper_accuracy_columns(report)):
            pts = [(paper_flops.values[r], v, r) for r, v in paper.values.items() if r in paper_flops.values]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], _MARKERS[i % 7], mfc="none", label=paper.label)
            for x, y, r in pts:
                ax.annotate(_short(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("GFLOPs per clip (paper, ViViT-B/16x2)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title("Paper (Table 2)")
        ax.legend(fontsize=8)


def _plot_line(report: Report, fig, categorical: bool = False) -> None:
    """Accuracy against the row's number (L_t) or, for tubelet sizes, against the rows in table order; a second
    panel shows GFLOPs when the table has them per column (the paper's Fig. 8 has both panels)."""
    flops = "gflops" in report.spec.metrics and report.spec.metrics_per_column
    axes = fig.subplots(1, 2 if flops else 1, squeeze=False)[0]
    ax = axes[0]
    rows = report.display_rows
    xs = {r: float(i) for i, r in enumerate(rows)} if categorical else {r: tables.row_number(r) for r in rows}
    for i, column in enumerate(report.columns):
        pts = sorted((xs[r], m, s) for r, m, s in _series(report, column) if xs.get(r) is not None)
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=_yerr([p[2] for p in pts]),
                        marker=_MARKERS[i % 7], capsize=3, label=f"ours: {report.spec.column_label(column)}")
    for i, paper in enumerate(_paper_accuracy_columns(report)):
        pts = sorted((xs[r], v) for r, v in paper.values.items() if xs.get(r) is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="--", marker=_MARKERS[i % 7], mfc="none",
                label=paper.label)
    ticks = sorted({x for x in xs.values() if x is not None})
    labels = [next(r for r in rows if xs[r] == t).split("=")[-1] for t in ticks]
    ax.set_title(f"{report.spec.full_title}; ours: {_what(report)}", fontsize=9)
    panels = [(ax, "top-1 (%)")]
    if flops:
        fx = axes[1]
        recs = report.frame_records
        for i, column in enumerate(report.columns):
            pts = sorted((xs[r["row"]], r[f"{column}_gflops"]) for r in recs
                         if xs.get(r["row"]) is not None and not math.isnan(r[f"{column}_gflops"]))
            if pts:
                fx.plot([p[0] for p in pts], [p[1] for p in pts], marker=_MARKERS[i % 7], label=f"ours: {column}")
        fx.set_title("Computation", fontsize=9)
        panels.append((fx, "GFLOPs per clip"))
    for a, ylabel in panels:
        a.set_xticks(ticks)
        a.set_xticklabels(labels)
        a.set_xlabel(report.spec.row_header)
        a.set_ylabel(ylabel)
        if a.has_data():
            a.legend(fontsize=8)


def _plot_bars(report: Report, fig) -> None:
    ax = fig.subplots()
    rows = report.display_rows
    papers = _paper_accuracy_columns(report)
    groups = len(report.columns) + len(papers)
    width = 0.8 / max(groups, 1)
    recs = {r["row"]: r for r in report.frame_records}
    for i, column in enumerate(report.columns):
        offset = (i - (groups - 1) / 2) * width
        errors = {row: err for row, _mean, err in _series(report, column)}
        for j, row in enumerate(rows):
            rec = recs[row]
            mean, status = rec[f"{column}_mean"], rec[f"{column}_status"]
            if _nan(mean):
                ax.text(j + offset, 0, status, rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
                continue
            err = errors.get(row, (0.0, 0.0))
            ax.bar(j + offset, mean, width, yerr=_yerr([err]) if any(err) else None, capsize=3, color=f"C{i}",
                   label=f"ours: {report.spec.column_label(column)}")
    for k, paper in enumerate(papers):
        offset = (len(report.columns) + k - (groups - 1) / 2) * width
        xs = [j + offset for j, row in enumerate(rows) if row in paper.values]
        ys = [paper.values[row] for row in rows if row in paper.values]
        ax.bar(xs, ys, width, color="none", edgecolor=f"C{len(report.columns) + k}", hatch="//", label=paper.label)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(rows, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{report.spec.full_title}; ours: {_what(report)}", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8)


def plot(report: Report, path: str | os.PathLike) -> None:
    """Writes the table's figure as a PNG, atomically."""
    kind = report.spec.plot
    wide = (kind == "flops" and any("GFLOPs" in p.label for p in report.spec.paper)) or (
        kind in ("line", "tubelet") and report.spec.metrics_per_column)
    fig = _figure(11 if wide else 7, 4.5)
    if kind == "flops":
        _plot_flops(report, fig)
    elif kind in ("line", "tubelet"):
        _plot_line(report, fig, categorical=kind == "tubelet")
    else:
        _plot_bars(report, fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
