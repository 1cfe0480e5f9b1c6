"""`--backend tpu`: each job runs on its own Cloud TPU VM slice, driven through the gcloud CLI.

Per job (queued resource and node are both named `vivit-<run id>`, so a restarted sweep finds its leftovers):
  1. delete a leftover resource of the same name (from a killed sweep or a preemption);
  2. `gcloud compute tpus queued-resources create NAME --node-id NAME --accelerator-type T --runtime-version V
     --zone Z [--project P] [--spot | --reserved]`, then `describe` until ACTIVE;
  3. `gcloud compute tpus tpu-vm scp --recurse <staged code> NAME: --worker=all` (vivit_cli + pyproject);
  4. `gcloud compute tpus tpu-vm ssh NAME --worker=all --command "<worker command>"`: every host starts the same
     `vivit train` with VIVIT_JAX_INIT=1, so each calls `jax.distributed.initialize()`;
  5. while it runs, `describe` every `poll` seconds: SUSPENDING/SUSPENDED/FAILED (or gone) is a preemption:
     stop ssh, delete, go to 2; the trainer resumes from the checkpoint in the (gs://) workdir;
  6. delete the resource when the job ends, however it ends.

The worker command is the one string that travels; it is assembled from argument lists with shlex.quote, so no
config value can inject shell code. Every other command is an argument list.

Options (`--backend-opt key=value`): zone (required), project, accelerator (v4-8), runtime
(tpu-ubuntu2204-base), spot / reserved (true|false), python (python3 on the workers), install (true: `pip install
-e .` of the copied code on every worker first), poll (seconds, 30), max_preemptions (20), gcloud (executable).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from vivit_cli.errors import VivitError

from . import PREEMPTED, Backend, Launch
from .local import die_with_parent

CODE_DIR = "vivit-cli"  # where the code lands in each worker's home
PREEMPTED_STATES = ("SUSPENDING", "SUSPENDED", "FAILED", "DELETING")
WAITING_STATES = ("ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING", "CREATING")


def _bool(key: str, value: str) -> bool:
    from vivit_cli.config.core import parse_bool

    parsed = parse_bool(value)
    if parsed is None:
        raise VivitError(f"--backend-opt {key}={value!r}: expected true or false")
    return parsed


def _number(key: str, value: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise VivitError(f"--backend-opt {key}={value!r}: expected a number") from None
    if out <= 0:
        raise VivitError(f"--backend-opt {key}={value!r}: must be positive")
    return out


def worker_command(argv: list[str], env: dict[str, str], python: str = "python3", install: bool = True) -> str:
    """The shell line every TPU host runs. Every token is quoted: a config value is data, never code."""
    vivit = [python, "-m", "vivit_cli.cli.app", *argv]
    steps = [shlex.join(["cd", CODE_DIR])]
    if install:
        steps.append(shlex.join([python, "-m", "pip", "install", "--quiet", "-e", "."]))
    envs = [f"{k}={v}" for k, v in {"VIVIT_JAX_INIT": "1", **env}.items()]
    steps.append(shlex.join(["env", *envs, *vivit]))
    return " && ".join(steps)


def resource_name(run_id: str) -> str:
    return f"vivit-{run_id}".lower()[:60]


class _Job:
    def __init__(self, launch: Launch):
        self.launch = launch
        self.name = resource_name(launch.run_id)
        self.rc: int | None = None
        self.error: str | None = None
        self.stopping = False
        self.ssh: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None


class TpuBackend(Backend):
    name = "tpu"

    def __init__(self, zone: str, project: str | None = None, accelerator: str = "v4-8",
                 runtime: str = "tpu-ubuntu2204-base", spot: bool = False, reserved: bool = False,
                 python: str = "python3", install: bool = True, poll: float = 30.0, max_preemptions: int = 20,
                 gcloud: str = "gcloud"):
        self.zone, self.project, self.accelerator, self.runtime = zone, project, accelerator, runtime
        self.spot, self.reserved, self.python, self.install = spot, reserved, python, install
        self.poll_s, self.max_preemptions, self.gcloud = poll, max_preemptions, gcloud
        self._stage: Path | None = None
        self._last_state: dict[str, str | None] = {}

    # ---- commands (argument lists) -----------------------------------------------------------------
    def _where(self) -> list[str]:
        return ["--zone", self.zone] + (["--project", self.project] if self.project else [])

    def create_cmd(self, name: str) -> list[str]:
        capacity = ["--spot"] if self.spot else ["--reserved"] if self.reserved else []
        return [self.gcloud, "compute", "tpus", "queued-resources", "create", name, "--node-id", name,
                "--accelerator-type", self.accelerator, "--runtime-version", self.runtime, *self._where(), *capacity]

    def describe_cmd(self, name: str) -> list[str]:
        return [self.gcloud, "compute", "tpus", "queued-resources", "describe", name, *self._where(), "--format=json"]

    def delete_cmd(self, name: str) -> list[str]:
        return [self.gcloud, "compute", "tpus", "queued-resources", "delete", name, *self._where(), "--force",
                "--quiet"]

    def scp_cmd(self, name: str, source: str) -> list[str]:
        return [self.gcloud, "compute", "tpus", "tpu-vm", "scp", "--recurse", source, f"{name}:", *self._where(),
                "--worker=all"]

    def ssh_cmd(self, name: str, launch: Launch) -> list[str]:
        return [self.gcloud, "compute", "tpus", "tpu-vm", "ssh", name, *self._where(), "--worker=all", "--command",
                worker_command(launch.argv, launch.env, self.python, self.install)]

    def commands(self, launch: Launch) -> list[list[str]]:
        name = resource_name(launch.run_id)
        return [self.create_cmd(name), self.scp_cmd(name, f"<staged code>/{CODE_DIR}"), self.ssh_cmd(name, launch),
                self.delete_cmd(name)]

    # ---- Backend -----------------------------------------------------------------------------------
    def check(self) -> None:
        found = shutil.which(self.gcloud)
        if not found:
            raise VivitError(f"--backend tpu: {self.gcloud!r} not found on PATH (install the Google Cloud CLI)")
        self.gcloud = found
        if self.spot and self.reserved:
            raise VivitError("--backend-opt spot=true and reserved=true: pick one")

    def start(self, launch: Launch) -> _Job:
        self._staged()  # once, from the scheduler's thread
        job = _Job(launch)
        job.thread = threading.Thread(target=self._drive, args=(job,), name=f"tpu-{launch.run_id}", daemon=True)
        job.thread.start()
        return job

    def poll(self, handle: _Job) -> int | None:
        return None if handle.thread.is_alive() else handle.rc

    def stop(self, handle: _Job) -> None:
        handle.stopping = True
        if handle.ssh is not None and handle.ssh.poll() is None:
            handle.ssh.terminate()

    def close(self) -> None:
        if self._stage is not None:
            shutil.rmtree(self._stage.parent, ignore_errors=True)
            self._stage = None

    # ---- the per-job driver (one thread per running job) ---------------------------------------------
    def _staged(self) -> Path:
        """A copy of the code to send: the package, pyproject.toml and the grids, without caches."""
        if self._stage is None:
            root = Path(__file__).resolve().parents[3]
            stage = Path(tempfile.mkdtemp(prefix="vivit-tpu-")) / CODE_DIR
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
            shutil.copytree(root / "vivit_cli", stage / "vivit_cli", ignore=ignore)
            for extra in ("pyproject.toml", "README.md"):
                if (root / extra).is_file():
                    shutil.copy2(root / extra, stage / extra)
            if (root / "experiments").is_dir():
                shutil.copytree(root / "experiments", stage / "experiments", ignore=ignore)
            self._stage = stage
        return self._stage

    def _gcloud(self, cmd: list[str], log, timeout: float = 900, quiet: bool = False) -> subprocess.CompletedProcess:
        if not quiet:  # describes are polled every few seconds: only their state changes are logged
            log.write(f"$ {shlex.join(cmd)}\n".encode())
            log.flush()
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              preexec_fn=die_with_parent())

    def _state(self, name: str, log) -> str | None:
        """The queued resource's state, or None when it does not exist."""
        r = self._gcloud(self.describe_cmd(name), log, timeout=120, quiet=True)
        state = None
        if r.returncode == 0:
            try:
                state = str(json.loads(r.stdout)["state"]["state"])
            except (ValueError, KeyError, TypeError):
                state = "UNKNOWN"
        if self._last_state.get(name, "-") != state:
            self._last_state[name] = state
            log.write(f"sweep: queued resource {name} is {state or 'absent'}\n".encode())
            log.flush()
        return state

    def _must(self, cmd: list[str], log, what: str) -> None:
        r = self._gcloud(cmd, log)
        if r.returncode != 0:
            detail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise _Failed(f"gcloud {what} failed (exit {r.returncode}): {detail}")

    def _drive(self, job: _Job) -> None:
        launch, name = job.launch, job.name
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "ab") as log:
            try:
                job.rc = self._attempts(job, log)
            except _Failed as e:
                if job.stopping:  # interrupted by the sweep: the run resumes next time, not a failure
                    job.rc = PREEMPTED
                else:
                    job.rc, job.error = 1, str(e)
            except Exception as e:  # noqa: BLE001 - the sweep records it as this cell's failure
                job.rc, job.error = 1, f"{type(e).__name__}: {e}"
            finally:
                try:
                    if self._state(name, log) is not None:
                        self._gcloud(self.delete_cmd(name), log)
                except Exception:  # noqa: BLE001 - best effort; the next sweep deletes leftovers first
                    pass
                if job.error:
                    log.write(f"error: {job.error}\n".encode())

    def _attempts(self, job: _Job, log) -> int:
        name, preemptions = job.name, 0
        while True:
            if job.stopping:
                return PREEMPTED
            if self._state(name, log) is not None:
                self._gcloud(self.delete_cmd(name), log)
            self._must(self.create_cmd(name), log, "queued-resources create")
            self._wait_active(job, log)
            self._must(self.scp_cmd(name, str(self._stage)), log, "tpu-vm scp")
            ssh = self.ssh_cmd(name, job.launch)
            log.write(f"$ {shlex.join(ssh)}\n".encode())
            log.flush()
            job.ssh = subprocess.Popen(ssh, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=die_with_parent())  # noqa: PLW1509 - one C call, looked up in the parent
            rc, preempted = self._watch(job, log)
            if job.stopping:
                return PREEMPTED
            if not preempted:
                return rc
            preemptions += 1
            log.write(f"sweep: {name} preempted ({preemptions}); re-creating it, the run resumes from its "
                      f"checkpoint\n".encode())
            log.flush()
            self._gcloud(self.delete_cmd(name), log)
            if preemptions > self.max_preemptions:
                raise _Failed(f"preempted {preemptions} times (max_preemptions={self.max_preemptions})")

    def _wait_active(self, job: _Job, log) -> None:
        while True:
            state = self._state(job.name, log)
            if state == "ACTIVE":
                return
            if state is None or state in PREEMPTED_STATES:
                raise _Failed(f"queued resource {job.name} went {state or 'missing'} before becoming ACTIVE")
            if job.stopping:
                raise _Failed("stopped")
            time.sleep(min(self.poll_s, 10.0))

    def _watch(self, job: _Job, log) -> tuple[int, bool]:
        """(ssh exit code, preempted?) once ssh ends or the slice is lost."""
        next_check = time.time() + self.poll_s
        while True:
            rc = job.ssh.poll()
            if rc is not None:
                if rc == 0:
                    return 0, False
                state = self._state(job.name, log)  # a dead ssh may be a lost slice
                return rc, state is None or state in PREEMPTED_STATES
            if time.time() >= next_check:
                state = self._state(job.name, log)
                if state is None or state in PREEMPTED_STATES:
                    job.ssh.terminate()
                    try:
                        job.ssh.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        job.ssh.kill()
                    return PREEMPTED, True
                next_check = time.time() + self.poll_s
            time.sleep(min(0.2, self.poll_s))


class _Failed(Exception):
    pass


def make(options: dict[str, str]) -> TpuBackend:
    opts = dict(options)
    zone = opts.pop("zone", None)
    if not zone:
        raise VivitError("--backend tpu needs --backend-opt zone=ZONE (e.g. us-central2-b)")
    kw = {}
    for key in ("project", "accelerator", "runtime", "python", "gcloud"):
        if key in opts:
            kw[key] = opts.pop(key)
    for key in ("spot", "reserved", "install"):
        if key in opts:
            kw[key] = _bool(key, opts.pop(key))
    if "poll" in opts:
        kw["poll"] = _number("poll", opts.pop("poll"))
    if "max_preemptions" in opts:
        kw["max_preemptions"] = int(_number("max_preemptions", opts.pop("max_preemptions")))
    if opts:
        raise VivitError(f"--backend-opt {next(iter(opts))}: unknown option of the tpu backend (zone, project, "
                         "accelerator, runtime, spot, reserved, python, install, poll, max_preemptions, gcloud)")
    return TpuBackend(zone, **kw)
