"""Confusion-matrix PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vivit_cli.io import atomic_write_bytes


def confusion_png(cm: np.ndarray, label_names, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = cm.shape[0]
    support = cm.sum(axis=1, keepdims=True)
    # Rows normalised to recall, so classes of different sizes read on one colour scale.
    rates = np.divide(cm, support, out=np.zeros(cm.shape, np.float64), where=support > 0)
    size = min(4 + 0.3 * c, 16)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=100)
    try:
        im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
        if c <= 40:  # past that, names are unreadable; the indices on the axes still are
            names = [str(n) for n in label_names] if len(label_names) == c else [str(i) for i in range(c)]
            ax.set_xticks(range(c), names, rotation=90, fontsize=7)
            ax.set_yticks(range(c), names, fontsize=7)
        if c <= 20:
            for i in range(c):
                for j in range(c):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                                color="white" if rates[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def save_confusion(path: str | Path, cm: np.ndarray, label_names, title: str) -> None:
    atomic_write_bytes(Path(path), confusion_png(cm, label_names, title))
