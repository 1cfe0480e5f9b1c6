"""Classification loss pieces: label smoothing, mixup, softmax cross-entropy, top-k. Pure jnp functions.

Paper defaults (Arnab et al. 2021, Sec. 4.1 and Table 7): Kinetics trains with neither; Epic Kitchens and
SSv2 use label smoothing 0.2 and mixup alpha 0.1 (EK) / 0.3 (SSv2) alongside stochastic depth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def smoothed_onehot(labels, num_classes: int, smoothing: float = 0.0):
    """One-hot targets with `smoothing` of the mass spread uniformly over all classes."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return onehot * (1.0 - smoothing) + smoothing / num_classes


def mixup(rng, video, targets, alpha: float):
    """Mixes every clip with the batch's mirror image (clip i with clip B-1-i) by one lambda ~ Beta(a, a).

    One lambda per batch and a fixed partner keep it a cheap, deterministic function of (rng, batch), so a
    sharded batch gives the same result on any number of devices. Returns (video, targets, lambda).
    """
    lam = jax.random.beta(rng, alpha, alpha)
    lam = jnp.maximum(lam, 1.0 - lam)  # the original clip dominates, so the batch's labels stay meaningful
    mixed = lam.astype(video.dtype) * video + (1.0 - lam).astype(video.dtype) * video[::-1]
    return mixed, lam * targets + (1.0 - lam) * targets[::-1], lam


def softmax_xent(logits, targets):
    """Mean over the batch of -sum(targets * log_softmax(logits)), computed in float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.sum(targets * logp, axis=-1))


def topk_correct(scores, labels, k: int):
    """float32 [B]: 1 where the label is among the k highest scores (k clipped to the class count)."""
    k = min(k, scores.shape[-1])
    _, idx = jax.lax.top_k(scores, k)
    return jnp.any(idx == labels[:, None], axis=-1).astype(jnp.float32)
