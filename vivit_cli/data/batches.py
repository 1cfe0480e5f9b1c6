"""How examples become batches, for every iterator the train loop and `vivit eval` read (pure numpy).

Train order: `GlobalOrder`, the one example stream of the grain pipeline and of the in-memory image task.
Eval tails: `pad_batch` and `masked_batch`, the one spelling of padding rows (zeros, index -1, mask=False), so
that every consumer drops them by the mask alone.
"""

from __future__ import annotations

import sys

import numpy as np


class GlobalOrder:
    """The k-th example of this process's stream: (example index, position in the global stream).

    The global stream is every epoch's permutation (`np.random.default_rng([seed, epoch]).permutation(n)`) laid
    end to end, cut into global batches of `batch_size x shard_count`; process p reads rows [p*b, (p+1)*b) of
    each. So the global batch, and the loss curve, is the same on one process as on many, and every example is
    read by exactly one process.
    """

    def __init__(self, n: int, seed: int, batch_size: int, shard_index: int, shard_count: int):
        self.n, self.seed, self.b, self.p, self.count = n, seed, batch_size, shard_index, shard_count
        self._epoch, self._perm = -1, None

    def __len__(self) -> int:
        return sys.maxsize  # an endless stream; grain only ever asks for the next position

    def global_position(self, k: int) -> int:
        return (k // self.b) * self.b * self.count + self.p * self.b + k % self.b

    def __getitem__(self, k: int) -> tuple[int, int]:
        g = self.global_position(int(k))
        epoch, i = divmod(g, self.n)
        if epoch != self._epoch:  # one epoch's permutation held at a time: the stream only moves forward
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return int(self._perm[i]), g


def pad_rows(x: np.ndarray, size: int, fill=0) -> np.ndarray:
    """`x` [n, ...] with n <= size, completed to `size` rows of `fill` (returned as is when full)."""
    x = np.asarray(x)
    if len(x) == size:
        return x
    pad = np.full((size - len(x),) + x.shape[1:], fill, x.dtype)
    return np.concatenate([x, pad])


def pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """A batch of n <= size rows, completed to `size`: padding rows are zeros with index -1 (no example) and
    mask=False. A batch without a mask gets one (True for its own rows)."""
    n = len(next(iter(batch.values())))
    out = {k: pad_rows(v, size, -1 if k == "index" else 0) for k, v in batch.items()}
    if "mask" not in out:
        out["mask"] = np.arange(size) < n
    return out


def masked_batch(size: int, video_shape: tuple[int, ...], label_shape: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """`size` padding rows only (video float32 [size, *video_shape], label int32 [size, *label_shape]): what a
    process whose shard has run out feeds to a collective eval step while the others still have clips."""
    empty = {"video": np.zeros((0, *video_shape), np.float32), "label": np.zeros((0, *label_shape), np.int32),
             "index": np.zeros(0, np.int32), "mask": np.zeros(0, bool)}
    return pad_batch(empty, size)
