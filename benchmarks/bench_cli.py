"""The commands that compute nothing: wall time of each as a user runs it, and which heavy modules it imported.

    .venv/bin/python benchmarks/bench_cli.py [--rounds 5] [--results DIR] [--trees . /tmp/before] [--write-results]

Each round runs every command once per source tree, in turn (interleaved), as a fresh process of this venv's
Python with the tree first on PYTHONPATH (`git worktree add /tmp/before HEAD~1` gives an A/B), with a results folder (default: an empty one; pass a real one to time `report` and `status` over results), output to a
pipe. A wrapper records `sys.modules` at exit, so that a command which starts importing JAX shows it. The house
rule (docs/DESIGN.md): these answer in well under a second and import no JAX.
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

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("jax", "flax", "optax", "orbax", "tensorflow", "torch", "pandas", "scipy", "matplotlib")
COMMANDS = (
    ("--help",),
    ("report",),
    ("status",),
    ("sweep", "--list"),
    ("sweep", "model-variants", "--dry-run", "--seeds", "3"),
    ("data", "list"),
)
WRAPPER = r"""
import atexit, json, sys
heavy = json.loads(sys.argv.pop(1))
atexit.register(lambda: sys.stderr.write("\nHEAVY " + json.dumps(sorted(m for m in heavy if m in sys.modules)) + "\n"))
from vivit_cli.cli.app import entry
sys.argv[0] = "vivit"
entry()
"""


def time_once(args: tuple[str, ...], results: str, tree: Path) -> tuple[float, list[str], int]:
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=str(tree))
    cmd = [sys.executable, "-c", WRAPPER, json.dumps(HEAVY), *args]
    if args[0] in ("report", "status") or args[0] == "sweep" and "--dry-run" in args:
        cmd += ["--results", results]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    wall = time.perf_counter() - t
    heavy = next((json.loads(line[6:]) for line in p.stderr.splitlines() if line.startswith("HEAVY ")), ["?"])
    return wall, heavy, p.returncode


def tree_name(tree: Path, trees: list[Path]) -> str:
    """The tree's commit (and whether its files differ from it), else its path."""
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" + changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return str(tree) if len(trees) > 1 else "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--results", default=None, help="a results folder (default: an empty one)")
    ap.add_argument("--trees", nargs="+", default=[str(ROOT)], help="source trees to compare (default: this one)")
    ap.add_argument("--write-results", action="store_true", help="replace the block in benchmarks/RESULTS.md")
    a = ap.parse_args()
    results = a.results or tempfile.mkdtemp(prefix="vivit-bench-cli-")
    trees = [Path(t).resolve() for t in a.trees]
    keys = [(t, c) for c in COMMANDS for t in trees]
    walls: dict[tuple, list[float]] = {k: [] for k in keys}
    heavy: dict[tuple, set[str]] = {k: set() for k in keys}
    codes: dict[tuple, set[int]] = {k: set() for k in keys}
    for _ in range(a.rounds):
        for t, c in keys:
            w, h, rc = time_once(c, results, t)
            walls[t, c].append(w)
            heavy[t, c].update(h)
            codes[t, c].add(rc)
    rows = [(" ".join(c), t, statistics.median(walls[t, c]), max(walls[t, c]), sorted(heavy[t, c]) or ["none"],
             sorted(codes[t, c])) for t, c in keys]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    lines = ["<!-- bench_cli:begin -->", "## The commands that compute nothing (`benchmarks/bench_cli.py`)", "",
             f"- Date: {when}; machine: {os.cpu_count()} cores ({platform.machine()}), Python "
             f"{platform.python_version()}; load average at the end: {load:.1f}",
             f"- Command: `.venv/bin/python benchmarks/bench_cli.py --rounds {a.rounds}"
             f"{' --results ' + a.results if a.results else ''}"
             f"{' --trees ' + ' '.join(a.trees) if len(trees) > 1 else ''}`; "
             f"results folder: {'given' if a.results else 'empty'}; a fresh process per call, output piped", "",
             "| command | tree | wall s, median | max | heavy modules imported | exit codes |",
             "|---|---|---:|---:|---|---|"]
    lines += [f"| `vivit {n}` | {tree_name(t, trees)} | {m:.2f} | {x:.2f} | {', '.join(h)} | {', '.join(map(str, rc))} |"
              for n, t, m, x, h, rc in rows]
    lines.append("<!-- bench_cli:end -->")
    text = "\n".join(lines)
    print(text)
    if a.write_results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_md import replace_block

        replace_block("<!-- bench_cli:begin -->", "<!-- bench_cli:end -->", text)


if __name__ == "__main__":
    main()
