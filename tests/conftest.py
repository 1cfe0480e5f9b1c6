import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Keep the tests on the CPU and quiet; subprocesses inherit this.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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

