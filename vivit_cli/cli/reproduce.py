"""`vivit reproduce`: the main job. The embed-ablation and model-variants sweeps, then both tables.

On the embedded data and the default CPU preset this is the shape of the paper's Tables 1 and 2,
with the user's numbers beside the paper's, in about ten minutes on a 2-core machine. It is
`vivit sweep embed-ablation`, `vivit sweep model-variants` (run as one pool of processes, so no core waits
for the other grid) and `vivit report -t embed-ablation -t model-variants`, so a rerun resumes where an
interrupted one stopped.
"""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import PresetOption, SetOption
from .report import report_command
from .sweep import ResultsOption, parse_seed_count, run_plan

GRIDS = ("embed-ablation", "model-variants")


def reproduce_command(
    preset: Optional[str] = PresetOption,
    seeds: str = typer.Option("3", "--seeds", help="Run every cell with seeds 0..N-1 (a cell's seeds train "
                                                   "together, as one program in one process)."),
    sets: Optional[List[str]] = SetOption,
    results: str = ResultsOption,
    parallel: int = typer.Option(2, "--parallel", "-j", help="Cells at once (2 suits a 2-core machine: a tiny "
                                                             "model's step leaves cores idle)."),
    fmt: str = typer.Option("table", "--format", "-f", help="How to print the tables: table, markdown, csv, latex, "
                                                            "json."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Also write the tables to this file."),
) -> None:
    """Run the paper's Table 1 and Table 2 ablations and print both tables beside the paper's numbers."""
    from vivit_cli.sweep import cells, grids

    seeds = parse_seed_count(seeds)  # before anything runs
    # Both grids as one pool (cells.combine): their cells, their two image ViTs and the cell they share.
    plan = cells.combine([cells.plan(grids.load(g), preset=preset, sets=sets, seeds=seeds) for g in GRIDS])
    failed = False
    try:
        run_plan(plan, results=results, parallel=parallel)
    except typer.Exit as e:  # some cells failed: still print what exists, they show as failed
        failed = e.exit_code != 0
    # Every parameter spelled out: one left to its default would be Typer's (truthy) OptionInfo, not the value.
    report_command(table=list(GRIDS), results=results, fmt=fmt, out=out, plot=None, spread="ci", accuracy="top1",
                   stamp=out is not None and fmt in ("markdown", "latex"), perf=False)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce_command)
