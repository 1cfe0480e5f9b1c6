"""The embedded dataset: procedural glyph videos generated from a seed, for offline CPU runs.

Two tasks mirror the paper's two kinds of benchmark:

- `appearance` (like Kinetics): the label is the identity of the large digit in the clip. A smaller,
  dimmer distractor digit of another class drifts around it, over a textured background with noise.
  One frame is enough in principle.
- `motion` (like Something-Something v2): two actors, a disk and a hollow square, in random colours.
  One moves (up/down/left/right) while the other keeps still, then they swap: the label is which
  actor moved first and in which direction (8 classes). The bag of frames or tubelets is the same for
  "disk moves right, then square moves up" and "square moves up, then disk moves right": a model
  without temporal modelling sees both movements but not their order, so it can at best reach 50%,
  while the order is plain to one that relates the first half of the clip to the second.

Clips are stored slightly larger than the default crop (36x36) so that random crops and scale jitter
are real augmentation; appearance clips have 12 frames (temporal offsets), motion clips exactly one
clip, so that the swap stays near the middle of what the model sees. Everything is vectorised numpy; the arrays
are cached under `cache.cache_dir()` keyed by task, version, seed and geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vivit_cli.io import folder_lock

from .cache import atomic_save_npy, cache_dir
from .glyphs import GLYPH_NAMES, render_sprites

VERSION = 7  # bump when the generator changes, so stale caches are not reused
SIZE = 36
MIN_FRAMES = 12
# Each split draws from its own stream, keyed by its position here: new splits go at the end, so that the others
# stay bit-identical. `test` is what the tables score (docs/data.md): 2,500 clips put one run's sampling standard
# error near 1 point at 50% top-1 (sqrt(0.25 / 2500) = 0.010); `val` (500) is for choices made while training.
SPLIT_SIZES = {"train": 3000, "val": 500, "test": 2500}
TASKS = ("appearance", "motion")
_DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
MOTION_LABELS = tuple(f"{a}-{d}-then-{b}" for a, b in (("disk", "square"), ("square", "disk")) for d in _DIRECTIONS)
APPEARANCE_LABELS = tuple(f"digit-{g}" for g in GLYPH_NAMES)
_PAD = 4  # canvas border: sprites may stick out of the frame by up to this many pixels
_CHUNK = 128  # clips rendered at once: a float32 working set of ~35 MB stays in cache better


@dataclass(frozen=True)
class Geometry:
    frames: int = MIN_FRAMES
    size: int = SIZE


def label_names(task: str) -> tuple[str, ...]:
    return MOTION_LABELS if task == "motion" else APPEARANCE_LABELS


def _rng(seed: int, task: str, split: str, chunk: int) -> np.random.Generator:
    # Every chunk has its own stream, so the data does not depend on the chunk order or count of workers.
    return np.random.default_rng([VERSION, seed, TASKS.index(task), list(SPLIT_SIZES).index(split), chunk])


def _background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Smooth random colour texture [n, size, size, 3] in [0, 1]: a 4x4 grid upsampled bilinearly."""
    grid = rng.uniform(0, 1, (n, 4, 4, 3)).astype(np.float32)
    pos = np.linspace(0, 3, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(np.int64), 2)
    w = (pos - i0)[None, :, None, None]
    rows = grid[:, i0] * (1 - w) + grid[:, i0 + 1] * w
    w2 = (pos - i0)[None, None, :, None]
    tex = rows[:, :, i0] * (1 - w2) + rows[:, :, i0 + 1] * w2
    level = rng.uniform(0.15, 0.45, (n, 1, 1, 1)).astype(np.float32)
    contrast = rng.uniform(0.1, 0.35, (n, 1, 1, 1)).astype(np.float32)
    return level + contrast * (tex - 0.5)


def _bright_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    c = rng.uniform(0.0, 1.0, (n, 3))
    c[np.arange(n), rng.integers(0, 3, n)] = 1.0  # at least one saturated channel: visible on any background
    return (0.55 + 0.45 * c).astype(np.float32)


def _composite(frames: np.ndarray, sprites: np.ndarray, ys: np.ndarray, xs: np.ndarray,
               colours: np.ndarray, opacity: np.ndarray | float = 1.0) -> None:
    """Alpha-blends sprite n at (ys[n, t], xs[n, t]) (top-left, may be partly off-canvas) into `frames`,
    a canvas [n, T, S + 2P, S + 2P, 3] padded by P on each side (cropped at the end).

    Only the sprite's k x k patch is gathered, blended and scattered back: far cheaper than blending a
    full-canvas alpha layer."""
    n, t, k = frames.shape[0], frames.shape[1], sprites.shape[1]
    s = frames.shape[2] - 2 * _PAD
    ys = np.clip(np.rint(ys).astype(np.int64), -_PAD, s + _PAD - k) + _PAD
    xs = np.clip(np.rint(xs).astype(np.int64), -_PAD, s + _PAD - k) + _PAD
    ar = np.arange(k)
    idx = (np.arange(n)[:, None, None, None], np.arange(t)[None, :, None, None],
           (ys[..., None] + ar)[..., :, None], (xs[..., None] + ar)[..., None, :])
    alpha = sprites[:, None, :, :, None] * np.asarray(opacity, np.float32).reshape(-1, 1, 1, 1, 1)
    patch = frames[idx]
    patch += alpha * (colours[:, None, None, None, :] - patch)
    frames[idx] = patch


def _drift(rng: np.random.Generator, n: int, t: int, speed: tuple[float, float]) -> np.ndarray:
    """Straight-line displacement [n, t, 2] from frame 0 at a random direction and speed."""
    ang = rng.uniform(0, 2 * np.pi, n)
    v = rng.uniform(*speed, n)
    step = np.stack([np.sin(ang) * v, np.cos(ang) * v], -1)
    return np.arange(t)[None, :, None] * step[:, None, :]


def _place(rng: np.random.Generator, path: np.ndarray, k: int, size: int, margin: int = 0) -> np.ndarray:
    """Adds a random start to displacement paths [n, t, 2] so that the whole path stays on the canvas
    (up to `margin` px off the edge)."""
    lo = -path.min(axis=1) - margin
    hi = size - k - path.max(axis=1) + margin
    start = lo + rng.uniform(0, 1, lo.shape) * np.maximum(hi - lo, 0)
    return path + start[:, None, :]


def _canvas(rng: np.random.Generator, n: int, g: Geometry) -> np.ndarray:
    """The static background of every frame, on a canvas padded by _PAD for `_composite`."""
    frames = np.zeros((n, g.frames, g.size + 2 * _PAD, g.size + 2 * _PAD, 3), np.float32)
    frames[:, :, _PAD:-_PAD, _PAD:-_PAD] = _background(rng, n, g.size)[:, None]
    return frames


def _finish(frames: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    frames = frames[:, :, _PAD:-_PAD, _PAD:-_PAD]
    # Triangular noise (the sum of two uniform bytes) with standard deviation `noise`: ten times
    # cheaper than Gaussian samples, and the model cannot tell the difference.
    a = rng.integers(0, 256, frames.shape, dtype=np.uint8).astype(np.float32)
    a += rng.integers(0, 256, frames.shape, dtype=np.uint8)
    a -= 255
    a *= noise * 255 / (255 / np.sqrt(6))
    a += frames * 255 + 0.5
    np.clip(a, 0, 255, out=a)
    return a.astype(np.uint8)


def _appearance_chunk(rng: np.random.Generator, n: int, g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    t, s = g.frames, g.size
    labels = rng.integers(0, 10, n)
    frames = _canvas(rng, n, g)
    # Distractors first (behind): two small digits of other classes, moving faster.
    other = (labels + rng.integers(1, 10, n)) % 10
    k = 9
    sprites = render_sprites(other, k, rng, max_rotate=0.5)
    path = _place(rng, _drift(rng, n, t, (0.5, 2.0)), k, s, margin=3)
    _composite(frames, sprites, path[..., 0], path[..., 1], _bright_colours(rng, n), rng.uniform(0.3, 0.6, n))
    k = 22
    sprites = render_sprites(labels, k, rng, max_rotate=0.3, scale=(0.75, 1.0), shear=0.2)
    path = _place(rng, _drift(rng, n, t, (0.0, 0.6)), k, s, margin=1)
    _composite(frames, sprites, path[..., 0], path[..., 1], _bright_colours(rng, n), rng.uniform(0.75, 1.0, n))
    return _finish(frames, rng, 0.06), labels.astype(np.int32)


def _shape_sprites(n: int, k: int, shape: str) -> np.ndarray:
    """[n, k, k] masks of a filled disk or a hollow square (the two actors of the motion task)."""
    c = (np.arange(k) - (k - 1) / 2)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    if shape == "disk":
        mask = np.clip(k / 2 - np.sqrt(yy ** 2 + xx ** 2), 0, 1)
    else:
        edge = np.maximum(np.abs(yy), np.abs(xx))
        mask = ((edge <= (k - 1) / 2) & (edge >= (k - 1) / 2 - 2)).astype(np.float32)
    return np.broadcast_to(mask.astype(np.float32), (n, k, k))


def _motion_chunk(rng: np.random.Generator, n: int, g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    t, s = g.frames, g.size
    labels = rng.integers(0, len(MOTION_LABELS), n)
    dirs = np.array(list(_DIRECTIONS.values()), np.float32)
    disk_first = labels < 4
    first_dir = dirs[labels % 4]
    other_dir = dirs[rng.integers(0, 4, n)]
    # The first actor moves for the first half of the clip while the other keeps still, then they
    # swap. The split is at a random step symmetric around the middle, so how long each actor moves
    # says nothing about which moved first.
    steps = t - 1
    turn = rng.integers(steps // 2, steps - steps // 2 + 1, n)
    speed = rng.uniform(2.0, 3.0, n).astype(np.float32)
    idx = np.arange(steps)[None, :, None]
    early = (idx < turn[:, None, None]).astype(np.float32)
    first_path = np.cumsum(early * first_dir[:, None, :] * speed[:, None, None], axis=1)
    second_path = np.cumsum((1 - early) * other_dir[:, None, :] * speed[:, None, None], axis=1)
    zero = np.zeros((n, 1, 2), np.float32)
    first_path = np.concatenate([zero, first_path], 1)
    second_path = np.concatenate([zero, second_path], 1)
    disk_path = np.where(disk_first[:, None, None], first_path, second_path)
    square_path = np.where(disk_first[:, None, None], second_path, first_path)
    frames = _canvas(rng, n, g)
    k = 11
    for shape, path in (("square", square_path), ("disk", disk_path)):
        path = _place(rng, path + rng.normal(0, 0.3, path.shape), k, s)
        _composite(frames, _shape_sprites(n, k, shape), path[..., 0], path[..., 1], _bright_colours(rng, n))
    return _finish(frames, rng, 0.05), labels.astype(np.int32)


def generate(task: str, split: str, *, seed: int = 0, geometry: Geometry = Geometry(),
             count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(videos uint8 [N, T, S, S, 3], labels int32 [N]) for one split, deterministic from the seed."""
    if task not in TASKS:
        raise ValueError(task)
    n = SPLIT_SIZES[split] if count is None else count
    chunk_fn = _motion_chunk if task == "motion" else _appearance_chunk
    videos = np.empty((n, geometry.frames, geometry.size, geometry.size, 3), np.uint8)
    labels = np.empty((n,), np.int32)
    for c, start in enumerate(range(0, n, _CHUNK)):
        m = min(_CHUNK, n - start)
        videos[start:start + m], labels[start:start + m] = chunk_fn(_rng(seed, task, split, c), m, geometry)
    return videos, labels


def cached_paths(task: str, split: str, seed: int, geometry: Geometry) -> tuple[Path, Path]:
    folder = cache_dir() / "embedded" / f"{task}-v{VERSION}-seed{seed}-{geometry.frames}x{geometry.size}"
    return folder / f"{split}-video.npy", folder / f"{split}-label.npy"


def load(task: str, split: str, *, seed: int = 0, geometry: Geometry = Geometry()) -> tuple[np.ndarray, np.ndarray]:
    """The cached split (memory-mapped, so concurrent runs share the page cache), generating it once: runs that
    miss it together (a sweep's first cells, test workers) wait on the folder's lock for the first one's files
    instead of each generating the same clips."""
    vpath, lpath = cached_paths(task, split, seed, geometry)
    if (found := _cached(vpath, lpath, split)) is not None:
        return found
    vpath.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(vpath.parent):
        if (found := _cached(vpath, lpath, split)) is not None:
            return found
        videos, labels = generate(task, split, seed=seed, geometry=geometry)
        # Labels last: a reader that finds the labels file finds the videos file complete too.
        atomic_save_npy(vpath, videos)
        atomic_save_npy(lpath, labels)
    return np.load(vpath, mmap_mode="r", allow_pickle=False), labels


def _cached(vpath: Path, lpath: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        videos, labels = np.load(vpath, mmap_mode="r", allow_pickle=False), np.load(lpath, allow_pickle=False)
    except (FileNotFoundError, ValueError, OSError):
        return None
    # The size is not in the file name: a split that grew (test: 500 clips before 2026-12-01) is made again.
    return (videos, labels) if len(videos) == len(labels) == SPLIT_SIZES[split] else None
