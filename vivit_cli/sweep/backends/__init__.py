"""Dispatch backends: where a cell's `vivit train` runs. Looked up by name: `--backend NAME` imports
`vivit_cli.sweep.backends.NAME` and calls its `make(options)`, so a Ray or SLURM launcher is one more module.

A backend implements `Backend`: `check()` (can it run at all: one-line VivitError if not), `start(...)`
(non-blocking; the scheduler calls it from its one thread), `poll(handle)` (None while running, else the exit
code of `vivit train`: 0 done, 143 preempted/stopped with a checkpoint, anything else failed), `stop(handle)`
and `commands(...)` (what it would run, for `--dry-run --json`).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

from vivit_cli.errors import VivitError

PREEMPTED = 143  # `vivit train`'s exit code after SIGTERM + checkpoint (see vivit_cli/cli/train.py)


@dataclass
class Launch:
    """What to run for one job, or the seeds of one cell as one group process: `vivit <argv...>`, output to
    `log_path`; the child inherits `lock_fds` (every seed's cell lock)."""

    run_id: str  # the job's (a group's first seed's)
    argv: list[str]  # after `vivit`: ["train", "--preset", ..., "--set", ..., "--workdir", ...]
    env: dict[str, str]  # extra environment variables for the trainer
    log_path: Any
    lock_fds: tuple[int, ...] = ()


class Backend:
    name = "?"

    def check(self) -> None:
        """Raises VivitError if this backend cannot run here (a missing tool, a bad option)."""

    def start(self, launch: Launch) -> Any:
        raise NotImplementedError

    def poll(self, handle) -> int | None:
        raise NotImplementedError

    def stop(self, handle) -> None:
        raise NotImplementedError

    def commands(self, launch: Launch) -> list[list[str]]:
        raise NotImplementedError

    def close(self) -> None:
        """Called once when the sweep ends."""


def parse_options(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_-]*", key.strip()):
            raise VivitError(f"--backend-opt {item!r}: expected key=value, e.g. zone=us-central2-b")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def get(name: str, options: dict[str, str] | None = None) -> Backend:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name or ""):
        raise VivitError(f"--backend {name!r}: expected a backend name such as local or tpu")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise VivitError(f"--backend {name!r}: unknown backend (known: local, tpu)") from None
    return module.make(dict(options or {}))
