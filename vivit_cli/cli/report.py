"""`vivit report`: the paper's tables from the run store, beside the paper's numbers."""

from __future__ import annotations

import io
import json
from typing import List, Optional

import typer

from vivit_cli.errors import VivitError

FORMATS = ("table", "markdown", "csv", "latex", "json")


def report_command(
    table: Optional[List[str]] = typer.Option(None, "--table", "-t",
                                              help="Table name (repeatable); leave out to list the tables."),
    results: str = typer.Option("results", "--results", "-r", help="The run store written by `vivit sweep`."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, markdown, csv, latex or json."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write the export to this file instead of stdout."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Also write a PNG figure of the table."),
    spread: str = typer.Option("ci", "--stat", "--spread", help="ci: mean and 95% interval by hierarchical bootstrap "
                               "over seeds and clips, each column's best and the rows not distinguishable from it, "
                               "the paired difference to the reference row; std: mean ± sample std over seeds; "
                               "ci95: mean ± Student's t half width over seeds."),
    accuracy: str = typer.Option("top1", "--accuracy",
                                 help="top1, top5 (summary.json; a multi-head run's are the action's), one head's "
                                      "such as verb_top1 / noun_top5, or an eval.json key such as val@4x3[:top5]."),
    stamp: bool = typer.Option(False, "--stamp", help="Markdown/LaTeX: add the date, git commit and results dir."),
    perf: bool = typer.Option(False, "--perf", help="Add train clips/s, MFU, peak memory and compile time (each "
                              "run's summary.json perf block, mean over seeds)."),
) -> None:
    """Print a paper-style table (mean over seeds with its interval and marks, the paper's numbers beside), or list
    the tables."""
    from vivit_cli import report as rep
    from vivit_cli.report import render

    if fmt not in FORMATS:
        raise VivitError(f"--format {fmt!r}: allowed values are {', '.join(FORMATS)}")
    if spread not in render.SPREADS:
        raise VivitError(f"--stat/--spread {spread!r}: allowed values are {', '.join(render.SPREADS)}")
    if stamp and fmt not in ("markdown", "latex"):
        raise VivitError(f"--stamp applies to --format markdown or latex, not {fmt}")
    if not table:
        if plot or perf:
            raise VivitError(f"{'--plot' if plot else '--perf'} needs --table NAME")
        rows, notes = rep.overview(results)
        _emit(_overview(rows, notes, fmt, results), out)
        return
    specs = [rep.tables.get(name) for name in dict.fromkeys(table)]  # unknown names fail before anything is read
    if perf:
        specs = [rep.tables.with_perf(spec) for spec in specs]
    if len(specs) > 1 and (plot or fmt == "csv"):
        raise VivitError(f"{'--plot' if plot else '--format csv'} takes one --table, got {len(specs)}")
    runs, stats = rep.load_records(results)
    reports = [rep.build(spec, runs, stats, accuracy=accuracy, stat=spread) for spec in specs]
    if fmt == "table" and out is None:
        from vivit_cli import term

        for r in reports:
            # Never crop a column: a console narrower than the table gets the table's width (the terminal wraps).
            need = render.rich_min_width(r, spread)
            console = term.console()
            console.print(render.to_rich(r, spread), width=max(console.width, need), crop=False)
    elif fmt == "table":
        _emit("\n".join(render.render(r, fmt, spread) for r in reports), out)
    elif fmt == "json":
        docs = [render.to_dict(r, spread) for r in reports]
        _emit(json.dumps(docs[0] if len(docs) == 1 else {"tables": docs}, indent=2) + "\n", out)
    else:
        text = "\n".join(render.render(r, fmt, spread) for r in reports)
        if stamp:
            line = render.provenance(results)
            text = (f"_{line}_\n\n" if fmt == "markdown" else f"% {render.latex_escape(line)}\n") + text
        _emit(text, out)
    if plot:
        from vivit_cli.report.plot import plot as write_plot

        write_plot(reports[0], plot)
        typer.echo(f"wrote {plot}", err=True)


def _emit(text, out: Optional[str]) -> None:
    """Text or a rich renderable to stdout (in colour on a terminal), or as plain text to --out."""
    from rich.console import Console

    if out is None:
        if isinstance(text, str):
            typer.echo(text, nl=False)
        else:
            from vivit_cli import term

            console = term.console()
            for item in text if isinstance(text, list) else [text]:
                console.print(item)
        return
    from vivit_cli.io import atomic_write_text

    if not isinstance(text, str):
        console = Console(file=io.StringIO(), width=200, color_system=None)
        console.print(text)
        text = console.file.getvalue()

    try:
        atomic_write_text(out, text)
    except OSError as e:
        raise VivitError(f"--out {out!r}: cannot write ({e.strerror})") from None
    typer.echo(f"wrote {out}", err=True)


def _overview(rows: list[dict], notes: list[str], fmt: str, results: str):
    import csv

    if fmt == "json":
        return json.dumps({"results": results, "tables": rows, "notes": notes}, indent=2) + "\n"
    keys = ["table", "cells_done", "cells_total", "cells_partial", "cells_failed", "runs_done", "runs_running",
            "runs_failed", "title", "paper_ref"]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt in ("markdown", "latex"):
        lines = ["| table | cells done | runs done / running / failed | what | paper |", "|---|---:|---:|---|---|"]
        lines += [f"| {r['table']} | {r['cells_done']}/{r['cells_total']} | {r['runs_done']} / {r['runs_running']} / "
                  f"{r['runs_failed']} | {r['title']} | {r['paper_ref']} |" for r in rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"
    from rich.table import Table

    t = Table(title=f"Report tables in {results}", caption="\n".join(
        notes + ["Runs d/r/f: done / running or interrupted / failed.",
                 "vivit report --table NAME [--format markdown|csv|latex|json] [--plot FILE.png]"]),
        caption_justify="left")
    for key, label in (("table", "Table"), ("cells", "Cells done"), ("runs", "Runs d/r/f"),
                       ("title", "What"), ("paper", "Paper")):
        t.add_column(label, justify="right" if key in ("cells", "runs") else "left", no_wrap=key == "table",
                     min_width=len(label) if key in ("cells", "runs") else None)
    for r in rows:
        style = "green" if r["cells_done"] == r["cells_total"] and r["cells_total"] else None
        t.add_row(r["table"], f"{r['cells_done']}/{r['cells_total']}",
                  f"{r['runs_done']} / {r['runs_running']} / {r['runs_failed']}", r["title"], r["paper_ref"],
                  style=style)
    return t


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
