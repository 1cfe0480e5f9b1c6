import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Keep the tests on the CPU and quiet; subprocesses inherit this.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite compiles hundreds of small programs and runs each a few steps, so LLVM's optimisation of XLA's CPU
# loops costs more than it saves: at level 0 tests/test_models.py took 160 s instead of 271 s (user CPU 195 s
# instead of 375 s) on the 2-core AMD host of 2026-12-07. Products still go to YNNPACK; only the loop code is
# unoptimised, and the semantics are the same. A user's own setting of the flag wins.
_flags = os.environ.get("XLA_FLAGS", "")
if os.environ.get("JAX_PLATFORMS") == "cpu" and "--xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_backend_optimization_level=0".strip()
# In-process tests run JAX with the CLI's XLA defaults, as `vivit` itself does (the package sets none on import).
from vivit_cli.runtime.cpu import apply_xla_defaults  # noqa: E402

apply_xla_defaults()


_CACHE_ENV = os.environ.get("VIVIT_CACHE")


@pytest.fixture(autouse=True, scope="module")
def _cache_env_restored():
    # Later tests' subprocesses inherit os.environ: a cache path left set would send them all to a cold cache.
    yield
    assert os.environ.get("VIVIT_CACHE") == _CACHE_ENV, "a test module left VIVIT_CACHE changed"


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """Runs `vivit ARGS...` in a fresh interpreter, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "vivit_cli.cli.app", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or ROOT)


@pytest.fixture
def cli():
    return run_cli

