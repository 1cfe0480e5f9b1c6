"""Video data: sources (a registry of kinds: `sources/`) and the grain input pipeline.

Importing this package is cheap (no grain, PyAV or JAX until a function needs them); see
docs/DESIGN.md "Data" for the interface.
"""

from __future__ import annotations

from .spec import KINDS


def open_source(cfg):
    from .api import open_source as f

    return f(cfg)


def train_iterator(cfg, *, batch_size: int, shard_index: int = 0, shard_count: int = 1, seed: int | None = None):
    from .pipeline import train_iterator as f

    return f(cfg, batch_size=batch_size, shard_index=shard_index, shard_count=shard_count, seed=seed)


def eval_iterator(cfg, *, split: str, views=(1, 1), batch_size: int, shard_index: int = 0, shard_count: int = 1):
    from .pipeline import eval_iterator as f

    return f(cfg, split=split, views=views, batch_size=batch_size, shard_index=shard_index, shard_count=shard_count)


def still_images(cfg, split: str):
    from .api import still_images as f

    return f(cfg, split)


__all__ = ["KINDS", "open_source", "train_iterator", "eval_iterator", "still_images"]
