"""Multi-view evaluation of a model on one split: the loop around the data pipeline and the sharded forward.

Every process reads its own shard of the split (`data.eval_iterator`, padded so all processes run the
same number of batches) and feeds its rows of each global batch; the forward pass returns the whole
global batch's per-view logits to every process, so each one ends with every video's logits and the
same metrics. Padding rows (the tail of the split, and the rounding of the batch to the device count)
carry mask=False and are dropped on the host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from vivit_cli.errors import VivitError

from . import metrics
from .checks import check_views


@dataclass
class EvalResult:
    split: str
    views: tuple[int, int]
    logits: np.ndarray  # [N, C] per-video logits (mean of the views' raw logits), ordered by split index
    labels: np.ndarray  # [N]
    index: np.ndarray  # [N] position of each video in the split
    metrics: dict  # top1, top5, mean_class_accuracy, confusion [C, C]
    stats: dict  # videos, clips, seconds, throughput, batch and device facts
    view_logits: np.ndarray | None = None  # [N, V, C] when asked for
    label_names: tuple[str, ...] = field(default_factory=tuple)
    heads: tuple[tuple[str, int], ...] = ()  # a multi-head model's ((name, classes), ...); labels are then [N, H]


def default_batch(cfg, num_views: int) -> int:
    """About as many clips per step as training used (a video brings V clips)."""
    return max(1, cfg.train.batch_size // num_views)


def evaluate(cfg, params, num_classes: int, *, split: str, views: tuple[int, int], batch_size: int | None = None,
             keep_view_logits: bool = False) -> EvalResult:
    """Evaluates `params` on `split` of `cfg.data.source` with T x S views per video."""
    from vivit_cli import data
    from vivit_cli import runtime

    runtime.setup()
    import jax

    from .forward import Forward

    source = data.open_source(cfg)
    heads = check_heads(cfg, source, num_classes)
    n_split = source.num_examples(split)  # an unknown split is refused here, naming the ones there are
    n_t, n_s = views
    check_views(source, split, cfg, views)
    num_views = n_t * n_s

    fwd = Forward(cfg, params, num_classes)
    requested = batch_size or default_batch(cfg, num_views)
    local = fwd.local_batch(requested)
    pid, pcount = jax.process_index(), jax.process_count()
    batches = data.eval_iterator(cfg, split=split, views=views, batch_size=local, shard_index=pid,
                                 shard_count=pcount)
    shape = (local, num_views, cfg.data.frames, cfg.data.crop, cfg.data.crop, 3)
    extra_spec = {"label": np.zeros((0, len(heads)) if heads else 0, np.int32), "index": np.zeros(0, np.int32),
                  "mask": np.zeros(0, bool)}
    fwd.compile(shape, extra_spec)

    got_logits, got_views, got_labels, got_index = [], [], [], []
    forward_s, steps = 0.0, 0
    t0 = time.perf_counter()
    for batch in batches:
        t_f = time.perf_counter()
        logits, ex = fwd(batch["video"], {k: batch[k] for k in extra_spec})
        forward_s += time.perf_counter() - t_f
        steps += 1
        keep = ex["mask"].astype(bool)
        got_logits.append(metrics.average_views(logits[keep]))
        if keep_view_logits:
            got_views.append(logits[keep])
        got_labels.append(ex["label"][keep])
        got_index.append(ex["index"][keep])
    wall = time.perf_counter() - t0

    index = np.concatenate(got_index) if got_index else np.zeros(0, np.int32)
    order = np.argsort(index, kind="stable")
    if len(np.unique(index)) != len(index):  # would mean two processes read the same shard
        raise RuntimeError(f"evaluation saw {len(index) - len(np.unique(index))} videos twice")
    logits = (np.concatenate(got_logits) if got_logits else np.zeros((0, num_classes), np.float32))[order]
    labels = (np.concatenate(got_labels) if got_labels else extra_spec["label"])[order]
    view_logits = np.concatenate(got_views)[order] if keep_view_logits and got_views else None
    n = len(labels)
    if n == 0:
        raise VivitError(f"{source.spec}: no clip of split {split!r} could be decoded")
    global_batch = local * pcount
    stats = {
        "videos": n, "split_size": n_split, "skipped": n_split - n, "views": f"{n_t}x{n_s}",
        "views_per_video": num_views, "clips": n * num_views, "batch_size": global_batch, "steps": steps,
        "eval_seconds": round(wall, 3), "compile_seconds": round(fwd.compile_seconds, 3),
        "clips_per_s": round(n * num_views / wall, 2) if wall > 0 else None,
        "videos_per_s": round(n / wall, 2) if wall > 0 else None,
        # per clip the devices computed, padding included: the model's cost, not the pipeline's
        "forward_ms_per_clip": round(1000 * forward_s / max(steps * global_batch * num_views, 1), 4),
        "devices": jax.device_count(), "processes": pcount, "device": runtime.device_description(),
        "source": source.spec, "averaging": "mean of raw logits over views",
    }
    summary = metrics.summarise_heads(logits, labels, heads) if heads else metrics.summarise(logits, labels,
                                                                                              num_classes)
    return EvalResult(split=split, views=(n_t, n_s), logits=logits, labels=labels, index=index[order],
                      metrics=summary, stats=stats, view_logits=view_logits, label_names=tuple(source.label_names),
                      heads=heads)


def check_heads(cfg, source, num_classes: int) -> tuple[tuple[str, int], ...]:
    """The model's heads (() for one), refused unless they are the source's, by name, size and order."""
    from vivit_cli import config

    model = config.parse_heads(cfg.data.heads)
    got = tuple((str(name), len(names)) for name, names in getattr(source, "heads", ()) or ())
    got = got if len(got) > 1 else ()
    if model != got:
        def show(heads):
            return config.format_heads(heads) or "one head"

        raise VivitError(f"data.source={source.spec} has {show(got)}, the model has {show(model)} (data.heads)")
    if not model and source.num_classes != num_classes:
        raise VivitError(f"data.source={source.spec} has {source.num_classes} classes, the model has {num_classes}")
    return model
