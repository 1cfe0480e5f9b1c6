"""Process-level setup that must happen before JAX touches a device: multi-host init and the
persistent compilation cache. Also the one place that says which process logs.

Environment variables (read once, by `setup()`):

  VIVIT_COORDINATOR      host:port of process 0's coordination service. Together with
  VIVIT_NUM_PROCESSES    the total number of processes and
  VIVIT_PROCESS_ID       this process's index (0-based),
                         this calls `jax.distributed.initialize(...)` explicitly: localhost emulation of a
                         slice, the sweep's fake-TPU backend, or any cluster JAX cannot auto-detect.
  VIVIT_JAX_INIT=1       `jax.distributed.initialize()` with auto-detection (Cloud TPU slices, SLURM). Not the
                         default because it fails on a plain single-host machine.
  VIVIT_NUM_CPU_DEVICES  N CPU devices in this process (as XLA_FLAGS=--xla_force_host_platform_device_count=N).
                         Besides emulating a slice, this is data parallelism over a CPU's cores: each device
                         runs its share of the batch, which on a 2-core machine makes the tiny model's train
                         step about 1.5x faster (benchmarks/RESULTS.md). Not the default: the sweeps already
                         run one cell per core, and the default preset's runs are input-bound.
  VIVIT_INIT_TIMEOUT     seconds to wait for the other processes to join (default 120).
  VIVIT_CACHE            cache root (default ~/.cache/vivit-cli); compiled programs go to $VIVIT_CACHE/jax.
  VIVIT_COMPILE_CACHE=0  turns the persistent compilation cache off.

Why a persistent cache: the default sweeps run ~15 short trainings as separate processes with the same
shapes; without it every one pays the XLA compile again (seconds each on 2 cores).
"""

from __future__ import annotations

import os
from pathlib import Path

from vivit_cli.errors import VivitError

_done = False


def cache_root() -> Path:
    return Path(os.environ.get("VIVIT_CACHE") or Path.home() / ".cache" / "vivit-cli")


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise VivitError(f"{name}={raw!r}: expected an integer") from None


def setup(cpu_devices: int | None = None) -> None:
    """Idempotent. Multi-process init first (it must precede any backend use), then the cache. `cpu_devices`
    overrides VIVIT_NUM_CPU_DEVICES."""
    global _done
    if _done:
        return
    import jax

    cpu_devices = cpu_devices or _env_int("VIVIT_NUM_CPU_DEVICES")
    if cpu_devices:
        jax.config.update("jax_num_cpu_devices", cpu_devices)

    coordinator = os.environ.get("VIVIT_COORDINATOR")
    timeout = _env_int("VIVIT_INIT_TIMEOUT") or 120
    if coordinator:
        num, pid = _env_int("VIVIT_NUM_PROCESSES"), _env_int("VIVIT_PROCESS_ID")
        if num is None or pid is None:
            raise VivitError("VIVIT_COORDINATOR is set, so VIVIT_NUM_PROCESSES and VIVIT_PROCESS_ID must be too")
        if not 0 <= pid < num:
            raise VivitError(f"VIVIT_PROCESS_ID={pid}: must be in [0, VIVIT_NUM_PROCESSES={num})")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid,
                                   initialization_timeout=timeout)
    elif os.environ.get("VIVIT_JAX_INIT", "") not in ("", "0"):
        jax.distributed.initialize(initialization_timeout=timeout)

    if os.environ.get("VIVIT_COMPILE_CACHE", "1") != "0":
        path = cache_root() / "jax"
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        # The defaults skip programs that compile in under a second: on CPU that is most of ours.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _done = True


def is_main() -> bool:
    """Only process 0 logs, writes summaries and talks to W&B; every process checkpoints."""
    import jax

    return jax.process_index() == 0


def multi_process() -> bool:
    import jax

    return jax.process_count() > 1


def device_description() -> str:
    import jax

    devs = jax.devices()
    kind = devs[0].device_kind if devs else "?"
    return f"{jax.process_count()}x{jax.local_device_count()} {devs[0].platform}:{kind}"
