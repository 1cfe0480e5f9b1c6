"""Three seeds of one cell: separate processes (two at a time, as sweeps ran them before groups) vs one group.

    .venv/bin/python benchmarks/bench_seeds.py [--rounds 2] [--seeds 3] [--parallel 2] [--set KEY=VALUE ...]
                                               [--preset cpu] [--json out.json] [--write-results]

Each round runs both ways on fresh workdirs, in alternating order (separate first in even rounds, the group
first in odd ones), after one untimed warm-up of each that generates the embedded data and fills the
persistent compilation cache: every timed run is a sweep's warm case. For each way it reports
- wall: spawn of the first `vivit train` to the exit of the last, as a user waits for it;
- clips/s: the training clips of all seeds (steps x batch x seeds) over that wall time.

The JSON (`--json`) also keeps each run's own steady-step rate (summary.json perf.train_clips_per_s), top-1 and
status. The ratio is the median over rounds of separate wall / group wall (> 1: the group is faster).

`--write-results` replaces the block between the markers in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import replace_block  # the sibling module: scripts run with benchmarks/ on sys.path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench_seeds:begin -->", "<!-- bench_seeds:end -->"


def _env(cache: str) -> dict:
    env = dict(os.environ, VIVIT_CACHE=cache)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _train(workdir: str, args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vivit_cli.cli.app", "train", "--workdir", workdir, *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, what: str) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (rc {proc.returncode}):\n{err[-3000:]}")


def _summaries(workdirs: list[str]) -> list[dict]:
    return [json.loads((Path(w) / "summary.json").read_text()) for w in workdirs]


def run_separate(base: str, seeds: int, parallel: int, args: list[str], env: dict) -> dict:
    """`seeds` processes, at most `parallel` at once: the sweep's slots before groups."""
    workdirs = [f"{base}-s{k}" for k in range(seeds)]
    t0 = time.perf_counter()
    pending, running = list(range(seeds)), []
    while pending or running:
        while pending and len(running) < parallel:
            k = pending.pop(0)
            running.append((k, _train(workdirs[k], [*args, "--set", f"train.seed={k}"], env)))
        k, proc = running.pop(0)
        _wait(proc, f"seed {k}")
    return {"wall_s": time.perf_counter() - t0, "summaries": _summaries(workdirs)}


def run_group(base: str, seeds: int, args: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    _wait(_train(f"{base}-s{{seed}}", [*args, "--seeds", ",".join(map(str, range(seeds)))], env), "group")
    return {"wall_s": time.perf_counter() - t0, "summaries": _summaries([f"{base}-s{k}" for k in range(seeds)])}


def figures(res: dict) -> dict:
    s = res["summaries"]
    step_rate = sum(x["perf"]["train_clips_per_s"] for x in s if x.get("perf"))
    return {"wall_s": res["wall_s"], "step_clips_per_s_summed": step_rate, "top1": [x.get("top1") for x in s],
            "status": [x.get("status") for x in s]}


def _batch_steps(args: list[str], preset: str | None) -> tuple[int, int]:
    from vivit_cli import config

    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    cfg = config.build(sets, preset=preset)
    return cfg.train.batch_size, cfg.train.steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2, help="separate processes at once")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--json", default=None)
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args(argv)
    args = [x for kv in a.sets for x in ("--set", kv)] + (["--preset", a.preset] if a.preset else [])
    batch, steps = _batch_steps(args, a.preset)
    with tempfile.TemporaryDirectory(prefix="bench_seeds-") as tmp:
        env = _env(os.path.join(tmp, "cache"))
        run_separate(f"{tmp}/warm-sep", 1, 1, args, env)  # data generated, programs compiled and cached
        run_group(f"{tmp}/warm-grp", a.seeds, args, env)
        rounds = []
        for r in range(a.rounds):
            load = os.getloadavg()[0]
            order = ("separate", "group") if r % 2 == 0 else ("group", "separate")
            out = {}
            for way in order:
                res = (run_separate(f"{tmp}/r{r}-sep", a.seeds, a.parallel, args, env) if way == "separate"
                       else run_group(f"{tmp}/r{r}-grp", a.seeds, args, env))
                out[way] = {**figures(res), "clips_per_s": a.seeds * steps * batch / res["wall_s"]}
            out["ratio"] = out["separate"]["wall_s"] / out["group"]["wall_s"]
            out["load_before"] = load
            rounds.append(out)
            print(f"round {r}: separate {out['separate']['wall_s']:.1f} s, group {out['group']['wall_s']:.1f} s, "
                  f"ratio {out['ratio']:.2f} (load {load:.2f})", flush=True)
    import jax

    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor() or
              platform.machine(), "cores": os.cpu_count(), "jax": jax.__version__, "seeds": a.seeds,
              "parallel": a.parallel, "batch": batch, "steps": steps, "args": args, "rounds": rounds,
              "ratio_median": statistics.median(r["ratio"] for r in rounds)}
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    if a.write_results:
        write_results(result)
    return 0


def _med(rounds, way, key):
    return statistics.median(r[way][key] for r in rounds)


def _list(values, fmt=".1f") -> str:
    return ", ".join(format(v, fmt) for v in values)


def block(res: dict) -> str:
    rs = res["rounds"]
    rows = "\n".join(
        f"| {way} | {_med(rs, way, 'wall_s'):.1f} ({_list(r[way]['wall_s'] for r in rs)}) | "
        f"{_med(rs, way, 'clips_per_s'):.0f} |" for way in ("separate", "group"))
    return (f"{BEGIN}\n## {res['seeds']} seeds of one cell: separate processes vs one group "
            f"(`benchmarks/bench_seeds.py`)\n\n"
            f"- Date: {res['date']}; machine: {res['cores']} cores ({res['machine']}), jax {res['jax']}\n"
            f"- Command: `.venv/bin/python benchmarks/bench_seeds.py --rounds {len(rs)} --seeds {res['seeds']}"
            f"{''.join(' ' + a for a in res['args'])} --write-results`\n"
            f"- Cell: the default preset (batch {res['batch']}, {res['steps']} steps), warm cache; separate = "
            f"{res['seeds']} `vivit train` processes, {res['parallel']} at a time; group = one `vivit train "
            f"--seeds`. Rounds interleaved; load average before each round: "
            f"{_list(r['load_before'] for r in rs)}\n\n"
            f"| way | wall s, median (rounds) | clips/s, summed over seeds (all seeds' training clips / wall) |\n"
            f"|---|---|---|\n{rows}\n\n"
            f"Separate / group wall time: **{res['ratio_median']:.2f}x** (median of rounds: "
            f"{_list((r['ratio'] for r in rs), '.2f')}).\n{END}")


def write_results(res: dict) -> None:
    replace_block(BEGIN, END, block(res))


if __name__ == "__main__":
    sys.exit(main())
