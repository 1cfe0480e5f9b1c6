"""`--backend local`: each job is a `vivit train` subprocess on this machine (`--parallel N` at once).

A crash in one cell is that process's exit code, never the sweep's. The child gets SIGTERM when the sweep
dies (Linux PR_SET_PDEATHSIG), which the trainer turns into a checkpoint and exit code 143; it also inherits
the cell's lock, so a restarted sweep waits for it rather than starting a second writer.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys

from vivit_cli.errors import VivitError

from . import Backend, Launch


@functools.cache
def die_with_parent():
    """The `preexec_fn` that asks the kernel for SIGTERM when the sweep dies (PR_SET_PDEATHSIG), or None.

    libc's prctl is looked up here, in the parent: between fork and exec the child then runs one C call and no
    import, since the TPU backend forks from its worker threads and another thread may hold the import lock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:  # no glibc: the inherited lock still prevents a second writer
        return None
    return lambda: prctl(1, signal.SIGTERM)


def vivit_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", "vivit_cli.cli.app"]


class LocalBackend(Backend):
    name = "local"

    def __init__(self, python: str = sys.executable):
        self.python = python

    def commands(self, launch: Launch) -> list[list[str]]:
        return [vivit_command(self.python) + launch.argv]

    def start(self, launch: Launch) -> subprocess.Popen:
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "ab") as log:
            return subprocess.Popen(
                vivit_command(self.python) + launch.argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env={**os.environ, **launch.env},
                pass_fds=tuple(launch.lock_fds),
                # Own session: a Ctrl-C at the terminal reaches only the sweep, which then sends SIGTERM (the
                # trainer checkpoints on SIGTERM; on SIGINT it would just stop).
                start_new_session=True,
                preexec_fn=die_with_parent())  # noqa: PLW1509 - one C call, looked up in the parent

    def poll(self, handle: subprocess.Popen) -> int | None:
        return handle.poll()

    def stop(self, handle: subprocess.Popen) -> None:
        if handle.poll() is None:
            handle.send_signal(signal.SIGTERM)


def make(options: dict[str, str]) -> LocalBackend:
    python = options.pop("python", sys.executable)
    if options:
        raise VivitError(f"--backend-opt {next(iter(options))}: the local backend takes only python=PATH")
    return LocalBackend(python)
