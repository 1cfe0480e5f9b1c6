"""`vivit sweep GRID` and `vivit status [GRID]`: thin wrappers over `vivit_cli.sweep`.

`--list`, `--dry-run` and `status` import no JAX and only read the run store.
Exit codes: 0 every cell done, 1 some cells failed (listed), 2 bad input (nothing in the results dir touched),
130 interrupted (running cells saved a checkpoint; run the same command again to resume).
"""

from __future__ import annotations

from typing import List, Optional

import typer

from vivit_cli.errors import VivitError

from .common import JsonOption, PresetOption, SetOption, console, err_console, print_json

ResultsOption = typer.Option("results", "--results", "-r", help="The run store: results/<grid>/<run-id>/ "
                                                                "(a local folder or gs://bucket/path).")


def parse_seed_count(text) -> int:
    """`--seeds N`: seeds 0..N-1 of every cell, N a positive integer (one line of error otherwise, exit 2)."""
    t = str(text).strip()
    if not t.isdigit() or int(t) < 1:
        raise VivitError(f"--seeds {text}: expected a number of seeds, a whole number of at least 1 (e.g. --seeds 3)")
    return int(t)


SeedsOption = typer.Option("1", "--seeds", help="Run every cell with seeds 0..N-1; the seeds of a cell train "
                                                "together, as one program in one process.")


def _plan(grid: str, preset, sets, seeds):
    from vivit_cli.sweep import cells, grids

    return cells.plan(grids.load(grid), preset=preset, sets=sets, seeds=seeds)


def _dry_run(plan, results: str, backend_name: str, backend_opts, wandb, as_json: bool) -> None:
    from vivit_cli.sweep import runner, store as st
    from vivit_cli.sweep.backends import get

    store = st.RunStore(results)
    backend = get(backend_name, backend_opts)
    states = {job.run_id: store.state(job) for job in plan.jobs}
    groups: dict[str, list] = {}  # the seeds of each cell a sweep would start, together
    for job in plan.jobs:
        if runner.slot_state(states[job.run_id]) is runner.SlotState.NEW and states[job.run_id].state != st.SHARED:
            groups.setdefault(job.group, []).append(job)
    rows = []
    for job in plan.jobs:
        cur = states[job.run_id]
        members = groups.get(job.group, [])
        launch = runner.launch_for(members if any(m.run_id == job.run_id for m in members) else job, store, wandb)
        rows.append({"run_id": job.run_id, "folder": f"{job.grid}/{job.run_id}", "kind": job.kind, "cell": job.cell,
                     "row": job.labels.get("row"), "column": job.labels.get("column"), "seed": job.seed,
                     "overrides": job.overrides, "deps": list(job.deps), "state": cur.state, "error": cur.error,
                     "shared_from": cur.shared_from, "stale": cur.stale, "top1": cur.top1,
                     "commands": backend.commands(launch)})
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    _warn_stale(rows)
    if as_json:
        print_json({"grid": plan.grid.name, "table": plan.grid.table, "preset": plan.preset or "cpu",
                    "seeds": plan.seeds, "results": results, "backend": backend_name, "counts": counts, "cells": rows})
        return
    from rich.table import Table

    t = Table(title=f"{plan.grid.name}: {plan.grid.title}", title_justify="left")
    for name in ("#", "run id", "cell", "task", "seed", "state", "overrides"):
        t.add_column(name, overflow="fold")
    for i, r in enumerate(rows, 1):
        over = ", ".join(f"{k}={v}" for k, v in r["overrides"].items())
        cell = r["cell"] if r["kind"] == "train" else f"{r['cell']} (dependency, {r['kind']})"
        state = r["state"] + (f" ({r['shared_from']})" if r["shared_from"] else "") + \
            (f": {r['error']}" if r["error"] else "") + (f" ({r['stale']})" if r["stale"] else "")
        t.add_row(str(i), r["run_id"], cell, r["column"] or "", str(r["seed"]), state, over)
    out = console()
    out.print(t)
    out.print(f"{len(plan.cells)} cells x seeds + {len(plan.deps)} dependencies; "
              + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f"; preset {plan.preset or 'cpu'}, "
              f"results {results}. Nothing was run (--dry-run).", highlight=False)


def _warn_stale(rows) -> None:
    from vivit_cli.sweep import status

    warning = status.stale_warning(rows)
    if warning:
        err_console().print(warning, highlight=False, markup=False)


def _list(preset, seeds, as_json: bool) -> None:
    from vivit_cli.sweep import cells, grids

    items = []
    for name in grids.available():
        try:
            spec = grids.load(name)
            p = cells.plan(spec, preset=preset, seeds=seeds)
            items.append({"grid": name, "table": spec.table, "cells": len(p.cells), "dependencies": len(p.deps),
                          "title": spec.title})
        except VivitError as e:
            items.append({"grid": name, "table": None, "cells": None, "dependencies": None, "title": f"error: {e}"})
    if as_json:
        print_json({"preset": preset or "cpu", "seeds": seeds, "experiments": str(grids.experiments_dir()),
                    "grids": items})
        return
    from rich.table import Table

    t = Table(title=f"grids in {grids.experiments_dir()} (preset {preset or 'cpu'}, {seeds} seed(s))",
              title_justify="left")
    for name in ("grid", "cells", "+deps", "report table", "what"):
        t.add_column(name)
    for it in items:
        t.add_row(it["grid"], str(it["cells"]), str(it["dependencies"]), it["table"] or "", it["title"])
    console().print(t)


def sweep_command(
    grid: Optional[str] = typer.Argument(None, help="A grid name (see --list) or a path to a grid .py file."),
    list_grids: bool = typer.Option(False, "--list", help="List the grids and their cell counts."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every cell (run id, overrides, state); run nothing."),
    as_json: bool = JsonOption,
    seeds: str = SeedsOption,
    preset: Optional[str] = PresetOption,
    sets: Optional[List[str]] = SetOption,
    backend_name: str = typer.Option("local", "--backend", help="Where cells run: local or tpu."),
    backend_opts: Optional[List[str]] = typer.Option(None, "--backend-opt", help="Backend option key=value, e.g. "
                                                     "zone=us-central2-b, accelerator=v4-16, spot=true (repeatable)."),
    results: str = ResultsOption,
    parallel: int = typer.Option(1, "--parallel", "-j", help="Cells at once (local processes or TPU slices)."),
    wandb: Optional[str] = typer.Option(None, "--wandb", help="W&B mode for every run (offline, online, "
                                                              "disabled), grouped by grid name."),
    max_attempts: int = typer.Option(3, "--max-attempts", help="Failures of a cell before it is reported failed "
                                                               "and no longer retried."),
) -> None:
    """Run an ablation grid: one `vivit train` per cell (its seeds together, as one program), resumable, into
    results/<grid>/<run-id>/.

    Rerunning skips done cells, resumes partial ones from their checkpoints and retries failed ones. Use
    `--set scope:key=value` to set a key only in cells whose column/row/cell is `scope`
    (e.g. --set motion:data.source=csv:/data/ek).
    """
    from vivit_cli.sweep import backends as be

    seeds = parse_seed_count(seeds)
    if list_grids:
        _list(preset, seeds, as_json)
        return
    if not grid:
        raise VivitError("missing GRID: name a grid (see `vivit sweep --list`) or a grid .py file")
    if max_attempts < 1:
        raise VivitError(f"--max-attempts {max_attempts}: must be at least 1")
    if wandb is not None:
        from vivit_cli.config.schema import WANDB_MODES

        if wandb not in WANDB_MODES:
            raise VivitError(f"--wandb {wandb!r}: allowed values are {', '.join(WANDB_MODES)}")
    opts = be.parse_options(backend_opts)
    plan = _plan(grid, preset, sets, seeds)  # validates every cell before anything runs
    if dry_run:
        _dry_run(plan, results, backend_name, opts, wandb, as_json)
        return
    run_plan(plan, results=results, backend_name=backend_name, opts=opts, parallel=parallel, wandb=wandb,
             max_attempts=max_attempts, as_json=as_json)


def run_plan(plan, *, results: str, backend_name: str = "local", opts=None, parallel: int = 1,
             wandb: str | None = None, max_attempts: int = 3, as_json: bool = False) -> None:
    """Runs a plan (one grid's, or `cells.combine`d grids') and says what became of it; exit 1 if a job failed."""
    from vivit_cli.sweep import backends as be, runner, store as st

    if parallel < 1:
        raise VivitError(f"--parallel {parallel}: must be at least 1")

    st.check_writable(results)
    backend = be.get(backend_name, opts or {})
    backend.check()
    result = runner.run(plan, st.RunStore(results, max_attempts=max_attempts), backend, parallel=parallel,
                        wandb=wandb)
    summary = {"grid": plan.grid.name, "results": results, "done": len(result.done), "failed": result.failed}
    if as_json:
        print_json(summary)
    else:
        err = err_console()
        err.print(f"{plan.grid.name}: {len(result.done)} of {len(plan.jobs)} jobs done"
                  + (f", {len(result.failed)} failed" if result.failed else "")
                  + (f"; `vivit report --table {plan.grid.table} --results {results}`" if plan.grid.table else ""),
                  highlight=False)
        for run_id, error in result.failed.items():
            err.print(f"  failed {run_id}: {error}", highlight=False, markup=False)
    if not result.ok:
        raise typer.Exit(1)


def status_command(
    grid: Optional[str] = typer.Argument(None, help="Only this grid's folder."),
    results: str = ResultsOption,
    as_json: bool = JsonOption,
) -> None:
    """Show the runs in the run store and their state (done / running / partial / failed / new)."""
    from vivit_cli.sweep import status

    rows = status.collect(results, grid)
    _warn_stale(rows)
    if as_json:
        print_json({"results": results, "grid": grid, "counts": status.counts(rows), "runs": rows})
        return
    console().print(status.table(rows, f"{results}" + (f"/{grid}" if grid else "")))


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
    app.command("status")(status_command)
