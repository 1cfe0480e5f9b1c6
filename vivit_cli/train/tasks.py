"""What the train loop trains on: clips from `vivit_cli.data` (a video task) or still images (the image ViT
of `vivit pretrain-image`). Both give the loop the same four things: the class count, a resumable train
iterator of per-process batches, a finite eval iterator, and the eval split's size.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np


class VideoTask:
    kind = "video"

    def __init__(self, cfg):
        from vivit_cli import data

        self._data = data
        self.source = data.open_source(cfg)
        # Before any step: a missing split would otherwise surface only at the final eval, after all the training.
        used = [("data.train_split", cfg.data.train_split), ("data.eval_split", cfg.data.eval_split)]
        if cfg.train.eval_every > 0:
            used.append(("data.val_split", cfg.data.val_split))
        for key, name in used:
            self._check_split(key, name)
        # Several heads (Source.heads; Epic-Kitchens: verb, noun) sit side by side in the one output projection.
        heads = tuple((name, len(names)) for name, names in self.source.heads)  # a Source always has one or more
        self.heads = heads if len(heads) > 1 else ()
        self.num_classes = sum(n for _, n in self.heads) if self.heads else int(self.source.num_classes)

    def _check_split(self, key: str, name: str) -> None:
        from vivit_cli.errors import VivitError

        try:
            self.source.split(name)
        except VivitError:
            have = ", ".join(self.source.splits) or "none"
            raise VivitError(f"{key}={name}: {self.source.spec} has no such split (it has {have}); "
                             f"pass --set {key}=<one of them>") from None

    def train_iterator(self, cfg, *, batch_size: int, shard_index: int, shard_count: int, seed: int):
        return self._data.train_iterator(cfg, batch_size=batch_size, shard_index=shard_index,
                                         shard_count=shard_count, seed=seed)

    def eval_iterator(self, cfg, *, split: str, views: tuple[int, int], batch_size: int, shard_index: int,
                      shard_count: int) -> Iterator[dict]:
        return iter(self._data.eval_iterator(cfg, split=split, views=views, batch_size=batch_size,
                                             shard_index=shard_index, shard_count=shard_count))

    def num_examples(self, split: str) -> int:
        return int(self.source.num_examples(split))


class ArrayIterator:
    """Endless shuffled batches over in-memory arrays, resumable by `get_state`/`set_state`.

    The example order is the grain pipeline's (`data.batches.GlobalOrder`: a fresh permutation per epoch from
    `seed`, laid end to end; shard p takes its rows of each global batch), so the global batch is the same for
    any number of processes.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, batch_size: int, shard_index: int = 0,
                 shard_count: int = 1, seed: int = 0):
        from vivit_cli.data.batches import GlobalOrder

        self.images, self.labels = images, labels
        self.batch_size, self.seed = batch_size, seed
        self.batch = 0
        self._order = GlobalOrder(len(labels), seed, batch_size, shard_index, shard_count)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        k = self.batch * self.batch_size
        idx = np.array([self._order[i][0] for i in range(k, k + self.batch_size)])
        self.batch += 1
        return {"video": self.images[idx][:, None].astype(np.float32), "label": self.labels[idx].astype(np.int32)}

    def get_state(self) -> dict[str, Any]:
        return {"batch": self.batch, "seed": self.seed}

    def set_state(self, state: dict[str, Any]) -> None:
        self.batch = int(state["batch"])


def array_eval_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, shard_index: int,
                       shard_count: int) -> Iterator[dict]:
    """Finite eval batches in the `data.eval_iterator` layout (one view of one frame), the last one padded
    (`data.batches.pad_batch`)."""
    from vivit_cli.data.batches import pad_batch

    idx = np.arange(shard_index, len(labels), shard_count)
    for s in range(0, len(idx), batch_size):
        take = idx[s:s + batch_size]
        yield pad_batch({"video": images[take][:, None, None].astype(np.float32),
                         "label": labels[take].astype(np.int32), "index": take.astype(np.int32)}, batch_size)


class ImageTask:
    """Still images of the chosen data (`data.still_images`) as one-frame clips for an image ViT."""

    kind = "image"

    def __init__(self, cfg):
        from vivit_cli import data

        self._data = data
        self.source = data.open_source(cfg)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # The image label set is whatever `still_images` labels (for the embedded data: the ten digits of
        # the appearance task, whichever task the video config names), not necessarily the source's.
        labels = [self._split(cfg, s)[1] for s in (cfg.data.train_split, cfg.data.eval_split)]
        self.num_classes = int(max(int(x.max()) for x in labels if len(x))) + 1

    def _split(self, cfg, split: str):
        if split not in self._cache:
            images, labels = self._data.still_images(cfg, split)
            self._cache[split] = (np.asarray(images, np.float32), np.asarray(labels, np.int32))
        return self._cache[split]

    def train_iterator(self, cfg, *, batch_size: int, shard_index: int, shard_count: int, seed: int):
        images, labels = self._split(cfg, cfg.data.train_split)
        return ArrayIterator(images, labels, batch_size=batch_size, shard_index=shard_index,
                             shard_count=shard_count, seed=seed)

    def eval_iterator(self, cfg, *, split: str, views: tuple[int, int], batch_size: int, shard_index: int,
                      shard_count: int):
        images, labels = self._split(cfg, split)
        return array_eval_batches(images, labels, batch_size=batch_size, shard_index=shard_index,
                                  shard_count=shard_count)

    def num_examples(self, split: str) -> int:
        return len(self._cache[split][1]) if split in self._cache else int(self.source.num_examples(split))


def eval_batch_count(num_examples: int, batch_size: int, shard_count: int) -> int:
    """Batches every process runs so that all take part in each (collective) eval step: enough for the
    largest shard of ceil(N / shards) clips."""
    return max(1, math.ceil(math.ceil(num_examples / shard_count) / batch_size))
