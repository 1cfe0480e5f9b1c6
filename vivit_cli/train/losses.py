"""Classification loss pieces: label smoothing, mixup, softmax cross-entropy, top-k. Pure jnp functions.

Paper defaults (Arnab et al. 2021, Sec. 4.1 and Table 7): Kinetics trains with neither; Epic Kitchens and
SSv2 use label smoothing 0.2 and mixup alpha 0.1 (EK) / 0.3 (SSv2) alongside stochastic depth.
"""

from __future__ import annotations

import itertools

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


# ---- several heads side by side in one projection (Epic-Kitchens: verb 97, noun 300) ------------------------------
# `sizes` is the heads' class counts in the projection's order (config.head_sizes); labels are int32 [B, H].


def head_slices(sizes) -> list[slice]:
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + int(s))
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def multi_head_targets(labels, sizes, smoothing: float = 0.0):
    """[B, sum(sizes)]: each head's smoothed one-hot (smoothing spread over that head's own classes) side by side,
    so that mixup mixes every head's targets with the one lambda it mixes the clips with."""
    return jnp.concatenate([smoothed_onehot(labels[:, h], n, smoothing) for h, n in enumerate(sizes)], axis=-1)


def multi_head_xent(logits, targets, sizes):
    """The mean over heads of each head's softmax cross-entropy (Scenic's multi-head ViViT averages them too)."""
    return jnp.mean(jnp.stack([softmax_xent(logits[:, s], targets[:, s]) for s in head_slices(sizes)]))


def action_correct(scores, labels, sizes):
    """float32 [B]: 1 where every head's best class is its label (Epic-Kitchens' action: verb and noun right)."""
    hits = [jnp.argmax(scores[:, s], axis=-1) == labels[:, h] for h, s in enumerate(head_slices(sizes))]
    return jnp.all(jnp.stack(hits), axis=0).astype(jnp.float32)


def joint_topk(scores, sizes, k: int = 5):
    """int32 [B, k']: the k' = min(k, prod(sizes)) most likely joint classes, best first, under the product of the
    heads' softmaxes (Scenic's joint top-k), each coded mixed-radix (head 0 most significant: verb * 300 + noun).
    The best k joint classes use only each head's k best classes, so only k^H candidates are ranked."""
    cand = None  # (log-probabilities [B, m], codes [B, m]) of the joint classes of the heads so far
    for s, n in zip(head_slices(sizes), sizes):
        logp = jax.nn.log_softmax(scores[:, s].astype(jnp.float32), axis=-1)
        lp, idx = jax.lax.top_k(logp, min(k, n))
        if cand is None:
            cand = (lp, idx)
            continue
        b = lp.shape[0]
        joint_lp = (cand[0][:, :, None] + lp[:, None, :]).reshape(b, -1)
        joint_id = (cand[1][:, :, None] * n + idx[:, None, :]).reshape(b, -1)
        best_lp, pos = jax.lax.top_k(joint_lp, min(k, joint_lp.shape[-1]))
        cand = (best_lp, jnp.take_along_axis(joint_id, pos, axis=-1))
    return cand[1].astype(jnp.int32)


def action_code(labels, sizes):
    """int32 [B]: the mixed-radix code of each clip's labels (the numbering `joint_topk` ranks)."""
    code = labels[:, 0]
    for h in range(1, len(sizes)):
        code = code * sizes[h] + labels[:, h]
    return code.astype(jnp.int32)
