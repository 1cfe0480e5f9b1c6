"""The scheduler: runs a plan's jobs on a backend, dependencies first, `parallel` at a time.

One thread, one loop: start what may start, poll what runs, refresh the table, sleep a little. For each job:
  done                        skip (or link in a done run of another grid: "shared")
  new / partial / failed      lock it, write cell.json, start `vivit train` (which resumes from a checkpoint)
  locked by another process   wait, then look again (it may be done by then)
  exit 0 + summary "done"     done
  exit 143                    preempted or stopped with a checkpoint: start it again
  anything else               a failed attempt (sweep.json counts them): retried until `max_attempts`, then
                              reported as failed with its error; cells that depend on it are not run
The result on disk after any interruption is exactly one run folder per cell; running the same sweep again
finishes what is missing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

from . import store as st
from .backends import PREEMPTED, Backend, Launch
from .cells import Job, Plan
from .live import Display, Row

MAX_RESTARTS = 50  # preemptions of one job within one sweep before we stop restarting it


def train_argv(job: Job, store: st.RunStore, wandb: str | None) -> list[str]:
    argv = [job.kind]
    if job.preset:
        argv += ["--preset", job.preset]
    for item in job.set_args:
        argv += ["--set", item]
    argv += ["--workdir", store.workdir(job)]
    if wandb:
        argv += ["--wandb", wandb]
    return argv


def launch_for(job: Job, store: st.RunStore, wandb: str | None, lock_fd: int | None = None) -> Launch:
    return Launch(run_id=job.run_id, argv=train_argv(job, store, wandb),
                  env={"VIVIT_RESULTS": store.results_url()}, log_path=store.log_path(job), lock_fd=lock_fd)


def _tail(path, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _error_from_log(path) -> str | None:
    """The most telling line of a crashed run's log: the last error-looking line, else the last line."""
    lines = [ln.strip() for ln in _tail(path).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("error:", "Error", "Traceback")) or "Error:" in ln or "Exception" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else None


@dataclass
class _Slot:
    job: Job
    row: Row
    state: str = "new"  # new | waiting | running | done | failed | blocked
    handle: object = None
    lock_fd: int | None = None
    restarts: int = 0
    error: str | None = None


@dataclass
class SweepResult:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run id -> error

    @property
    def ok(self) -> bool:
        return not self.failed


def _sigterm_as_interrupt():
    """SIGTERM to the sweep stops it like Ctrl-C: running jobs checkpoint before it exits."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def row_for(job: Job) -> Row:
    return Row(key=f"{job.grid}/{job.run_id}", grid=job.grid, cell=job.labels.get("row") or job.cell,
               column=job.labels.get("column", ""),
               seed=job.seed, run_id=job.run_id, state="new",
               steps=getattr(getattr(job.config, "train", None), "steps", None))


def run(plan: Plan, store: st.RunStore, backend: Backend, *, parallel: int = 1, wandb: str | None = None,
        poll: float = 0.5, live: bool | None = None) -> SweepResult:
    slots = [_Slot(job, row_for(job)) for job in plan.jobs]
    store.record_plan(plan.jobs)
    by_id = {}
    for s in slots:
        by_id.setdefault(s.job.run_id, []).append(s)
    display = Display(f"vivit sweep {plan.grid.name}", [s.row for s in slots])
    if live is not None:
        display.live = live

    def set_state(s: _Slot, state: str, **kw) -> None:
        s.state = state
        s.row.state = state
        for k, v in kw.items():
            setattr(s.row, k, v)

    def deps_ready(s: _Slot) -> bool | None:
        """True: go; False: wait; None: a dependency failed for good."""
        for dep in s.job.deps:
            states = [d.state for d in by_id.get(dep, [])]
            if "failed" in states or "blocked" in states:
                return None
            if states and not all(x == "done" for x in states):
                return False
        return True

    def try_start(s: _Slot) -> bool:
        ready = deps_ready(s)
        if ready is None:
            set_state(s, "blocked", error="a dependency failed")
            return False
        if not ready:
            return False
        fd = store.lock(s.job)
        if fd is None:
            set_state(s, "waiting", note="running in another process")
            return False
        cur = store.state(s.job, check_lock=False)  # under the lock: the truth now
        if cur.state == st.DONE:
            os.close(fd)
            set_state(s, "done", top1=cur.top1, note=f"from {cur.shared_from}" if cur.shared_from else "")
            return False
        if cur.state == st.SHARED:
            try:
                store.share(s.job, store.shared_source(s.job))
            finally:
                os.close(fd)
            set_state(s, "done", top1=store.state(s.job, check_lock=False).top1, note=f"from {cur.shared_from}")
            return False
        if cur.state == st.FAILED and cur.exhausted:
            os.close(fd)
            set_state(s, "failed", error=cur.error)
            return False
        store.prepare(s.job)
        launch = launch_for(s.job, store, wandb, fd)
        s.handle, s.lock_fd = backend.start(launch), fd
        set_state(s, "running", started=time.time(), ended=None, error=None,
                  note="resuming" if cur.state == st.PARTIAL else "")
        s.row.step = cur.step
        return True

    def finish(s: _Slot, rc: int) -> None:
        if s.lock_fd is not None:
            os.close(s.lock_fd)
            s.lock_fd = None
        cur = store.state(s.job, check_lock=False)
        s.row.ended = time.time()
        command = ["vivit", *train_argv(s.job, store, wandb)]
        if cur.state == st.DONE:
            store.record(s.job, "done", rc=rc, command=command)
            set_state(s, "done", top1=cur.top1)
        elif rc == PREEMPTED and s.restarts < MAX_RESTARTS:
            store.record(s.job, "preempted", rc=rc, command=command)
            s.restarts += 1
            set_state(s, "new", note=f"preempted x{s.restarts}, resuming")
        else:
            error = (cur.error if cur.state == st.FAILED and cur.error != "failed" else None) \
                or getattr(s.handle, "error", None) or _error_from_log(store.log_path(s.job)) or f"exit code {rc}"
            store.record(s.job, "failed", rc=rc, error=error, command=command)
            after = store.state(s.job, check_lock=False)
            if after.exhausted:
                set_state(s, "failed", error=f"{error} ({after.failures} attempts)")
            else:
                set_state(s, "new", note=f"failed ({after.failures}/{store.max_attempts}), retrying: {error}")
        s.handle = None

    for s in slots:  # the opening picture: what is done already
        cur = store.state(s.job)
        set_state(s, {st.DONE: "done", st.RUNNING: "waiting"}.get(cur.state, "new"), top1=cur.top1,
                  note={st.PARTIAL: "partial", st.SHARED: f"shared from {cur.shared_from}"}.get(cur.state, "")
                  or cur.stale or "")
        if cur.state == st.FAILED and cur.exhausted:
            set_state(s, "failed", error=cur.error)

    previous = _sigterm_as_interrupt()
    try:
        with display:
            while True:
                running = [s for s in slots if s.state == "running"]
                for s in running:
                    rc = backend.poll(s.handle)
                    if rc is None:
                        if store.log_dir is None:
                            s.row.step = store.last_step(s.job) or s.row.step
                    else:
                        finish(s, rc)
                active = sum(s.state == "running" for s in slots)
                for s in slots:
                    if active >= parallel:
                        break
                    if s.state in ("new", "waiting") and try_start(s):
                        active += 1
                display.refresh()
                if all(s.state in ("done", "failed", "blocked") for s in slots):
                    break
                time.sleep(poll)
    except BaseException:
        # Ctrl-C / SIGTERM: ask every running job to checkpoint and stop, and wait for it, so the next
        # sweep resumes instead of starting over.
        for s in slots:
            if s.state == "running":
                backend.stop(s.handle)
        deadline = time.time() + 120
        for s in slots:
            while s.state == "running" and backend.poll(s.handle) is None and time.time() < deadline:
                time.sleep(0.2)
            if s.lock_fd is not None:
                os.close(s.lock_fd)
                s.lock_fd = None
        raise
    finally:
        backend.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    result = SweepResult()
    for s in slots:
        if s.state == "done":
            result.done.append(s.job.run_id)
        else:
            result.failed[s.job.run_id] = s.row.error or s.state
    return result
