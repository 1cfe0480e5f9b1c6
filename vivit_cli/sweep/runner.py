"""The scheduler: runs a plan's jobs on a backend, dependencies first, `parallel` at a time.

One thread, one loop: poll what runs, start what may start, refresh the table, sleep a little. What to do
next is decided by two pure functions that tests/test_scheduler.py drives row by row:

`decide(slot, deps, cell)`: a job not running yet            action
  running here, done, failed or blocked already               nothing
  a dependency failed or was blocked                          blocked (dependents of a failure are not run)
  a dependency not done yet                                   wait for it
  dependencies done, the cell not looked at yet               lock the cell and look (`cell` is its state)
  locked by another process                                   wait, then look again (it may be done by then)
  done (under our lock)                                       skip
  done in another grid folder ("shared")                      link it in, then skip
  failed `max_attempts` times                                 report it failed with its error
  new / partial / failed fewer times                          write cell.json, start `vivit train` (it resumes
                                                              from a checkpoint)
The seeds of one cell are decided one by one, each under its own lock, and the ones `decide` says START for
start together, as one group process (`vivit train --seeds`, `group_members`) that inherits every one of their
locks: a cell whose seeds are partly done trains only the others, and a retry retrains only the seed that failed.
`after_exit(rc, cell, restarts, max_attempts)`: a job that ended
  summary "done" (whatever the exit code)                     done
  exit 143, restarted fewer than MAX_RESTARTS times           preempted or stopped with a checkpoint: start it again
  anything else, fewer than `max_attempts` failures           a failed attempt (sweep.json counts them): retry
  anything else, the `max_attempts`-th failure                failed, with its error
A group's exit code is each of its seeds' `rc` (every seed's own summary decides for it).
The result on disk after any interruption is exactly one run folder per cell; running the same sweep again
finishes what is missing.
"""

from __future__ import annotations

import contextlib
import enum
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from vivit_cli.io import read_tail

from . import store as st
from .backends import PREEMPTED, Backend, Launch
from .cells import DEPS_DIR, Job, Plan
from .live import Display, Row

MAX_RESTARTS = 50  # preemptions of one job within one sweep before we stop restarting it
STOP_GRACE = 120  # seconds that running jobs get to checkpoint and exit after Ctrl-C / SIGTERM


class SlotState(enum.Enum):
    """Where a job stands in this sweep (the live table shows the value). RUNNING is launched by this sweep;
    a cell that another process runs (the store's RUNNING) is WAITING here."""

    NEW = "new"  # may start once its dependencies are done
    WAITING = "waiting"  # locked by another process: looked at again on the next pass
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"  # a dependency failed


TERMINAL = (SlotState.DONE, SlotState.FAILED, SlotState.BLOCKED)


def slot_state(cell: st.CellState) -> SlotState:
    """The one mapping from the store's view of a cell to a slot's state."""
    if cell.state == st.DONE:
        return SlotState.DONE
    if cell.state == st.RUNNING:
        return SlotState.WAITING
    if cell.state == st.FAILED and cell.exhausted:
        return SlotState.FAILED
    return SlotState.NEW  # new, partial, shared, failed fewer than max_attempts times


class Action(enum.Enum):
    NOTHING = "nothing"
    WAIT_DEPS = "wait-deps"
    BLOCK = "blocked"
    LOOK = "look"  # take the cell's lock and decide again with the cell's state under it
    WAIT_LOCKED = "wait-locked"
    SKIP_DONE = "skip-done"
    SHARE = "share"
    GIVE_UP = "failed-exhausted"
    START = "start"
    DONE = "done"
    RESTART = "restart-preempted"
    RETRY = "retry"


UNSEEN = object()  # `decide`'s cell before the lock is taken


def decide(slot: SlotState, deps: Sequence[SlotState], cell: st.CellState | None | object = UNSEEN) -> Action:
    """The next step for a job that is not running: `deps` are the states of the slots it depends on, `cell`
    the store's state read under this sweep's lock (None: another process holds the lock; UNSEEN: not locked
    yet, the lock is taken only when the dependencies are done)."""
    if slot not in (SlotState.NEW, SlotState.WAITING):
        return Action.NOTHING
    if any(d in (SlotState.FAILED, SlotState.BLOCKED) for d in deps):
        return Action.BLOCK
    if any(d is not SlotState.DONE for d in deps):
        return Action.WAIT_DEPS
    if cell is UNSEEN:
        return Action.LOOK
    if cell is None:
        return Action.WAIT_LOCKED
    if cell.state == st.DONE:
        return Action.SKIP_DONE
    if cell.state == st.SHARED:
        return Action.SHARE
    if cell.state == st.FAILED and cell.exhausted:
        return Action.GIVE_UP
    return Action.START


def group_members(actions: Sequence[Action]) -> list[int]:
    """Which seeds of a cell start, together as one process: those `decide` said START for (a seed done, shared,
    failed for good or run by another process stays out)."""
    return [i for i, a in enumerate(actions) if a is Action.START]


def after_exit(rc: int, cell: st.CellState, restarts: int, max_attempts: int,
               max_restarts: int = MAX_RESTARTS) -> Action:
    """What a job's end means: `cell` is the store's state after it, `restarts` its preemptions so far."""
    if cell.state == st.DONE:
        return Action.DONE
    if rc == PREEMPTED and restarts < max_restarts:
        return Action.RESTART
    return Action.GIVE_UP if cell.failures + 1 >= max_attempts else Action.RETRY  # this failure counts


# ---- what the trainer is told -------------------------------------------------------------------------

def train_argv(jobs: Job | Sequence[Job], store: st.RunStore, wandb: str | None) -> list[str]:
    """`vivit train` for one job, or for the seeds of one cell as one group: `--seeds 0,1,2` and a workdir with
    {seed} in it, instead of train.seed and one workdir."""
    jobs = [jobs] if isinstance(jobs, Job) else list(jobs)
    job, group = jobs[0], len(jobs) > 1
    argv = [job.kind]
    if job.preset:
        argv += ["--preset", job.preset]
    for item in job.set_args:
        if not (group and item.startswith("train.seed=")):
            argv += ["--set", item]
    if group:
        argv += ["--seeds", ",".join(str(j.seed) for j in jobs), "--workdir", seed_pattern(jobs, store)]
    else:
        argv += ["--workdir", store.workdir(job)]
    if wandb:
        argv += ["--wandb", wandb]
    return argv


def seed_pattern(jobs: Sequence[Job], store: st.RunStore) -> str:
    """The workdir of every seed of a group, with {seed} for the seed (run id = <prefix>-s<seed>)."""
    first, suffix = store.workdir(jobs[0]), f"-s{jobs[0].seed}"
    pattern = first[:-len(suffix)] + "-s{seed}" if first.endswith(suffix) else ""
    if not pattern or any(pattern.replace("{seed}", str(j.seed)) != store.workdir(j) for j in jobs):
        raise ValueError(f"the seeds {[j.run_id for j in jobs]} do not share a workdir pattern")
    return pattern


def launch_for(jobs: Job | Sequence[Job], store: st.RunStore, wandb: str | None,
               lock_fds: Sequence[int] = ()) -> Launch:
    """One job's launch, or one for the seeds of a cell (logged to the first seed's train.log)."""
    jobs = [jobs] if isinstance(jobs, Job) else list(jobs)
    return Launch(run_id=jobs[0].run_id, argv=train_argv(jobs, store, wandb),
                  env={"VIVIT_RESULTS": store.results_url()}, log_path=store.log_path(jobs[0]),
                  lock_fds=tuple(lock_fds))


def error_from_log(path) -> str | None:
    """The most telling line of a crashed run's log: the last error-looking line, else the last line."""
    lines = [ln.strip() for ln in read_tail(path, 4000).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("error:", "Error", "Traceback")) or "Error:" in ln or "Exception" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else None


def failure_reason(cell: st.CellState, handle, log_path, rc: int) -> str:
    """The trainer's own error (summary.json), else the backend's, else the log's, else the exit code."""
    return (cell.error if cell.state == st.FAILED and cell.error != "failed" else None) \
        or getattr(handle, "error", None) or error_from_log(log_path) or f"exit code {rc}"


# ---- a job in this sweep -------------------------------------------------------------------------------

@dataclass
class Slot:
    job: Job
    row: Row
    state: SlotState = SlotState.NEW
    handle: object = None  # the backend's, while RUNNING (the same for every seed of a group process)
    lock: st.Lock | None = None  # the cell's lock, held while RUNNING (the trainer shares it)
    restarts: int = 0
    argv: list[str] = field(default_factory=list)  # what was started for it (a group's command)
    log: object = None  # where its process logs (a group's: its first seed's train.log)

    def show(self, state: SlotState, **row) -> None:
        self.state = state
        self.row.state = state.value
        for k, v in row.items():
            setattr(self.row, k, v)


def row_for(job: Job) -> Row:
    return Row(key=f"{job.grid}/{job.run_id}", grid=job.grid, cell=job.labels.get("row") or job.cell,
               column=job.labels.get("column", ""),
               seed=job.seed, run_id=job.run_id, state=SlotState.NEW.value,
               steps=getattr(getattr(job.config, "train", None), "steps", None))


def show_opening(s: Slot, cell: st.CellState) -> None:
    """The table before anything runs: what is done already, what resumes, what another process runs."""
    state = slot_state(cell)
    note = {st.PARTIAL: "partial", st.SHARED: f"shared from {cell.shared_from}"}.get(cell.state, "")
    s.show(state, top1=cell.top1, note=note or cell.stale or "", error=cell.error if state is SlotState.FAILED else None)


def dep_states(s: Slot, by_id: dict[str, list[Slot]]) -> list[SlotState]:
    return [d.state for dep in s.job.deps for d in by_id.get(dep, [])]


def try_start(group: list[Slot], deps: list[SlotState], store: st.RunStore, backend: Backend,
              wandb: str | None) -> bool:
    """Does what `decide` says for the seeds of one cell not running yet, each under its own lock; the ones it
    says START for start as one process (`group_members`), which inherits all their locks. True when one started."""
    with contextlib.ExitStack() as stack:
        actions, cells, held = [], [], []
        for s in group:
            action, cell, lock = decide(s.state, deps), None, None
            if action is Action.LOOK:
                lock = stack.enter_context(store.locked(s.job))
                cell = store.state(s.job, check_lock=False) if lock else None  # under the lock: the truth now
                action = decide(s.state, deps, cell)
                if action is Action.SHARE:
                    store.share(s.job, store.shared_source(s.job))
            actions.append(action)
            cells.append(cell)
            held.append(lock)
        starting = group_members(actions)
        if starting:
            jobs = [group[i].job for i in starting]
            for job in jobs:
                store.prepare(job)
            launch = launch_for(jobs, store, wandb, [held[i].fd for i in starting])
            for job in jobs[1:]:  # one process, one log: the other seeds' logs say where it is
                store.append_log(job, f"trained together with {jobs[0].run_id} as one group process "
                                      f"(`vivit train --seeds`): its log is {launch.log_path}")
            handle = backend.start(launch)
            for i in starting:
                s = group[i]
                s.handle, s.argv, s.log = handle, launch.argv, launch.log_path
                s.lock = held[i].hand_over()  # the job keeps the lock past this block; `finish` releases it
    for s, action, cell in zip(group, actions, cells):
        show_decision(s, action, cell, store)
    return bool(starting)


def show_decision(s: Slot, action: Action, cell: st.CellState | None, store: st.RunStore) -> None:
    """The slot's state after `decide`'s `action`."""
    if action is Action.BLOCK:
        s.show(SlotState.BLOCKED, error="a dependency failed")
    elif action is Action.WAIT_LOCKED:
        s.show(SlotState.WAITING, note="running in another process")
    elif action is Action.SKIP_DONE:
        s.show(SlotState.DONE, top1=cell.top1, note=f"from {cell.shared_from}" if cell.shared_from else "")
    elif action is Action.SHARE:
        s.show(SlotState.DONE, top1=store.state(s.job, check_lock=False).top1, note=f"from {cell.shared_from}")
    elif action is Action.GIVE_UP:
        s.show(SlotState.FAILED, error=cell.error)
    elif action is Action.START:
        s.show(SlotState.RUNNING, started=time.time(), ended=None, error=None, step=cell.step,
               note="resuming" if cell.state == st.PARTIAL else "")


def finish(s: Slot, rc: int, store: st.RunStore, wandb: str | None) -> None:
    """Records how a job ended (sweep.json) and what comes next for it."""
    cell = store.state(s.job, check_lock=False)
    s.row.ended = time.time()
    command = ["vivit", *s.argv]
    action = after_exit(rc, cell, s.restarts, store.max_attempts)
    if action is Action.DONE:
        store.record(s.job, "done", rc=rc, command=command)
        s.show(SlotState.DONE, top1=cell.top1)
    elif action is Action.RESTART:
        store.record(s.job, "preempted", rc=rc, command=command)
        s.restarts += 1
        s.show(SlotState.NEW, note=f"preempted x{s.restarts}, resuming")
    else:
        error = failure_reason(cell, s.handle, s.log, rc)
        store.record(s.job, "failed", rc=rc, error=error, command=command)
        if action is Action.GIVE_UP:
            s.show(SlotState.FAILED, error=f"{error} ({cell.failures + 1} attempts)")
        else:
            s.show(SlotState.NEW, note=f"failed ({cell.failures + 1}/{store.max_attempts}), retrying: {error}")
    s.lock.release()  # after the record: no other sweep starts the cell before sweep.json says how it ended
    s.handle, s.lock = None, None


def poll_running(slots: list[Slot], store: st.RunStore, backend: Backend, wandb: str | None) -> None:
    codes: dict[int, int | None] = {}  # one poll per process: a group's seeds share it
    for s in slots:
        if s.state is not SlotState.RUNNING:
            continue
        key = id(s.handle)
        if key not in codes:
            codes[key] = backend.poll(s.handle)
        if codes[key] is not None:
            finish(s, codes[key], store, wandb)
        elif not store.remote:  # a gs:// metrics.jsonl is not worth a request every poll
            s.row.step = store.last_step(s.job) or s.row.step


def start_order(slots: Sequence[Slot]) -> list[Slot]:
    """Dependencies first, then the costliest cell first, ties (a cell's seeds among them) in the plan's order.
    Longest first leaves the least idle at the end of a sweep: by the group times of the main job at 2
    processes, the model-variants grid would end about a minute sooner than in the plan's order."""
    return sorted(slots, key=lambda s: (s.job.grid != DEPS_DIR, -s.job.cost))


def groups_of(slots: list[Slot]) -> list[list[Slot]]:
    """The slots of each cell's seeds (`Job.group`), in the slots' order."""
    groups: dict[str, list[Slot]] = {}
    for s in slots:
        groups.setdefault(s.job.group, []).append(s)
    return list(groups.values())


def running_processes(slots: list[Slot]) -> int:
    return len({id(s.handle) for s in slots if s.state is SlotState.RUNNING})


def start_what_may_start(slots: list[Slot], by_id: dict[str, list[Slot]], parallel: int, store: st.RunStore,
                         backend: Backend, wandb: str | None) -> None:
    """Starts cells while fewer than `parallel` processes run (a group of seeds is one)."""
    active = running_processes(slots)
    for group in groups_of(slots):
        if active >= parallel:
            break
        if try_start(group, dep_states(group[0], by_id), store, backend, wandb):
            active += 1


def stop_running(slots: list[Slot], backend: Backend) -> None:
    """Ctrl-C / SIGTERM: asks every running job to checkpoint and stop, and waits for it, so the next sweep
    resumes instead of starting over."""
    running = [s for s in slots if s.state is SlotState.RUNNING]
    for handle in {id(s.handle): s.handle for s in running}.values():  # a group's process once
        backend.stop(handle)
    deadline = time.time() + STOP_GRACE
    for s in running:
        while backend.poll(s.handle) is None and time.time() < deadline:
            time.sleep(0.2)
    for s in slots:  # every lock still held, also one whose job was being recorded when the signal came
        if s.lock is not None:
            s.lock.release()


@dataclass
class SweepResult:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run id -> error

    @property
    def ok(self) -> bool:
        return not self.failed


def result_of(slots: list[Slot]) -> SweepResult:
    result = SweepResult()
    for s in slots:
        if s.state is SlotState.DONE:
            result.done.append(s.job.run_id)
        else:
            result.failed[s.job.run_id] = s.row.error or s.state.value
    return result


def _sigterm_as_interrupt():
    """SIGTERM to the sweep stops it like Ctrl-C: running jobs checkpoint before it exits."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def run(plan: Plan, store: st.RunStore, backend: Backend, *, parallel: int = 1, wandb: str | None = None,
        poll: float = 0.5, live: bool | None = None) -> SweepResult:
    slots = [Slot(job, row_for(job)) for job in plan.jobs]
    queue = start_order(slots)  # once: a job's cost is analytic, but the loop below polls twice a second
    by_id: dict[str, list[Slot]] = {}
    for s in slots:
        by_id.setdefault(s.job.run_id, []).append(s)
    store.record_plan(plan.jobs)
    for s in slots:
        show_opening(s, store.state(s.job))
    display = Display(f"vivit sweep {plan.grid.name}", [s.row for s in slots])
    if live is not None:
        display.live = live
    previous = _sigterm_as_interrupt()
    try:
        with display:
            while True:
                poll_running(slots, store, backend, wandb)
                start_what_may_start(queue, by_id, parallel, store, backend, wandb)
                display.refresh()
                if all(s.state in TERMINAL for s in slots):
                    break
                time.sleep(poll)
    except BaseException:
        stop_running(slots, backend)
        raise
    finally:
        backend.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result_of(slots)
