"""Prediction: raw logits of preprocessed clip arrays, and top-k labels of video files.

Arrays are the model's input exactly (float [N, T, H, W, 3] in [-1, 1]; no resizing, no normalisation)
and give float32 logits, so another implementation can be compared against this one number for number.
Video files go through the same decoding and view sampling as `vivit eval` on a folder of videos
(PyAV, short side resized to `data.eval_resize`, T x S crop x crop views, logits averaged over views), so a file
predicted here gets the label that evaluation gives it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vivit_cli.errors import VivitError

from . import metrics
from .checks import check_clips_array, distinct_views


def load_clips(path: str | Path, cfg) -> np.ndarray:
    """The clips of a .npy file, memory-mapped, checked against the model's input shape."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise VivitError(f"--array {p}: no such file")
    try:
        clips = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # allow_pickle=False refuses object arrays with ValueError
        raise VivitError(f"--array {p}: not a readable .npy array ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(clips, np.ndarray):
        raise VivitError(f"--array {p}: expected one .npy array, got {type(clips).__name__}")
    check_clips_array(clips, cfg, f"--array {p}")
    return clips


def predict_array(cfg, params, num_classes: int, clips: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """float32 logits [N, C] of clips [N, T, H, W, 3]."""
    from vivit_cli import runtime

    runtime.setup()
    from .forward import Forward, predict_rows

    fwd = Forward(cfg, params, num_classes)
    logits = predict_rows(fwd, lambda lo, hi: np.asarray(clips[lo:hi], np.float32)[:, None], len(clips), batch_size)
    return logits[:, 0]


def _video_split(files: list[str], cfg, views: tuple[int, int]):
    from vivit_cli.data import sources
    from vivit_cli.data.api import short_side
    from vivit_cli.data.video import DecodeError, probe

    span = (cfg.data.frames - 1) * cfg.data.stride + 1
    metas = []
    for f in files:
        if not Path(f).is_file():
            raise VivitError(f"{f}: no such video file")
        try:
            meta = probe(f)
        except DecodeError as e:
            raise VivitError(f"{f}: {e}") from None
        if meta["num_frames"] < span:
            raise VivitError(f"{f}: only {meta['num_frames']} frames, a clip needs {span} "
                             "(data.frames x data.stride)")
        why = distinct_views(meta["num_frames"], meta["height"], meta["width"], span, views, cfg)
        if why:
            raise VivitError(f"{f}: --views {views[0]}x{views[1]} is more than the video allows: {why}")
        metas.append(meta)
    return sources.VideoSplit("predict", np.zeros(len(files), np.int32), paths=[str(f) for f in files],
                              metas=metas, short_side=short_side(cfg))


def decode_views(files: list[str], cfg, views: tuple[int, int]) -> np.ndarray:
    """float32 [N, V, T, crop, crop, 3]: the views `vivit eval` would take of each file."""
    from vivit_cli.data.pipeline import EvalMap, clip_spec

    split = _video_split(files, cfg, views)
    to_views = EvalMap(split, clip_spec(cfg, flip=False), views, max_skip_fraction=1.0)
    out = []
    for i, f in enumerate(files):
        ex = to_views(i)
        if ex is None:
            raise VivitError(f"{f}: {to_views.skips.failed.get(i, 'cannot be decoded')}")
        out.append(ex["video"])
    return np.stack(out)


def predict_videos(cfg, params, num_classes: int, files: list[str], *, views: tuple[int, int] = (1, 1),
                   top_k: int = 5, label_names=(), batch_size: int = 8) -> list[dict]:
    """Per file: top-k classes with softmax probabilities of the view-averaged logits (a multi-head model's: top-k
    actions), and the logits."""
    from vivit_cli import config, runtime

    if top_k <= 0:
        raise VivitError(f"--top-k={top_k}: must be positive")
    videos = decode_views(files, cfg, views)  # all files are checked before any compute starts
    runtime.setup()
    from .forward import Forward, predict_rows

    fwd = Forward(cfg, params, num_classes)
    logits = metrics.average_views(predict_rows(fwd, lambda lo, hi: videos[lo:hi], len(videos), batch_size))
    names = list(label_names) if len(label_names) == num_classes else [str(i) for i in range(num_classes)]
    heads = config.parse_heads(cfg.data.heads)
    if heads:  # a multi-head model (Epic-Kitchens): the most likely actions, one class of every head each
        return [{"file": str(f), "views": f"{views[0]}x{views[1]}", "top": tops, "logits": logits[i]}
                for i, (f, tops) in enumerate(zip(files, _top_actions(logits, heads, top_k, names)))]
    idx, probs = metrics.top_k(logits, top_k)
    return [{"file": str(f), "views": f"{views[0]}x{views[1]}",
             "top": [{"index": int(c), "label": names[c], "probability": float(p)} for c, p in zip(idx[i], probs[i])],
             "logits": logits[i]}
            for i, f in enumerate(files)]


def _top_actions(logits: np.ndarray, heads, k: int, names: list[str]) -> list[list[dict]]:
    """Per clip: the k best joint classes under the product of the heads' softmaxes, each as its heads' classes
    (`classes`: {head: class id in that head}, e.g. Epic-Kitchens' verb_class and noun_class; `index`: their columns
    in the logits) and one label, the heads' names joined by " + "."""
    codes, probs = metrics.joint_top_k(logits, heads, k, with_probs=True)
    offsets = np.cumsum([0] + [n for _, n in heads])[:-1]
    out = []
    for row_codes, row_probs in zip(codes, probs):
        tops = []
        for code, p in zip(row_codes, row_probs):
            per_head = [int(c) for c in metrics.decode_action(code, heads)]
            cols = [int(o) + c for o, c in zip(offsets, per_head)]
            tops.append({"classes": {name: c for (name, _), c in zip(heads, per_head)}, "index": cols,
                         "label": " + ".join(names[c] for c in cols), "probability": float(p)})
        out.append(tops)
    return out
