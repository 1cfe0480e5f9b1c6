"""Multi-view metrics: pure numpy functions of logits and labels.

Multi-view testing (paper Sec. 4.1): each video is seen as T temporal clips x S spatial crops, and the
video's prediction is the mean of the views' raw logits (the reference averages logits, not softmax
scores; for a 1x1 evaluation the two are the same thing).
"""

from __future__ import annotations

import itertools

import numpy as np


def average_views(view_logits: np.ndarray) -> np.ndarray:
    """[N, V, C] per-view logits -> [N, C] per-video logits (mean of the raw logits over the V views)."""
    view_logits = np.asarray(view_logits)
    if view_logits.ndim != 3:
        raise ValueError(f"expected [videos, views, classes], got shape {view_logits.shape}")
    return view_logits.astype(np.float32).mean(axis=1)


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """bool [N]: the label is among the k highest logits. Ties are broken towards the lower class index,
    the same as argmax, so top-1 hits agree with `argmax(logits) == label`."""
    logits = np.asarray(logits)
    k = min(k, logits.shape[-1])
    # A stable sort of -logits keeps the lower index first among equal logits.
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return (top == np.asarray(labels)[:, None]).any(axis=-1)


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C]: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return cm


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean over the classes that occur of per-class recall (Epic Kitchens' and SSv2's "mean class accuracy")."""
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / support[present]).mean())


def summarise(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top-1, top-5, mean class accuracy and the confusion matrix of per-video logits [N, C]."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    n = len(labels)
    if n == 0:
        return {"top1": float("nan"), "top5": float("nan"), "mean_class_accuracy": float("nan"),
                "confusion": np.zeros((num_classes, num_classes), np.int64)}
    cm = confusion_matrix(np.argmax(logits, axis=-1), labels, num_classes)
    return {"top1": float(topk_hits(logits, labels, 1).mean()), "top5": float(topk_hits(logits, labels, 5).mean()),
            "mean_class_accuracy": mean_class_accuracy(cm), "confusion": cm}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(class indices [N, k], probabilities [N, k]) of the k most likely classes, most likely first."""
    probs = softmax(logits)
    k = min(k, probs.shape[-1])
    idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return idx, np.take_along_axis(probs, idx, axis=-1)


# ---- several heads side by side in the logits (Epic-Kitchens: verb 97 then noun 300) ------------------------------
# `heads` = ((name, classes), ...) in the logits' order; labels int32 [N, H]. The action is every head at once: its
# top-1 is right when each head's best class is, its top-k ranks joint classes by the product of the heads'
# softmaxes (Scenic's joint accuracy), coded mixed-radix with head 0 most significant (verb * 300 + noun).


def split_heads(logits: np.ndarray, heads) -> list[np.ndarray]:
    """[N, sum(classes)] -> each head's [N, classes]."""
    bounds = np.cumsum([0] + [int(n) for _, n in heads])
    return [np.asarray(logits)[:, a:b] for a, b in itertools.pairwise(bounds)]


def action_codes(labels: np.ndarray, heads) -> np.ndarray:
    labels = np.asarray(labels, np.int64)
    code = labels[:, 0].copy()
    for h, (_, n) in enumerate(heads[1:], start=1):
        code = code * int(n) + labels[:, h]
    return code


def joint_top_k(logits: np.ndarray, heads, k: int = 5, with_probs: bool = False):
    """int64 [N, min(k, prod(classes))]: the most likely joint classes, best first (and with `with_probs` their
    probabilities, the product of the heads'). The best k joint classes use only each head's k best classes, so k^H
    candidates are ranked (ties towards the lower code)."""
    codes, logp = None, None
    for part, (_, n) in zip(split_heads(logits, heads), heads):
        z = np.asarray(part, np.float64)
        lp = z - z.max(axis=-1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(axis=-1, keepdims=True))
        idx = np.argsort(-lp, axis=-1, kind="stable")[:, :min(k, int(n))]
        top = np.take_along_axis(lp, idx, axis=-1)
        if codes is None:
            codes, logp = idx, top
            continue
        codes = (codes[:, :, None] * int(n) + idx[:, None, :]).reshape(len(z), -1)
        logp = (logp[:, :, None] + top[:, None, :]).reshape(len(z), -1)
        order = np.lexsort((codes, -logp), axis=-1)[:, :k]  # by log-probability, then by code
        codes, logp = np.take_along_axis(codes, order, -1), np.take_along_axis(logp, order, -1)
    return (codes, np.exp(logp).astype(np.float32)) if with_probs else codes


def decode_action(code: int, heads) -> list[int]:
    """A joint class's code -> each head's class."""
    out = []
    for _, n in reversed(heads):
        code, c = divmod(int(code), int(n))
        out.append(c)
    return out[::-1]


def action_hits(logits: np.ndarray, labels: np.ndarray, heads) -> np.ndarray:
    """bool [N]: every head's best class is its label."""
    labels = np.asarray(labels)
    return np.all([topk_hits(x, labels[:, h], 1) for h, x in enumerate(split_heads(logits, heads))], axis=0)


def summarise_heads(logits: np.ndarray, labels: np.ndarray, heads) -> dict:
    """The action's top-1/top-5/mean class accuracy as top1/top5/mean_class_accuracy (what tables report: the
    paper's EK figures are action accuracy), `action_*` the same, `<head>_*` each head's, and the first head's
    confusion matrix (the source's `label_names` are that head's)."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if len(labels) == 0:
        out = {"top1": float("nan"), "top5": float("nan"), "mean_class_accuracy": float("nan"),
               "confusion": np.zeros((int(heads[0][1]),) * 2, np.int64)}
        for name in ["action"] + [n for n, _ in heads]:
            out |= {f"{name}_{m}": float("nan") for m in ("top1", "top5", "mean_class_accuracy")}
        return out
    out = {}
    for h, ((name, n), part) in enumerate(zip(heads, split_heads(logits, heads))):
        s = summarise(part, labels[:, h], int(n))
        out |= {f"{name}_{m}": s[m] for m in ("top1", "top5", "mean_class_accuracy")}
        if h == 0:
            out["confusion"] = s["confusion"]
    action = action_codes(labels, heads)
    hits1 = action_hits(logits, labels, heads)
    out["action_top1"] = float(hits1.mean())
    out["action_top5"] = float((joint_top_k(logits, heads, 5) == action[:, None]).any(axis=-1).mean())
    out["action_mean_class_accuracy"] = float(np.mean([hits1[action == a].mean() for a in np.unique(action)]))
    return out | {m: out[f"action_{m}"] for m in ("top1", "top5", "mean_class_accuracy")}
