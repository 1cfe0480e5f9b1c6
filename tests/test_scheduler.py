"""The sweep scheduler's decisions, without a backend or a trainer: every row of `sweep/runner.py`'s table is
a case here, plus the one mapping from the store's states and the cell lock's context manager."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from vivit_cli.sweep import store as st
from vivit_cli.sweep.runner import MAX_RESTARTS, UNSEEN, Action, SlotState, after_exit, decide, group_members, \
    slot_state

S = SlotState
NEW, PARTIAL, DONE, SHARED = st.CellState(st.NEW), st.CellState(st.PARTIAL), st.CellState(st.DONE), \
    st.CellState(st.SHARED, shared_from="other/abc-s0")
FAILED_ONCE = st.CellState(st.FAILED, error="loss became nan", failures=1)
EXHAUSTED = st.CellState(st.FAILED, error="loss became nan", failures=3, exhausted=True)

DECIDE = [
    # slot, dependencies' slots, the cell under our lock (UNSEEN: not locked yet; None: locked elsewhere) -> action
    pytest.param(S.RUNNING, [], UNSEEN, Action.NOTHING, id="running here"),
    pytest.param(S.DONE, [], UNSEEN, Action.NOTHING, id="done already"),
    pytest.param(S.FAILED, [], UNSEEN, Action.NOTHING, id="failed already"),
    pytest.param(S.BLOCKED, [], UNSEEN, Action.NOTHING, id="blocked already"),
    pytest.param(S.NEW, [S.FAILED], UNSEEN, Action.BLOCK, id="dependency failed"),
    pytest.param(S.NEW, [S.DONE, S.BLOCKED], UNSEEN, Action.BLOCK, id="dependency blocked"),
    pytest.param(S.NEW, [S.RUNNING, S.FAILED], UNSEEN, Action.BLOCK, id="one dependency runs, one failed"),
    pytest.param(S.NEW, [S.RUNNING], UNSEEN, Action.WAIT_DEPS, id="dependency running"),
    pytest.param(S.WAITING, [S.DONE, S.NEW], UNSEEN, Action.WAIT_DEPS, id="dependency not started"),
    pytest.param(S.NEW, [], UNSEEN, Action.LOOK, id="no dependencies: lock and look"),
    pytest.param(S.WAITING, [S.DONE], UNSEEN, Action.LOOK, id="dependencies done: lock and look"),
    pytest.param(S.NEW, [], None, Action.WAIT_LOCKED, id="locked by another process"),
    pytest.param(S.WAITING, [], None, Action.WAIT_LOCKED, id="still locked by another process"),
    pytest.param(S.WAITING, [], DONE, Action.SKIP_DONE, id="done by the other process meanwhile"),
    pytest.param(S.NEW, [], DONE, Action.SKIP_DONE, id="done"),
    pytest.param(S.NEW, [], SHARED, Action.SHARE, id="done in another grid folder"),
    pytest.param(S.NEW, [], EXHAUSTED, Action.GIVE_UP, id="failed max_attempts times"),
    pytest.param(S.NEW, [], NEW, Action.START, id="new"),
    pytest.param(S.NEW, [], PARTIAL, Action.START, id="partial: the trainer resumes"),
    pytest.param(S.NEW, [S.DONE], FAILED_ONCE, Action.START, id="failed fewer times: retried"),
]


@pytest.mark.parametrize("slot, deps, cell, action", DECIDE)
def test_decide(slot, deps, cell, action):
    assert decide(slot, deps, cell) is action


def test_decide_before_the_lock_is_the_default():
    assert decide(S.NEW, []) is Action.LOOK


AFTER_EXIT = [
    # exit code, the cell after it, restarts so far, max_attempts -> action
    pytest.param(0, DONE, 0, 3, Action.DONE, id="exit 0 + summary done"),
    pytest.param(143, DONE, 0, 3, Action.DONE, id="stopped after it finished: done"),
    pytest.param(1, DONE, 0, 3, Action.DONE, id="summary done wins over the exit code"),
    pytest.param(143, PARTIAL, 0, 3, Action.RESTART, id="preempted with a checkpoint"),
    pytest.param(143, PARTIAL, MAX_RESTARTS - 1, 3, Action.RESTART, id="preempted, the last allowed restart"),
    pytest.param(143, PARTIAL, MAX_RESTARTS, 3, Action.RETRY, id="preempted too often: a failed attempt"),
    pytest.param(143, FAILED_ONCE, MAX_RESTARTS, 2, Action.GIVE_UP, id="preempted too often, the last attempt"),
    pytest.param(1, FAILED_ONCE, 0, 3, Action.RETRY, id="second failure of 3"),
    pytest.param(1, st.CellState(st.FAILED, failures=2), 0, 3, Action.GIVE_UP, id="third failure of 3"),
    pytest.param(1, NEW, 0, 1, Action.GIVE_UP, id="died without a summary, one attempt allowed"),
    pytest.param(0, NEW, 0, 3, Action.RETRY, id="exit 0 without a done summary is a failure"),
    pytest.param(-9, PARTIAL, 0, 3, Action.RETRY, id="killed: a failed attempt that resumes"),
]


GROUP = [
    # what `decide` said for each seed of a cell (under each one's lock) -> the seeds that start, as one process
    pytest.param([Action.START] * 3, [0, 1, 2], id="all new: one group of three"),
    pytest.param([Action.SKIP_DONE, Action.START, Action.START], [1, 2], id="seed 0 done: the others"),
    pytest.param([Action.SKIP_DONE, Action.START, Action.SKIP_DONE], [1], id="a retry: only the seed that failed"),
    pytest.param([Action.WAIT_LOCKED, Action.START, Action.SHARE], [1], id="locked elsewhere, shared: not in it"),
    pytest.param([Action.GIVE_UP, Action.NOTHING, Action.START], [2], id="failed for good, running: not in it"),
    pytest.param([Action.WAIT_DEPS] * 2, [], id="a dependency not done: nothing starts"),
    pytest.param([Action.SKIP_DONE] * 3, [], id="all done"),
]


@pytest.mark.parametrize("actions, members", GROUP)
def test_group_members(actions, members):
    assert group_members(actions) == members


@pytest.mark.parametrize("rc, cell, restarts, max_attempts, action", AFTER_EXIT)
def test_after_exit(rc, cell, restarts, max_attempts, action):
    assert after_exit(rc, cell, restarts, max_attempts) is action


@pytest.mark.parametrize("cell, slot", [
    (DONE, S.DONE), (st.CellState(st.RUNNING), S.WAITING), (EXHAUSTED, S.FAILED), (FAILED_ONCE, S.NEW),
    (PARTIAL, S.NEW), (SHARED, S.NEW), (NEW, S.NEW)])
def test_one_mapping_from_the_store(cell, slot):
    assert slot_state(cell) is slot


# ---- the cell's lock ------------------------------------------------------------------------------------

def test_locked_is_released_when_the_block_ends_unless_handed_over(tmp_path):
    store = st.RunStore(tmp_path / "results")
    job = SimpleNamespace(grid="g", run_id="abc-s0")
    with store.locked(job) as held:
        assert held is not None
        with store.locked(job) as again:
            assert again is None  # flock is per descriptor: a second one, even in this process, cannot take it
    with store.locked(job) as held:
        kept = held.hand_over()
        assert held.fd is None
    with store.locked(job) as again:
        assert again is None  # the handed-over lock outlives the block
    kept.release()
    kept.release()  # idempotent
    assert kept.fd is None
    with store.locked(job) as held:
        assert held is not None


def test_locked_by_another_process(tmp_path):
    store = st.RunStore(tmp_path / "results")
    job = SimpleNamespace(grid="g", run_id="abc-s0")
    with store.locked(job):
        pass  # creates the lock file
    lock = tmp_path / "results" / ".locks" / "abc-s0.lock"
    hold = "import fcntl, sys, time; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); " \
        "time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert store.state(job).state == st.RUNNING
        with store.locked(job) as held:
            assert held is None
    finally:
        holder.kill()
        holder.wait()
    with store.locked(job) as held:
        assert held is not None


def test_lock_descriptor_is_closed_on_an_exception(tmp_path):
    store = st.RunStore(tmp_path / "results")
    job = SimpleNamespace(grid="g", run_id="abc-s0")
    with pytest.raises(RuntimeError), store.locked(job) as held:
        fd = held.fd
        raise RuntimeError
    with pytest.raises(OSError):
        os.fstat(fd)


# ---- Ctrl-C / SIGTERM ---------------------------------------------------------------------------------

class InterruptedBackend:
    """Jobs that run until stopped; the first poll is where Ctrl-C lands."""

    name = "interrupted"

    def __init__(self):
        self.started, self.stopped, self.closed, self.polls = [], [], False, 0

    def commands(self, launch):
        return [["vivit", *launch.argv]]

    def start(self, launch):
        self.started.append(launch.run_id)
        assert len(launch.lock_fds) == 1  # the trainer shares the cell's lock
        return launch.run_id

    def poll(self, handle):
        self.polls += 1
        if self.polls == 1:
            raise KeyboardInterrupt
        return 143 if handle in self.stopped else None

    def stop(self, handle):
        self.stopped.append(handle)

    def close(self):
        self.closed = True


def test_interrupt_stops_running_jobs_and_releases_their_locks(tmp_path):
    from vivit_cli.sweep import cells, grids, runner

    p = cells.plan(grids.load("attention-order"), preset="smoke")
    store = st.RunStore(tmp_path / "results")
    backend = InterruptedBackend()
    with pytest.raises(KeyboardInterrupt):
        runner.run(p, store, backend, parallel=2, poll=0.01, live=False)
    assert backend.started == backend.stopped == [p.deps[0].run_id]  # only the dependency may start first
    assert backend.closed
    for job in p.jobs:
        with store.locked(job) as held:
            assert held is not None, job.run_id


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_started_from_a_worker_thread_dies_with_the_sweep(tmp_path):
    # The TPU backend forks from its worker threads: the hook must work there (no import between fork and exec),
    # and kill -9 of the sweep must still take its children down.
    script = (
        "import subprocess, sys, threading\n"
        "from vivit_cli.sweep.backends.local import die_with_parent\n"
        "def start():\n"
        "    p = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent())\n"
        "    print(p.pid, flush=True)\n"
        "    p.wait()\n"
        "threading.Thread(target=start).start()\n")
    sweep = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(sweep.stdout.readline())
    os.kill(sweep.pid, 9)
    sweep.wait()
    for _ in range(100):  # the kernel sends SIGTERM at once; a zombie reaped by init reads as gone
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(") ")[1][0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        pytest.fail("the child outlived the sweep that started it")
