"""The run store: `<results>/<grid>/<run-id>/` = a training workdir + cell.json + sweep.json.

States of a cell (what `--dry-run` and `vivit status` print):
  done     summary.json says "done" (the only proof of completion; a log or a checkpoint is not)
  running  another process holds the cell's lock (a sweep, or the trainer it started)
  failed   the last attempt failed (summary.json "failed", or the process died without one); retried until
           `max_attempts` failures, then reported with its error
  shared   not here, but done in another grid folder: linked in instead of trained again
  partial  a checkpoint exists: the trainer resumes from it
  new      nothing yet

Locks are `flock`s on `<results>/.locks/<run-id>.lock` (local results) or under the cache (gs:// results),
taken with `with store.locked(job) as held:` (`held` is None when another process holds it). The sweep passes
the locked descriptor to the trainer it starts and keeps it past the block (`held.hand_over()`), so the lock
lives as long as either does:
a sweep killed with -9 and restarted waits for the orphaned trainer (which got SIGTERM and is saving a
checkpoint) instead of starting a second writer on the same folder. The kernel drops a lock when its last
holder dies, so no stale lock survives a kill.

Results may live on gs://: paths go through `vivit_cli.io` (etils epath there, pathlib locally, which keeps
`--dry-run` fast).
Sharing a done run between grids: files are hard-linked (copied where links are impossible, e.g. gs://),
summary.json last, so a half-done share is never mistaken for a done run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vivit_cli.errors import VivitError
from vivit_cli.io import as_path, is_remote, read_json, read_tail, write_json

from .cells import DEPS_DIR, Job

NEW, DONE, PARTIAL, FAILED, RUNNING, SHARED = "new", "done", "partial", "failed", "running", "shared"
STATES = (NEW, DONE, PARTIAL, FAILED, RUNNING, SHARED)
SWEEP_FILES = ("cell.json", "sweep.json", "train.log")  # per-grid files that a share does not copy


@dataclass
class CellState:
    state: str
    error: str | None = None
    failures: int = 0
    shared_from: str | None = None
    top1: float | None = None
    step: int | None = None
    exhausted: bool = False  # failed max_attempts times: not retried, reported as failed
    numerics: int | None = None  # a done run's `models.NUMERICS_VERSION` (None: trained before runs recorded it)

    @property
    def stale(self) -> str | None:
        """For a done run trained by model code that computes differently from this one, why its numbers may
        not match a rerun (run ids hash the config, not the code, so a sweep keeps such runs)."""
        if self.state != DONE:  # before the import: `sweep --dry-run` over undone cells needs no numpy
            return None
        from vivit_cli.models import NUMERICS_VERSION, numerics_label  # no JAX: beside the pure-Python FLOPs

        if self.numerics == NUMERICS_VERSION:
            return None
        return f"older numerics version ({numerics_label(self.numerics)}, now {NUMERICS_VERSION})"


class Lock:
    """A held `flock` on a cell's lock file. The descriptor is closed here and nowhere else, once: `release`
    may be called any number of times (a job's end, Ctrl-C, the `locked` block's exit)."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def hand_over(self) -> Lock:
        """A new owner of the descriptor (for a job that runs past the `locked` block); this one lets go."""
        fd, self.fd = self.fd, None
        return Lock(fd)


def _flock(path, flags: int) -> Lock | None:
    """The lock on `path` if it is free, else None (another process holds it). Opening errors propagate."""
    held = Lock(os.open(path, flags, 0o644))
    try:
        fcntl.flock(held.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        held.release()
        return None
    return held


def check_writable(root: str) -> None:
    """Before touching anything: the results dir (or the folder it will be created in) must be writable."""
    if is_remote(root):
        return  # gs:// permissions show on the first write; checking needs credentials we do not look for
    p = Path(root).absolute()
    if p.exists() and not p.is_dir():
        raise VivitError(f"--results {root}: exists and is not a folder")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise VivitError(f"--results {root}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise VivitError(f"--results {root}: {probe} is not writable")


class RunStore:
    def __init__(self, root: str | os.PathLike, max_attempts: int = 3):
        self.url = str(root)
        self.root = as_path(root)
        self.remote = is_remote(self.url)
        self.max_attempts = max_attempts
        if self.remote:
            from vivit_cli.runtime import cache_root

            self.lock_dir = cache_root() / "locks" / hashlib.sha1(self.url.encode()).hexdigest()[:12]
            self.log_dir = cache_root() / "sweep-logs" / hashlib.sha1(self.url.encode()).hexdigest()[:12]
        else:
            self.lock_dir = Path(root) / ".locks"
            self.log_dir = None

    # ---- paths ---------------------------------------------------------------------------------------
    def run_dir(self, job: Job):
        return self.root / job.grid / job.run_id

    def workdir(self, job: Job) -> str:
        """The trainer's --workdir: absolute locally (the trainer may run elsewhere), the URL remotely."""
        return str(self.run_dir(job)) if self.remote else str(Path(self.run_dir(job)).absolute())

    def results_url(self) -> str:
        return self.url if self.remote else str(Path(self.url).absolute())

    def log_path(self, job: Job) -> Path:
        if self.log_dir is None:
            return Path(self.run_dir(job)) / "train.log"
        return self.log_dir / job.grid / f"{job.run_id}.log"

    # ---- state ---------------------------------------------------------------------------------------
    def _locked_by_other(self, job: Job) -> bool:
        try:  # read-only and without creating the file: `status` and `--dry-run` write nothing
            held = _flock(self.lock_dir / f"{job.run_id}.lock", os.O_RDONLY)
        except OSError:
            return False
        if held is None:
            return True
        held.release()
        return False

    def shared_source(self, job: Job):
        """The folder of a done run with this run id in another grid folder, if any."""
        if job.grid == DEPS_DIR:
            return None
        try:
            grids = [g for g in self.root.iterdir() if g.name[:1] not in "._" and g.name != job.grid]
        except OSError:
            return None
        for g in sorted(grids, key=lambda g: g.name):
            summary = read_json(g / job.run_id / "summary.json")
            if isinstance(summary, dict) and summary.get("status") == DONE:
                return g / job.run_id
        return None

    def state(self, job: Job, *, check_lock: bool = True) -> CellState:
        d = self.run_dir(job)
        summary = read_json(d / "summary.json")
        summary = summary if isinstance(summary, dict) else {}
        if summary.get("status") == DONE:
            cell = read_json(d / "cell.json") or {}
            numerics = summary.get("numerics")
            return CellState(DONE, top1=summary.get("top1"), shared_from=cell.get("shared_from"),
                             numerics=numerics if isinstance(numerics, int) else None)
        if check_lock and self._locked_by_other(job):
            return CellState(RUNNING, step=self.last_step(job))
        record = read_json(d / "sweep.json") or {}
        failures = int(record.get("failures", 0))
        if summary.get("status") == "failed" or record.get("last") == FAILED:
            error = summary.get("error") if summary.get("status") == "failed" else None
            return CellState(FAILED, error=error or record.get("error") or "failed", failures=failures,
                             exhausted=failures >= self.max_attempts)
        src = self.shared_source(job)
        if src is not None:
            return CellState(SHARED, shared_from=f"{src.parent.name}/{src.name}", failures=failures)
        if self.has_checkpoint(job):
            return CellState(PARTIAL, failures=failures, step=self.last_step(job))
        return CellState(NEW, failures=failures)

    def has_checkpoint(self, job: Job) -> bool:
        from vivit_cli.runtime.checkpoint import has_checkpoints

        return has_checkpoints(self.run_dir(job))

    def last_step(self, job: Job) -> int | None:
        """The last logged step, from the tail of metrics.jsonl (cheap enough to poll for a live table)."""
        for line in reversed(read_tail(self.run_dir(job) / "metrics.jsonl", 4096).splitlines()):
            try:
                return int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                continue
        return None

    # ---- the plan: every cell a sweep was asked for, so `vivit status` lists the ones not started yet -----
    def plan_path(self, grid: str):
        # Beside the grid folders, not in them: a grid folder holds run folders only.
        return self.root / ".plans" / f"{grid}.json"

    def planned(self, grid: str) -> list[dict]:
        """cell.json records of the cells sweeps of `grid` were asked for (empty when none was recorded)."""
        plan = read_json(self.plan_path(grid))
        return [c for c in plan.get("cells", []) if isinstance(c, dict) and c.get("run_id")] \
            if isinstance(plan, dict) else []

    def record_plan(self, jobs: list[Job]) -> None:
        """Adds `jobs` to their grid folders' plans (a union: sweeps with other seeds or cells add to it)."""
        by_grid: dict[str, list[Job]] = {}
        for job in jobs:
            by_grid.setdefault(job.grid, []).append(job)
        for grid, grid_jobs in by_grid.items():
            cells = {c["run_id"]: c for c in self.planned(grid)}
            cells.update({j.run_id: j.cell_record() for j in grid_jobs})
            write_json(self.plan_path(grid), {"grid": grid, "cells": list(cells.values())})

    # ---- writes (only while a sweep runs) -------------------------------------------------------------
    @contextmanager
    def locked(self, job: Job) -> Iterator[Lock | None]:
        """The cell's lock for the block (None when another process holds it), released when the block ends
        unless handed over (`held.hand_over()`) to a job that outlives it."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        held = _flock(self.lock_dir / f"{job.run_id}.lock", os.O_RDWR | os.O_CREAT)
        try:
            yield held
        finally:
            if held is not None:
                held.release()

    def prepare(self, job: Job, extra: dict | None = None) -> None:
        """Writes cell.json before the run starts (the trainer reads its run id from it)."""
        d = self.run_dir(job)
        d.mkdir(parents=True, exist_ok=True)
        record = job.cell_record() | (extra or {})
        if read_json(d / "cell.json") != json.loads(json.dumps(record, default=str)):
            write_json(d / "cell.json", record)

    def append_log(self, job: Job, line: str) -> None:
        """Adds one dated line to the job's train.log (a seed trained in another seed's group process: where its
        log is)."""
        path = self.log_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

    def record(self, job: Job, outcome: str, *, rc: int | None, error: str | None = None,
               command: list[str] | None = None) -> None:
        """Appends an attempt to sweep.json: what ran, how it ended, how many failures so far."""
        d = self.run_dir(job)
        rec = read_json(d / "sweep.json") or {}
        history = list(rec.get("history", []))[-19:]
        history.append({"outcome": outcome, "rc": rc, "error": error, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")})
        rec.update(history=history, last=outcome, attempts=int(rec.get("attempts", 0)) + 1,
                   failures=int(rec.get("failures", 0)) + (outcome == FAILED), error=error)
        if command:
            rec["command"] = command
        write_json(d / "sweep.json", rec)

    def share(self, job: Job, src) -> None:
        """Makes this grid's folder hold the done run `src` (same run id, another grid)."""
        dst = self.run_dir(job)
        dst.mkdir(parents=True, exist_ok=True)
        files = [p for p in _walk(src) if p.name not in SWEEP_FILES]
        summary = [p for p in files if p.name == "summary.json" and p.parent == src]
        for p in files:
            if p not in summary:
                _link_or_copy(p, dst / str(p.relative_to(src)))
        self.prepare(job, {"shared_from": f"{src.parent.name}/{src.name}"})
        for p in summary:  # last: its presence means done
            _link_or_copy(p, dst / "summary.json", atomic=True)


def _walk(root):
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.is_dir():
            yield from _walk(p)
        else:
            yield p


def _link_or_copy(src, dst, atomic: bool = False) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, Path) and isinstance(dst, Path):
        tmp = dst.with_name(f".{dst.name}.share-tmp")
        try:
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        return
    dst.write_bytes(src.read_bytes())
