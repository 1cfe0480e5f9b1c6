"""The house rules of docs/DESIGN.md, checked on the source: which package may import which, and what importing
the package does. Read from the files' import statements (deferred imports inside functions included), so a
cycle cannot hide behind a function-level import."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vivit_cli"

# What train/ may use of itself, seen from bench/: the step and the state it trains (bench measures exactly
# the trainer's step). Everything else bench, eval and sweep need lives in runtime/.
TRAIN_CORE = {"vivit_cli.train.step", "vivit_cli.train.state", "vivit_cli.train.optim", "vivit_cli.train.losses"}


def _module_name(path: Path) -> tuple[str, bool]:
    parts = path.relative_to(ROOT).with_suffix("").parts
    is_pkg = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_pkg else parts), is_pkg


def _imports(path: Path) -> set[str]:
    """Every vivit_cli module `path` imports, relative imports resolved; `from pkg import name` counts as
    pkg.name when that is a module, else pkg."""
    mod, is_pkg = _module_name(path)
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "vivit_cli")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "vivit_cli":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (ROOT / Path(*sub.split("."))).is_dir()
                out.add(sub if is_module else target)
    return out


def _graph() -> dict[str, set[str]]:
    return {_module_name(p)[0]: _imports(p) for p in PKG.rglob("*.py")}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_packages_form_a_one_way_graph():
    """No package of vivit_cli imports from a package that imports it back (directly or through others)."""
    edges = defaultdict(set)
    for mod, targets in _graph().items():
        for t in targets:
            a, b = _package(mod), _package(t)
            if a and b and a != b:
                edges[a].add(b)

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, seen + (n,))) for n in edges.get(start, ()))

    cycles = sorted(f"{a} <-> {b}" for a in list(edges) for b in edges[a] if reaches(b, a))
    assert not cycles, f"import cycles between packages: {cycles}"


def test_train_does_not_import_bench_and_the_others_use_the_shared_layer():
    graph = _graph()
    bad = []
    for mod, targets in graph.items():
        pkg = _package(mod)
        for t in targets:
            if pkg == "train" and _package(t) == "bench":
                bad.append(f"{mod} -> {t}")
            if pkg in ("eval", "sweep", "report", "interop", "data", "models", "runtime") and _package(t) == "train":
                bad.append(f"{mod} -> {t}")
            if pkg == "bench" and _package(t) == "train" and t not in TRAIN_CORE | {"vivit_cli.train"}:
                bad.append(f"{mod} -> {t}")
    assert not bad, "imports across the layers: " + "; ".join(sorted(bad))


def test_importing_the_package_sets_no_environment_variable():
    probe = ("import os, json; before = dict(os.environ); import vivit_cli, vivit_cli.runtime, vivit_cli.train, "
             "vivit_cli.eval, vivit_cli.sweep, vivit_cli.report, vivit_cli.models, vivit_cli.data; "
             "print(json.dumps(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
