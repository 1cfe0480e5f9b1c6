"""The grain input pipeline: deterministic, resumable, sharded train and eval iterators.

Train: a global stream of per-epoch permutations, cut into global batches of which each process reads its
own rows (`GlobalOrder`) -> per-example map (decode + crop + augment, with an RNG from the seed and the
global position, so the result depends on neither worker count, timing nor process count) -> batch. Eval: every example of this
process's shard once, in order, as T x S views, padded to full batches with mask=False rows.
"""

from __future__ import annotations

import numpy as np

from vivit_cli.errors import VivitError

from . import transforms as T
from .batches import GlobalOrder, masked_batch, pad_batch
from .sources import ArraySplit, Source, Split
from .video import DecodeError

_SKIP = None  # what a map returns for a clip that fails to decode; filtered out before batching


def clip_spec(cfg, *, flip: bool | None = None, source: Source | None = None) -> T.ClipSpec:
    d = cfg.data
    if flip is None:
        # Left/right is part of the label on the motion task, so flipping would swap labels. Prepared records
        # augment as the source they came from.
        origin = source.info.get("prepared_from", d.source) if source is not None else d.source
        flip = d.flip if d.flip is not None else not origin.startswith("embedded:motion")
    return T.ClipSpec(frames=d.frames, stride=d.stride, crop=d.crop, scale_min=d.scale_min, scale_max=d.scale_max,
                      flip=flip, color_jitter=d.color_jitter, randaugment_layers=d.randaugment_layers,
                      randaugment_magnitude=d.randaugment_magnitude, resize=d.eval_resize,
                      on_device=d.crop_on_device)


def train_batch_keys(cfg) -> tuple[str, ...]:
    """What a train batch holds: the cropped clips, or with data.crop_on_device each clip's uint8 window and
    geometry (`transforms.crop_window`), which the compiled step crops."""
    return ("window", "geometry", "label") if cfg.data.crop_on_device else ("video", "label")


def _mark_absl_parsed() -> None:
    # grain 0.2.18 workers read an absl flag and crash unless flags count as parsed (google/grain#1355).
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class _Skips:
    """Counts clips that failed to decode at run time (in this process), and fails past the allowed fraction."""

    def __init__(self, split: Split, max_fraction: float):
        self.split, self.max_fraction, self.failed = split, max_fraction, {}

    def record(self, index: int, problem: str) -> None:
        self.failed[index] = problem
        if len(self.failed) > max(1, self.max_fraction * len(self.split)):
            where = self.split.where(index)
            raise VivitError(f"{where}: {problem} ({len(self.failed)} of {len(self.split)} clips in split "
                             f"{self.split.name} failed to decode, more than "
                             f"data.max_skip_fraction={self.max_fraction})")


class TrainMap:
    """index -> {"video": float32 [T, crop, crop, 3], "label": int32}, or _SKIP when the file is broken. With
    `spec.on_device`, {"window": uint8 [T, canvas, canvas, 3], "geometry": float32 [7], "label"} instead."""

    def __init__(self, split: Split, spec: T.ClipSpec, max_skip_fraction: float):
        self.split, self.spec, self.skips = split, spec, _Skips(split, max_skip_fraction)

    def __call__(self, index, rng: np.random.Generator):
        index = int(index)
        try:
            reader, label, _ = self.split.example(index)
            start = T.random_start(rng, reader.num_frames, self.spec)
            frames = reader.frames(T.frame_indices(start, self.spec, reader.num_frames))
        except DecodeError as e:
            self.skips.record(index, str(e))
            return _SKIP
        if self.spec.on_device:
            return self._window(index, frames, rng) | {"label": np.asarray(label, np.int32)}
        return {"video": T.train_clip(frames, rng, self.spec), "label": np.asarray(label, np.int32)}

    def _window(self, index: int, frames: np.ndarray, rng: np.random.Generator) -> dict:
        cut = T.train_window(frames, rng, self.spec)
        if cut is None:
            raise VivitError(f"{self.split.where(index)}: frames of {frames.shape[1]}x{frames.shape[2]} are larger "
                             f"than data.crop_on_device's window of {T.device_canvas(self.spec)} pixels allows: it "
                             f"needs frames at the short side {self.spec.short_side} (`vivit data prepare` stores "
                             "them so), or data.crop_on_device=false")
        return {"window": cut[0], "geometry": cut[1]}


class BatchTrainMap:
    """[b] (index, global position) pairs -> the batch that `TrainMap` per clip, then batching, gives for them, bit
    for bit (tests/test_data.py compares the two), for clips held in an array (an `ArraySplit`: nothing to decode,
    so nothing is ever skipped). Each clip still draws from its own RNG in TrainMap's order (start, crop, then
    augmentation); the pixel work is done for the whole batch at once: one gather, one crop-resize (the same BLAS
    products as clip by clip: `transforms.crop_resize_batch`), one scaling in place."""

    def __init__(self, split: ArraySplit, spec: T.ClipSpec, seed: int):
        self.split, self.spec, self.seed = split, spec, seed

    def __call__(self, batch):
        indices, positions = (np.asarray(x) for x in batch)
        spec, videos = self.spec, self.split._array()
        _, num_frames, h, w, _ = videos.shape
        rngs = [np.random.default_rng([self.seed, int(g)]) for g in positions]
        wanted, boxes = [], []
        for rng in rngs:
            wanted.append(T.frame_indices(T.random_start(rng, num_frames, spec), spec, num_frames))
            boxes.append(T.crop_box(h, w, rng, spec))
        frames = np.asarray(videos[indices[:, None], np.stack(wanted)])
        tops, lefts, sizes_h, sizes_w = zip(*boxes)
        clips = T.crop_resize_batch(frames, tops, lefts, sizes_h, sizes_w, spec.crop, spec.crop)
        if not spec.flip_only:
            video = np.stack([T.augment(clip, rng, spec) for clip, rng in zip(clips, rngs)])
        else:  # `augment` with only the flip: its one draw per clip, then `to_unit_range`'s scaling, in place
            if spec.flip:
                flip = np.array([rng.uniform() < 0.5 for rng in rngs])
                clips[flip] = clips[flip, :, :, ::-1]
            video = T.unit_range_in_place(clips)
        labels = np.asarray(self.split.labels)[indices].astype(np.int32)
        return {"video": video, "label": labels}


def _is_kept(x) -> bool:
    return x is not None


class _PositionalMap:
    """Runs a (index, rng) map with an RNG drawn from the seed and the *global* position, so augmentation
    does not depend on the process count either."""

    def __init__(self, fn, seed: int):
        self.fn, self.seed = fn, seed

    def __call__(self, item):
        index, g = item
        return self.fn(index, np.random.default_rng([self.seed, g]))


class TrainIterator:
    """Infinite iterator of {"video", "label"} batches with get_state()/set_state() (JSON-able dicts).

    `clips_per_element`: the dataset yields whole batches of this many clips (`BatchTrainMap`); its state then
    counts clips as the per-clip pipeline's does ({"next_index": clips read}), so a checkpoint of either resumes
    the other."""

    def __init__(self, dataset, clips_per_element: int = 1):
        self._it = iter(dataset)
        self._per = clips_per_element

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        try:
            return next(self._it)
        except VivitError:
            raise
        except Exception as e:  # grain wraps errors raised in worker processes; surface ours as one line
            cause = e
            while cause is not None and not isinstance(cause, VivitError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise cause from None
            raise

    def get_state(self) -> dict:
        state = self._it.get_state()
        if self._per > 1:
            return {"next_index": state["next_index"] * self._per}
        return state if isinstance(state, dict) else {"grain": state}

    def set_state(self, state: dict) -> None:
        if self._per > 1:
            clips = state.get("next_index") if isinstance(state, dict) else None
            if not isinstance(clips, int) or clips % self._per:
                raise VivitError(f"data state {state!r} does not name a whole number of batches of {self._per} clips "
                                 "(saved with data.workers > 0 or another batch size?)")
            state = {"next_index": clips // self._per}
        self._it.set_state(state)


def _read_options(split: Split):
    """grain's default thread pool (16 threads, 500 clips read ahead, each `next` polling them all) costs more CPU
    than an in-memory clip's own numpy work (measured with benchmarks/profile_run.py, docs/data.md): none for
    clips held in an array. Decoded video keeps it: PyAV releases the GIL, so the threads decode in parallel. JPEG
    frames (records, DMVR; `Split.in_process_reads`) neither: 16 threads read up to 500 clips ahead on two cores and
    took 17 s to the first batch of 4 at 32x224x224 instead of 2 s, with no faster steady state (data.workers is
    what spreads them over cores)."""
    import grain

    in_process = isinstance(split, ArraySplit) or getattr(split, "in_process_reads", False)
    return grain.ReadOptions(num_threads=0, prefetch_buffer_size=0) if in_process else None


def train_iterator(cfg, *, batch_size: int, shard_index: int = 0, shard_count: int = 1, seed: int | None = None,
                   source: Source | None = None) -> TrainIterator:
    import grain

    from .api import open_source

    if not 0 <= shard_index < shard_count:
        raise VivitError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
    src = source or open_source(cfg)
    split = src.split(cfg.data.train_split)
    seed = cfg.train.seed if seed is None else seed
    if len(split) < shard_count * batch_size:
        raise VivitError(f"{src.spec}: split {split.name} has {len(split)} clips, fewer than one global batch "
                         f"({shard_count} x {batch_size})")
    order = GlobalOrder(len(split), seed, batch_size, shard_index, shard_count)
    if isinstance(split, ArraySplit) and split.segments is None and cfg.data.workers == 0 \
            and not cfg.data.crop_on_device:
        ds = grain.MapDataset.source(order).batch(batch_size, drop_remainder=True)
        ds = ds.map(BatchTrainMap(split, clip_spec(cfg, source=src), seed + 1))
        return TrainIterator(ds.to_iter_dataset(read_options=_read_options(split)), clips_per_element=batch_size)
    clips = TrainMap(split, clip_spec(cfg, source=src), cfg.data.max_skip_fraction)
    ds = grain.MapDataset.source(order).map(_PositionalMap(clips, seed + 1))
    it = ds.to_iter_dataset(read_options=_read_options(split)).filter(_is_kept).batch(batch_size, drop_remainder=True)
    if cfg.data.workers > 0:
        _mark_absl_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.data.workers))
    return TrainIterator(it)


class EvalMap:
    """index -> {"video": float32 [V, T, crop, crop, 3], "label", "index", "mask"} with V = T x S views."""

    def __init__(self, split: Split, spec: T.ClipSpec, views: tuple[int, int], max_skip_fraction: float):
        self.split, self.spec, self.views = split, spec, views
        self.skips = _Skips(split, max_skip_fraction)

    def __call__(self, index):
        index = int(index)
        n_t, n_s = self.views
        try:
            reader, label, _ = self.split.example(index)
            starts = T.even_starts(reader.num_frames, self.spec, n_t)
            wanted = np.concatenate([T.frame_indices(s, self.spec, reader.num_frames) for s in starts])
            frames = reader.frames(wanted)
        except DecodeError as e:
            self.skips.record(index, str(e))
            return _SKIP
        clips = frames.reshape(n_t, self.spec.frames, *frames.shape[1:])
        views = [v for clip in clips for v in T.spatial_views(clip, self.spec, n_s, unit_range=True)]
        return {"video": np.stack(views), "label": np.asarray(label, np.int32),
                "index": np.int32(index), "mask": np.bool_(True)}


def _pad_batches(it, batch_size: int):
    """Groups examples into batches of exactly batch_size, the last one padded with mask=False rows."""
    buf = []
    for ex in it:
        buf.append(ex)
        if len(buf) == batch_size:
            yield _stack(buf)
            buf = []
    if buf:
        yield pad_batch(_stack(buf), batch_size)


def _stack(examples: list[dict]) -> dict:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def eval_iterator(cfg, *, split: str, views: tuple[int, int] = (1, 1), batch_size: int, shard_index: int = 0,
                  shard_count: int = 1, source: Source | None = None):
    """Finite iterator over this process's shard of `split`; every process yields the same number of
    batches (ceil(len / shard_count) rows, padded), so multi-host eval steps stay in lockstep."""
    import grain

    from .api import open_source

    if not 0 <= shard_index < shard_count:
        raise VivitError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
    src = source or open_source(cfg)
    sp = src.split(split)
    n_t, n_s = (int(v) for v in views)
    if n_t <= 0 or n_s <= 0:
        raise VivitError(f"views={views}: both counts must be positive")
    spec = clip_spec(cfg, flip=False)
    ds = grain.MapDataset.range(len(sp))[shard_index::shard_count].map(
        EvalMap(sp, spec, (n_t, n_s), cfg.data.max_skip_fraction))
    it = ds.to_iter_dataset(read_options=_read_options(sp)).filter(_is_kept)
    if cfg.data.workers > 0:
        _mark_absl_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.data.workers))
    per_shard = -(-len(sp) // shard_count)
    rows = -(-per_shard // batch_size) * batch_size
    return _EvalBatches(_pad_batches(it, batch_size), rows // batch_size, batch_size, n_t * n_s, spec)


class _EvalBatches:
    """Pads the tail with all-masked batches so that every shard yields `num_batches` batches."""

    def __init__(self, batches, num_batches: int, batch_size: int, num_views: int, spec: T.ClipSpec):
        self._batches, self.num_batches = batches, num_batches
        self._size, self._video_shape = batch_size, (num_views, spec.frames, spec.crop, spec.crop, 3)
        self._done = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._done >= self.num_batches:
            raise StopIteration
        self._done += 1
        batch = next(self._batches, None)
        if batch is None:  # skipped (broken) clips made this shard shorter
            batch = masked_batch(self._size, self._video_shape)
        return batch
