"""What an evaluation leaves behind: the eval.json entry, saved logits, a confusion-matrix plot.

eval.json maps "<split>@<T>x<S>" to one evaluation, so evaluations of several splits and view counts
coexist; an evaluation on other data than the run's own (`--data`) gets "+<hash of the source>"
appended to its key, so it cannot overwrite the entry that reports read for the run's own data.
Nothing here runs unless the evaluation succeeded, and every file is replaced atomically.

Every evaluation also leaves its per-clip predictions beside eval.json / summary.json, named by their
`"predictions"` key (the trainer's final eval: `predictions/<key>.npz`; `vivit eval`:
`predictions/eval/<key>.npz`): `index` int32 [N] (the clip's index in the split, unique, ascending), `label`
int32 [N] and `top5` int32 [N, k] (the k = min(5, classes) best classes, best first), so that reports compare
runs clip by clip (`report.store.read_predictions` reads exactly this). A multi-head model's (Epic-Kitchens:
verb, noun) has `label` int32 [N, H], `top5` int32 [N, H, k] (each head's best classes, k = min(5, smallest head)),
`action_top5` int32 [N, k'] (the best joint classes under the product of the heads' softmaxes, coded mixed-radix:
verb * 300 + noun) and `head_sizes` int32 [H], from which the action's top-1 (every head's best right) and top-5
follow.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from vivit_cli.errors import VivitError
from vivit_cli.io import as_path, atomic_write_bytes, atomic_write_json, folder_lock, is_remote, read_json, write_json

EVAL_FILE = "eval.json"
PREDICTIONS_DIR = "predictions"


def eval_key(split: str, views: tuple[int, int], source: str | None = None, own_source: str | None = None) -> str:
    key = f"{split}@{views[0]}x{views[1]}"
    if source and own_source and source != own_source:
        key += "+" + hashlib.sha256(source.encode()).hexdigest()[:8]
    return key


def entry(result, *, checkpoint: str, step: int | None) -> dict:
    m = result.metrics
    # A multi-head model's: top1/top5 are the action's, and each head's and the action's figures are there by name.
    named = {k: v for k, v in m.items() if k.endswith(("_top1", "_top5", "_mean_class_accuracy"))}
    heads = {"heads": ",".join(f"{n}:{c}" for n, c in result.heads)} if getattr(result, "heads", ()) else {}
    out = {"top1": m["top1"], "top5": m["top5"], "mean_class_accuracy": m["mean_class_accuracy"], **named, **heads,
           "split": result.split, **result.stats, "checkpoint": checkpoint, "step": step,
           "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


def merge_eval_json(home, key: str, value: dict):
    """Adds/replaces one key of home/eval.json, keeping the others. The folder is locked meanwhile so that
    two evaluations finishing together both land (flock on the folder itself: no lock file is left).
    An object store has no such lock: there two evaluations of one run finishing together may drop one."""
    if is_remote(home):
        path = home / EVAL_FILE
        current = read_json(path)
        write_json(path, (current if isinstance(current, dict) else {}) | {key: value})
        return path
    path = Path(home) / EVAL_FILE
    with folder_lock(home):
        current = read_json(path)
        data = current if isinstance(current, dict) else {}
        data[key] = value
        atomic_write_json(path, data)
    return path


def _npy_bytes(save) -> bytes:
    buf = io.BytesIO()
    save(buf)
    return buf.getvalue()


def save_logits(path: str | Path, result) -> None:
    """.npy: the per-video logits [N, C]; otherwise an .npz with logits, view_logits [N, V, C], label, index."""
    path = Path(path)
    if path.suffix == ".npy":
        data = _npy_bytes(lambda f: np.save(f, result.logits.astype(np.float32), allow_pickle=False))
    else:
        arrays = {"logits": result.logits.astype(np.float32), "label": result.labels.astype(np.int32),
                  "index": result.index.astype(np.int32)}
        if result.view_logits is not None:
            arrays["view_logits"] = result.view_logits.astype(np.float32)
        data = _npy_bytes(lambda f: np.savez(f, **arrays))
    atomic_write_bytes(path, data)


def predictions_arrays(index, label, top5, action_top5=None, head_sizes=None) -> dict[str, np.ndarray]:
    """The predictions file's arrays, sorted by clip index; two rows of one clip would mean two processes read
    the same shard. `action_top5` and `head_sizes` (and `label` [N, H], `top5` [N, H, k]): a multi-head model's."""
    index, label, top5 = np.asarray(index, np.int32), np.asarray(label, np.int32), np.asarray(top5, np.int32)
    order = np.argsort(index, kind="stable")
    n = len(order)
    index, label = index[order], label[order]
    top5 = top5[order].reshape((n, -1) if label.ndim == 1 else (n, label.shape[1], -1))
    if len(np.unique(index)) != len(index):
        raise RuntimeError(f"evaluation saw {len(index) - len(np.unique(index))} clips twice")
    out = {"index": index, "label": label, "top5": top5}
    if action_top5 is not None:
        out["action_top5"] = np.asarray(action_top5, np.int32)[order].reshape(n, -1)
        out["head_sizes"] = np.asarray(head_sizes, np.int32)
    return out


def predictions_path(key: str, *, by_eval: bool = False) -> str:
    """Where the predictions of eval key `key` live, relative to the run folder: summary.json's and the eval.json
    entry's `"predictions"` value. The trainer's final eval writes `predictions/<key>.npz`; `vivit eval` writes
    `predictions/eval/<key>.npz`, so that evaluating another step (or in float32 a bfloat16 run) under the same key
    never replaces the file that summary.json's figures come from."""
    return f"{PREDICTIONS_DIR}/{'eval/' if by_eval else ''}{key}.npz"


def write_predictions(home, key: str, *, index, label, top5, action_top5=None, head_sizes=None,
                      by_eval: bool = False) -> str:
    """Writes the predictions of eval key `key` under `home` (`predictions_path`; whole or not at all; `home` may
    be a gs:// URL) and returns their path relative to `home`."""
    rel = predictions_path(key, by_eval=by_eval)
    arrays = predictions_arrays(index, label, top5, action_top5, head_sizes)
    data = _npy_bytes(lambda f: np.savez(f, **arrays))
    path = as_path(home) / rel
    if is_remote(path):  # one object write is atomic by itself
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        atomic_write_bytes(path, data)
    return rel


def top_classes(logits: np.ndarray, k: int = 5) -> np.ndarray:
    """int32 [N, min(k, C)]: the best classes of per-video logits, best first, ties towards the lower class (the
    order `metrics.topk_hits` ranks by, so the file gives exactly eval.json's top-1/top-5)."""
    logits = np.asarray(logits)
    return np.argsort(-logits, axis=-1, kind="stable")[:, :min(k, logits.shape[-1])].astype(np.int32)


def prediction_rows(result) -> dict[str, np.ndarray]:
    """`write_predictions`' label, top5 (and a multi-head model's action_top5) of an evaluation."""
    if not result.heads:
        return {"label": result.labels, "top5": top_classes(result.logits)}
    from .metrics import joint_top_k, split_heads

    k = min(5, *(n for _, n in result.heads))
    top5 = np.stack([top_classes(x, k) for x in split_heads(result.logits, result.heads)], axis=1)
    return {"label": result.labels, "top5": top5, "action_top5": joint_top_k(result.logits, result.heads, 5),
            "head_sizes": [n for _, n in result.heads]}


def save_npy(path: str | Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, _npy_bytes(lambda f: np.save(f, array, allow_pickle=False)))


def check_writable(path: str | Path | None, what: str) -> None:
    """Fails before the (long) evaluation rather than after it, when an output file cannot be written."""
    if path is None:
        return
    parent = Path(path).expanduser().absolute().parent
    if not parent.is_dir():
        raise VivitError(f"{what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise VivitError(f"{what} {path}: folder {parent} is not writable")
    if Path(path).is_dir():
        raise VivitError(f"{what} {path}: is a folder")
