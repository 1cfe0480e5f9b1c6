"""Where generated and probed data is cached, and how arrays are written there atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """$VIVIT_CACHE, else $XDG_CACHE_HOME/vivit-cli, else ~/.cache/vivit-cli."""
    if os.environ.get("VIVIT_CACHE"):
        return Path(os.environ["VIVIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vivit-cli"


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """np.save through a temp file in the same folder and os.replace: concurrent runs that generate
    the same data at once each write a whole file, and a reader never sees half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
