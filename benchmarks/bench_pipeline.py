"""The host input pipeline of two source trees, interleaved: clips/s and CPU time per clip on one core, and whether
their batches are the same bytes.

    git archive <commit> | tar -x -C /tmp/before
    .venv/bin/python benchmarks/bench_pipeline.py --before /tmp/before [--after .] [--rounds 5] [--batches 60]

Each round runs one child per tree and per config (default preset embedded:motion; embedded:appearance, which
flips; embedded:appearance with every augmentation), in turn, each pinned to one core with one BLAS thread. A
child iterates `data.train_iterator` alone (batch 32, `data.workers=0`, the data already cached) and reports:

- clips/s, reading batches back to back;
- CPU microseconds per clip (process time, all threads), reading back to back, and again with a pause of
  --step-ms after each batch, as the trainer does while its step runs: grain's read-ahead threads fill their
  buffer then, and its poll of that buffer on every clip costs most;
- a sha256 of the first 10 batches (videos and labels), which must match between the trees.

CPU time is the figure to trust on a shared machine: wall-clock rates move with the neighbours' load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "motion": [],
    "appearance+flip": ["data.source=embedded:appearance"],
    "appearance+all": ["data.source=embedded:appearance", "data.color_jitter=0.8", "data.randaugment_layers=2"],
}

CHILD = r"""
import hashlib, json, os, sys, time
cpus = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpus[-1]})
from vivit_cli import config, data
sets, batches, step_s = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
cfg = config.build(sets)
data.open_source(cfg)
h = hashlib.sha256()
it = data.train_iterator(cfg, batch_size=32)
for _ in range(10):
    b = next(it)
    h.update(b["video"].tobytes()); h.update(b["label"].tobytes())
def timed(pause):
    it = data.train_iterator(cfg, batch_size=32)
    next(it)
    c, w = time.process_time(), time.perf_counter()
    for _ in range(batches):
        next(it)
        if pause:
            time.sleep(pause)
    c, w = time.process_time() - c, time.perf_counter() - w - pause * batches
    return batches * 32 / w, 1e6 * c / (batches * 32)
rate, cpu = timed(0.0)
_, cpu_stepped = timed(step_s)
print("RESULT " + json.dumps({"clips_per_s": rate, "cpu_us_per_clip": cpu, "cpu_us_per_clip_stepped": cpu_stepped,
                              "sha": h.hexdigest()[:16]}), flush=True)
"""


def child(tree: str, sets: list[str], batches: int, step_ms: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(sets), str(batches), str(step_ms / 1000)],
                          env=env, capture_output=True, text=True, cwd=tree)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{tree}: child failed\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):]) | {"load": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="a source tree (e.g. a git archive of the older commit)")
    ap.add_argument("--after", default=str(ROOT))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--step-ms", type=float, default=50.0, help="the pause per batch of the stepped measurement")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    trees = {"before": args.before, "after": args.after}
    rows: dict[str, dict[str, list[dict]]] = {c: {t: [] for t in trees} for c in args.configs}
    for r in range(args.rounds):
        for name in args.configs:
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]  # neither tree always runs first
            for t in order:
                res = child(trees[t], CONFIGS[name], args.batches, args.step_ms)
                rows[name][t].append(res)
                print(f"round {r} {name:<16} {t:<6} {res['clips_per_s']:7.0f} clips/s  {res['cpu_us_per_clip']:5.0f} "
                      f"CPU-us/clip  stepped {res['cpu_us_per_clip_stepped']:5.0f}  sha {res['sha']}  "
                      f"load {res['load']}", flush=True)
    print("\nmedians over rounds (one core):")
    summary = {}
    for name, by_tree in rows.items():
        med = {t: {k: statistics.median(x[k] for x in v) for k in ("clips_per_s", "cpu_us_per_clip",
                                                                     "cpu_us_per_clip_stepped")}
               for t, v in by_tree.items()}
        same = len({x["sha"] for v in by_tree.values() for x in v}) == 1
        summary[name] = {"median": med, "identical_batches": same}
        b, a = med["before"], med["after"]
        print(f"  {name:<16} clips/s {b['clips_per_s']:6.0f} -> {a['clips_per_s']:6.0f}   CPU-us/clip "
              f"{b['cpu_us_per_clip']:4.0f} -> {a['cpu_us_per_clip']:4.0f}   stepped "
              f"{b['cpu_us_per_clip_stepped']:4.0f} -> {a['cpu_us_per_clip_stepped']:4.0f}   batches identical: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
