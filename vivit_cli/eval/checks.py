"""Checks that refuse an evaluation before it starts (and so before anything is written)."""

from __future__ import annotations

import numpy as np

from vivit_cli.errors import VivitError


def distinct_views(num_frames: int, height: int, width: int, span: int, views: tuple[int, int], cfg) -> str | None:
    """Why a clip of this size cannot give `views` distinct views, or None when it can.

    T temporal clips are spread over the frames left after one clip's span, so T > 1 needs T - 1 frames
    of room; S spatial crops slide along the long side of the frame resized to `data.eval_resize`
    (`data.transforms.view_offsets`), so S > 1 needs S - 1 pixels of room there. Fewer than that would evaluate
    the same pixels several times and call it multi-view testing."""
    from vivit_cli.data.api import short_side
    from vivit_cli.data.transforms import resized_size

    n_t, n_s = views
    if n_t > 1 and num_frames - span < n_t - 1:
        return (f"{n_t} temporal clips of {span} frames need videos of at least {span + n_t - 1} frames, "
                f"and this one has {num_frames}")
    h, w = resized_size(height, width, short_side(cfg))
    if n_s > 1 and max(h, w) - cfg.data.crop < n_s - 1:
        return (f"{n_s} spatial crops of {cfg.data.crop} px need frames whose long side resized "
                f"(short side {short_side(cfg)}, data.eval_resize) is at least {cfg.data.crop + n_s - 1} px, "
                f"and this one's {width}x{height} gives {w}x{h}")
    return None


def _clip_sizes(split):
    """(num_frames, height, width) of each clip of a split, from metadata where there is some."""
    from vivit_cli.data import sources

    if isinstance(split, sources.ArraySplit):
        n, t, h, w = split._array().shape[:4]
        return [(t, h, w)] * n
    if isinstance(split, sources.VideoSplit):
        return [(t, m["height"], m["width"]) for t, m in zip(split.frame_counts(), split.metas)]
    if len(split) == 0:
        return []
    reader = split.reader(0)  # e.g. TFDS: decoding every example to size it would be a second pass
    first = reader.frames(np.array([0]))
    return [(reader.num_frames, first.shape[1], first.shape[2])]


def check_views(source, split_name: str, cfg, views: tuple[int, int]) -> None:
    """Refuses views that more than `data.max_skip_fraction` of the split cannot provide."""
    split = source.split(split_name)
    if len(split) == 0:
        raise VivitError(f"{source.spec}: split {split_name!r} is empty")
    span = (cfg.data.frames - 1) * cfg.data.stride + 1
    sizes = _clip_sizes(split)
    problems = [(i, why) for i, (t, h, w) in enumerate(sizes)
                if (why := distinct_views(t, h, w, span, views, cfg)) is not None]
    if problems and len(problems) > cfg.data.max_skip_fraction * len(sizes):
        i, why = problems[0]
        where = split.where(i) if len(sizes) == len(split) else split.name
        raise VivitError(f"--views {views[0]}x{views[1]} is more than the clips allow: {why} ({where}; "
                         f"{len(problems)} of {len(sizes)} clips of split {split_name} of {source.spec})")


def check_clips_array(clips: np.ndarray, cfg, where: str) -> None:
    """`predict --array` input: float [N, T, H, W, 3] with T = data.frames, H = W = data.crop."""
    want = f"[N, {cfg.data.frames}, {cfg.data.crop}, {cfg.data.crop}, 3]"
    if clips.ndim != 5:
        raise VivitError(f"{where}: expected clips {want}, got rank {clips.ndim} shape {list(clips.shape)}")
    if not np.issubdtype(clips.dtype, np.floating):
        raise VivitError(f"{where}: expected float clips in [-1, 1] (the model input), got {clips.dtype}")
    n, t, h, w, c = clips.shape
    if t != cfg.data.frames:
        raise VivitError(f"{where}: clips have {t} frames, the model takes data.frames={cfg.data.frames} "
                         f"(expected {want})")
    if (h, w, c) != (cfg.data.crop, cfg.data.crop, 3):
        raise VivitError(f"{where}: clips are {h}x{w}x{c}, the model takes {cfg.data.crop}x{cfg.data.crop}x3 "
                         f"(expected {want})")
    if n == 0:
        raise VivitError(f"{where}: no clips (N = 0)")
