"""`vivit status`: what the run store holds, read-only and without JAX."""

from __future__ import annotations

from types import SimpleNamespace

from vivit_cli.errors import VivitError
from vivit_cli.io import read_json

from . import store as st


def collect(results: str, grid: str | None = None) -> list[dict]:
    store = st.RunStore(results)
    root = store.root
    if not root.is_dir():
        raise VivitError(f"results dir {results!r} does not exist (run `vivit sweep GRID` first, or pass --results)")
    if grid:
        if not (root / grid).is_dir() and not store.planned(grid):
            raise VivitError(f"no runs of grid {grid!r} under {results}")
        folders = [root / grid]
    else:
        plans = root / ".plans"
        names = {g.name for g in root.iterdir() if g.is_dir() and g.name[:1] != "."}
        names |= {f.name[:-5] for f in plans.iterdir() if f.name.endswith(".json")} if plans.is_dir() else set()
        folders = [root / n for n in sorted(names)]
    rows = []
    for g in folders:
        on_disk = sorted(d.name for d in g.iterdir() if d.is_dir() and d.name[:1] not in "._") if g.is_dir() else []
        # Cells a sweep was asked for but never started (it was interrupted first) have no folder: the plan
        # names them, so the table is the sweep's own, not only what happened to be written.
        planned = {c["run_id"]: c for c in store.planned(g.name)}
        for run_id in on_disk + sorted(set(planned) - set(on_disk)):
            cell = read_json(g / run_id / "cell.json") if run_id in on_disk else planned[run_id]
            cell = cell if isinstance(cell, dict) else {}
            cur = store.state(SimpleNamespace(grid=g.name, run_id=run_id))
            if cur.state == st.SHARED:
                cur.state = st.NEW  # linked in by the next sweep; nothing here yet
            rows.append({"grid": g.name, "run_id": run_id, "cell": cell.get("cell"), "row": cell.get("row"),
                         "column": cell.get("column"), "seed": cell.get("seed"), "state": cur.state,
                         "top1": cur.top1, "step": cur.step, "failures": cur.failures, "error": cur.error,
                         "shared_from": cur.shared_from, "stale": cur.stale})
    return rows


def run_note(r: dict) -> str:
    return "; ".join(n for n in (f"from {r['shared_from']}" if r.get("shared_from") else "", r.get("stale") or "") if n)


def stale_warning(rows: list[dict]) -> str | None:
    """One line when done runs came from code (model or input pipeline) that computes differently (`CellState.stale`)."""
    n = sum(1 for r in rows if r.get("stale"))
    if not n:
        return None
    return (f"{n} done run(s) were trained under an older numerics version (model or input code); a rerun may give other numbers, and `vivit report` "
            "flags tables that mix them. Sweep into a fresh --results folder to retrain them.")


def counts(rows: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["state"]] = out.get(r["state"], 0) + 1
    return out


def table(rows: list[dict], title: str):
    from .live import Row, table as live_table

    out = [Row(key=f"{r['grid']}/{r['run_id']}", grid=r["grid"], cell=r["row"] or r["cell"] or "?",
               column=r["column"] or "", seed=r["seed"] or 0, run_id=r["run_id"], state=r["state"], top1=r["top1"],
               step=r["step"], error=r["error"], note=run_note(r))
           for r in rows]
    n = counts(rows)
    return live_table(out, f"{title}: " + ", ".join(f"{v} {k}" for k, v in sorted(n.items())) if n else title,
                      show_grid=True)
