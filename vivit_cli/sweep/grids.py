"""Finding and loading grid files: `experiments/<name>.py`, or any `path/to/grid.py`.

A grid file is plain Python with:
  TABLE   the report table it feeds (a name in `vivit_cli.report.tables.TABLES`)
  BASE    dotted-key overrides on top of the preset, shared by every cell
  cells(base, preset) -> list[Point]   the cells; `base` is the resolved base Config (preset + BASE + --set)
and a docstring whose first line says what the grid is. Files starting with `_` are not grids.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from vivit_cli.errors import VivitError


@dataclass(frozen=True)
class GridSpec:
    name: str
    path: Path
    table: str | None
    base: dict[str, Any]
    cells: Callable
    doc: str

    @property
    def title(self) -> str:
        return (self.doc.strip().splitlines() or [""])[0]


def experiments_dir() -> Path:
    """$VIVIT_EXPERIMENTS, else `experiments/` next to the package (a source checkout), else ./experiments."""
    env = os.environ.get("VIVIT_EXPERIMENTS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "experiments"
    return here if here.is_dir() else Path("experiments")


def available() -> list[str]:
    d = experiments_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.py") if not p.name.startswith("_"))


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"vivit_grid_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except VivitError:
        raise
    except Exception as e:  # a broken grid file is bad input: name the file and the problem
        raise VivitError(f"grid file {path}: {type(e).__name__}: {e}") from None
    return module


def load(grid: str) -> GridSpec:
    """A grid by name (`embed-ablation`) or by path (`my_grids/lr.py`)."""
    if grid.endswith(".py") or os.sep in grid:
        path = Path(grid)
        if not path.is_file():
            raise VivitError(f"grid file {grid!r} does not exist")
        name = path.stem
    else:
        path = experiments_dir() / f"{grid}.py"
        if not path.is_file() or grid.startswith("_"):
            known = ", ".join(available()) or f"(none found in {experiments_dir()})"
            raise VivitError(f"unknown grid {grid!r}: known grids are {known}")
        name = grid
    module = _import(path, name)
    cells = getattr(module, "cells", None)
    if not callable(cells):
        raise VivitError(f"grid file {path}: defines no cells(base, preset) function")
    base = getattr(module, "BASE", {}) or {}
    if not isinstance(base, dict):
        raise VivitError(f"grid file {path}: BASE must be a dict of dotted-key overrides")
    return GridSpec(name=getattr(module, "NAME", name), path=path, table=getattr(module, "TABLE", None),
                    base=dict(base), cells=cells, doc=module.__doc__ or "")
