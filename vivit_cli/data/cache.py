"""Where generated and probed data is cached, and how arrays are written there atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vivit_cli.io import atomic_write


def cache_dir() -> Path:
    """$VIVIT_CACHE, else $XDG_CACHE_HOME/vivit-cli, else ~/.cache/vivit-cli."""
    if os.environ.get("VIVIT_CACHE"):
        return Path(os.environ["VIVIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vivit-cli"


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """np.save, atomically: concurrent runs that generate the same data at once each write a whole file,
    and a reader never sees half of one."""
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
