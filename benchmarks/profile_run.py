"""Where one default-preset `vivit train` run's wall time goes.

    .venv/bin/python benchmarks/profile_run.py [--rounds 2] [--pipeline-seconds 8] [--json out.json]
                                               [--set KEY=VALUE ...] [--preset cpu]

It runs `vivit train` in a child process twice on a fresh cache ($VIVIT_CACHE in a temporary folder): first cold
(the embedded data generated on first use, every program compiled), then `--rounds` times warm (the data memory-
mapped from the cache, the compiled programs from the persistent compilation cache), the case of every run of a
sweep but its first. The child is the CLI's own `main(["train", ...])`, with timers wrapped around the trainer's
phases from outside (no change to the trainer; a phase whose function is not found is reported as n/a):

- interpreter start, imports (the CLI, JAX/Flax/Optax/Grain/Orbax, the trainer), JAX's backend start;
- data start-up (the task: the source opened, generated on first use) and the train iterator;
- model/optimizer set-up and the initial params;
- the first step: its compile (summary.json perf.compile_seconds, cold and from the persistent cache) and its
  run (summary.json compile_seconds is the time to its result);
- the steady steps (perf.train_step_ms x perf.timed_steps; perf.train_clips_per_s), and the rest of
  train_seconds (checkpoint saves, log transfers);
- the final eval (summary.json eval_seconds), the perf block's matmul-peak measurement (bench.peak.best_peak)
  and the rest of the perf block;
- the shutdown after the command returned, and what is left of the wall time.

Apart from training, it iterates the train iterator alone in a child pinned to one core (one BLAS thread): the
host input pipeline's own clips/s (the numpy crops, flips and jitter of `data.workers=0`, which runs on the
trainer's thread). `run_train_rate / (cores x pipeline_rate)` is then the share of the machine's CPU time that
the pipeline takes while training runs.

Timings on a shared machine are upper bounds: the load average at each phase is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The child: the CLI's `vivit train`, with timers around the trainer's phases. Patching module attributes from
# outside keeps the trainer as it is; every timer appends (seconds, start) to T[name].
CHILD = r"""
import json, sys, time
T = {"exec": time.time()}
def lap(name, t):
    T.setdefault(name, []).append([time.time() - t, t])
t = time.time()
from vivit_cli.runtime.cpu import apply_xla_defaults
apply_xla_defaults()  # as the CLI entry does, before JAX's backend starts
from vivit_cli.cli import app
lap("import_cli", t)
t = time.time()
import jax, flax.linen, optax, grain, orbax.checkpoint
import vivit_cli.models, vivit_cli.bench.perf, vivit_cli.bench.peak
from vivit_cli.train import loop
lap("import_jax_and_trainer", t)
t = time.time()
jax.devices()
lap("backend_start", t)

def wrap(module, names, key):
    # The first of `names` that the module has (the trainer's functions have been renamed before).
    name = next((n for n in names.split("|") if hasattr(module, n)), None)
    if name is None:
        T.setdefault("missing", []).append(f"{module.__name__}.{names}")
        return
    fn = getattr(module, name)
    def timed(*a, **k):
        t = time.time()
        try:
            return fn(*a, **k)
        finally:
            lap(key, t)
    setattr(module, name, timed)

for name, key in (("VideoTask", "data_task"), ("compile_steps", "model_setup"), ("restore_or_init", "init_params"),
                  ("train_iterator", "data_iterator"), ("first_step", "first_step"), ("evaluate", "evaluate"),
                  ("final_summary|final_summaries", "final_summary")):
    wrap(loop, name, key)
wrap(vivit_cli.bench.peak, "best_peak", "matmul_peak")
wrap(vivit_cli.bench.perf, "train_perf", "perf_block")
t = time.time()
rc = app.main(["train", "--workdir", sys.argv[1], *sys.argv[2:]])
lap("main", t)
T["rc"] = rc
T["end"] = time.time()
print("PROFILE " + json.dumps(T), flush=True)
"""

# Iterates the train iterator alone, on one core: the host pipeline's own rate.
PIPELINE_CHILD = r"""
import json, os, sys, time
cpus = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpus[-1]})
from vivit_cli import config, data
sets, seconds = json.loads(sys.argv[1]), float(sys.argv[2])
cfg = config.build(sets["overrides"], preset=sets["preset"])
b = cfg.train.batch_size
t = time.time()
data.open_source(cfg)
it = data.train_iterator(cfg, batch_size=b)
next(it)
startup = time.time() - t
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    next(it)
    n += b
rate = n / (time.perf_counter() - t0)
print("PIPELINE " + json.dumps({"clips_per_s": rate, "startup_s": startup, "batch": b, "cpu": cpus[-1]}), flush=True)
"""


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _env(cache: str) -> dict:
    env = dict(os.environ, VIVIT_CACHE=cache)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_train(cache: str, workdir: str, args: list[str]) -> dict:
    """One `vivit train` in a child: its timers, the wall time seen from here, and its summary.json."""
    load = _load()
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD, workdir, *args], env=_env(cache), capture_output=True,
                          text=True)
    end = time.time()
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROFILE ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"vivit train failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    timers = json.loads(line[len("PROFILE "):])
    summary = json.loads((Path(workdir) / "summary.json").read_text())
    return {"spawn": t, "end": end, "wall_s": end - t, "timers": timers, "summary": summary,
            "load_before": load, "load_after": _load()}


def pipeline_rate(cache: str, overrides: list[str], preset: str | None, seconds: float) -> dict:
    load = _load()
    proc = subprocess.run([sys.executable, "-c", PIPELINE_CHILD, json.dumps({"overrides": overrides, "preset": preset}),
                           str(seconds)], env=_env(cache) | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                                           "MKL_NUM_THREADS": "1"}, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PIPELINE ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"pipeline child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("PIPELINE "):]) | {"load_before": load, "load_after": _load()}


def _total(timers: dict, key: str) -> float | None:
    rows = timers.get(key)
    return None if rows is None else sum(r[0] for r in rows)


def breakdown(run: dict) -> list[tuple[str, float | None, str]]:
    """(phase, seconds, where the figure comes from) rows that add up to the run's wall time."""
    T, s = run["timers"], run["summary"]
    perf = s.get("perf") or {}
    rows: list[tuple[str, float | None, str]] = []
    rows.append(("interpreter start", T["exec"] - run["spawn"], "outside"))
    rows.append(("imports: CLI", _total(T, "import_cli"), "timer"))
    rows.append(("imports: JAX, Flax, Optax, Grain, Orbax, trainer", _total(T, "import_jax_and_trainer"), "timer"))
    rows.append(("JAX backend start", _total(T, "backend_start"), "timer"))
    data_task, data_it = _total(T, "data_task"), _total(T, "data_iterator")
    rows.append(("data start-up: the source (generated on first use)", data_task, "timer"))
    rows.append(("data start-up: the train iterator", data_it, "timer"))
    rows.append(("model, optimizer, compiled-step set-up", _total(T, "model_setup"), "timer"))
    rows.append(("initial params (init or restore)", _total(T, "init_params"), "timer"))
    first = s.get("compile_seconds")
    compile_s = perf.get("compile_seconds")
    src = perf.get("compile_source") or "?"
    rows.append((f"train step compile ({src})", compile_s, "perf.compile_seconds"))
    rows.append(("first step's run", None if first is None or compile_s is None else first - compile_s,
                 "compile_seconds - perf.compile_seconds"))
    steady = None
    if perf.get("train_step_ms") and perf.get("timed_steps"):
        steady = perf["train_step_ms"] / 1000 * perf["timed_steps"]
    rows.append((f"steady steps ({perf.get('timed_steps')} x {perf.get('train_step_ms', 0):.1f} ms, "
                 f"{perf.get('train_clips_per_s', 0):.0f} clips/s)", steady, "perf.train_step_ms x timed_steps"))
    rest = None if None in (steady, first) else s["train_seconds"] - first - steady
    rows.append(("rest of train_seconds (checkpoint saves, log transfers, step jitter)", rest,
                 "train_seconds - compile_seconds - steady"))
    rows.append((f"final eval ({s.get('eval_videos')} {s.get('eval_split')} clips)", s.get("eval_seconds"),
                 "eval_seconds"))
    peak, block = _total(T, "matmul_peak"), _total(T, "perf_block")
    rows.append(("perf block: matmul-peak measurement", peak, "timer"))
    rows.append(("perf block: the rest", None if None in (peak, block) else block - peak, "timer"))
    final = _total(T, "final_summary")
    rows.append(("summary, predictions and the rest of the final phase",
                 None if None in (final, block, s.get("eval_seconds")) else final - block - s["eval_seconds"],
                 "timer"))
    rows.append(("shutdown after the command returned", run["end"] - T["end"], "outside"))
    known = sum(v for _, v, _ in rows if v is not None)
    rows.append(("unaccounted (loop set-up, logs, threads, ...)", run["wall_s"] - known, "outside"))
    return rows


def print_run(title: str, run: dict) -> None:
    print(f"\n{title}: wall {run['wall_s']:.2f} s, top1 {run['summary'].get('top1')}, load average "
          f"{run['load_before']} -> {run['load_after']}")
    for name, value, source in breakdown(run):
        v = "n/a" if value is None else f"{value:7.2f} s  {100 * value / run['wall_s']:5.1f}%"
        print(f"  {name:<72} {v:>16}   [{source}]")
    missing = run["timers"].get("missing")
    if missing:
        print(f"  (not timed, not found in the trainer: {', '.join(missing)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1, help="warm runs after the cold one (each with a pipeline rate)")
    ap.add_argument("--pipeline-seconds", type=float, default=8.0)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="a config override, as vivit train's")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--json", default=None, help="write every figure here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache and run folders")
    args = ap.parse_args()
    train_args = [x for kv in args.sets for x in ("--set", kv)] + (["--preset", args.preset] if args.preset else [])
    tmp = tempfile.mkdtemp(prefix="vivit-profile-")
    cache = os.path.join(tmp, "cache")
    cores = len(os.sched_getaffinity(0))
    out = {"cores": cores, "argv": sys.argv[1:], "runs": [], "pipeline": []}
    print(f"profile_run: {cores} cores, cache {cache}, load average {os.getloadavg()}")
    try:
        for r in range(args.rounds + 1):
            kind = "cold" if r == 0 else "warm"
            run = run_train(cache, os.path.join(tmp, f"run{r}"), train_args)
            print_run(f"{kind} run {r} (fresh workdir, {'empty' if r == 0 else 'filled'} cache)", run)
            out["runs"].append({"kind": kind, **run, "breakdown": breakdown(run)})
            if r == 0:
                continue
            p = pipeline_rate(cache, args.sets, args.preset, args.pipeline_seconds)
            train_rate = run["summary"].get("perf", {}).get("train_clips_per_s") or 0.0
            share = train_rate / (cores * p["clips_per_s"])
            print(f"  host pipeline alone, one core: {p['clips_per_s']:.0f} clips/s (start-up {p['startup_s']:.2f} s, "
                  f"load {p['load_before']} -> {p['load_after']}); at the run's {train_rate:.0f} clips/s it takes "
                  f"{100 * share:.0f}% of the {cores} cores' time")
            out["pipeline"].append(p | {"share_of_cores": share, "train_clips_per_s": train_rate})
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
