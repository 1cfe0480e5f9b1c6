"""Multi-view metrics: pure numpy functions of logits and labels.

Multi-view testing (paper Sec. 4.1): each video is seen as T temporal clips x S spatial crops, and the
video's prediction is the mean of the views' raw logits (the reference averages logits, not softmax
scores; for a 1x1 evaluation the two are the same thing).
"""

from __future__ import annotations

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
