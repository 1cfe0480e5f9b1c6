"""The train and eval steps: pure functions of (state, batch), compiled once with their shardings.

The whole update (mixup, forward, backward, clipping, optimizer) is one XLA program; the state is donated so
its buffers are reused in place, and nothing comes back to the host except the metrics when asked for.
Randomness is `fold_in(base_rng, step)`: a resumed run draws exactly what an uninterrupted one would, and
threefry's partitionable mode makes the draws independent of how the batch is sharded.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from . import device_crop, losses
from .seeds import SeedAxis


def train_step(state, batch, base_rng, *, model, tx, schedule, num_classes: int, label_smoothing: float,
               mixup_alpha: float, heads: tuple[int, ...] = (), crop: int = 0):
    """One SGD step. state = {"step", "params", "opt_state"} (`train.state`); batch = {"video" [B,T,H,W,3],
    "label" [B]}, or with `heads` (two or more class counts, side by side in the logits) "label" [B, H]: the loss is
    the mean of the heads' cross-entropies, and "accuracy" counts a clip right when every head is (the action).
    A batch of uint8 "window"s and their "geometry" (data.crop_on_device) is cropped here first, to `crop`."""
    rng = jax.random.fold_in(base_rng, state["step"])
    mix_rng, drop_rng = jax.random.split(rng)
    labels = batch["label"]
    video = batch["video"] if "video" in batch else device_crop.crop_batch(batch["window"], batch["geometry"], crop)
    if heads:
        targets = losses.multi_head_targets(labels, heads, label_smoothing)
    else:
        targets = losses.smoothed_onehot(labels, num_classes, label_smoothing)
    if mixup_alpha > 0:
        video, targets, _ = losses.mixup(mix_rng, video, targets, mixup_alpha)

    def loss_fn(params):
        logits = model.apply({"params": params}, video, train=True, rngs={"dropout": drop_rng})
        if heads:
            return losses.multi_head_xent(logits, targets, heads), logits
        return losses.softmax_xent(logits, targets), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(losses.action_correct(logits, labels, heads) if heads
                             else (jnp.argmax(logits, -1) == labels).astype(jnp.float32)),
        "grad_norm": optax.global_norm(grads),
        "lr": schedule(state["step"]),
    }
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics


def eval_step(params, batch, *, model, heads: tuple[int, ...] = ()):
    """One batch of multi-view clips: the sums of top-1/top-5 hits over its real (mask=True) clips, and per clip
    the k = min(5, classes) best classes (best first) beside its label, index and mask, for the predictions file.

    batch["video"] is [B, V, T, H, W, 3]: the raw logits of the V views are averaged before ranking, the
    reference's multi-view inference, as `vivit eval` does. The model runs at the training precision here
    (the train-time eval), while `vivit eval` forces float32: for a float32 run both report the same numbers,
    for a bfloat16 run they may differ by its rounding. The outputs are replicated, so every process holds
    every row of the global batch (no gather needed for the predictions).

    With `heads` (labels [B, H]): "top1"/"top5" are the action's (every head right; the joint top-5 of
    `losses.joint_topk`), "head_top1"/"head_top5" [H] each head's sums, "topk" [B, H, k] each head's best classes
    and "action_topk" [B, k] the best joint classes.
    """
    if heads:
        return _eval_step_heads(params, batch, model=model, heads=heads)
    video = batch["video"]
    b, v = video.shape[:2]
    logits = model.apply({"params": params}, video.reshape((b * v,) + video.shape[2:]), train=False)
    scores = logits.astype(jnp.float32).reshape(b, v, -1).mean(axis=1)
    mask = batch["mask"].astype(jnp.float32)
    # The sums keep the same top-k as always (summary.json's figures); `topk` is the same XLA TopK, best first,
    # ties towards the lower class, so the predictions file gives exactly those figures.
    _, topk = jax.lax.top_k(scores, min(5, scores.shape[-1]))
    out = {
        "top1": jnp.sum(losses.topk_correct(scores, batch["label"], 1) * mask),
        "top5": jnp.sum(losses.topk_correct(scores, batch["label"], 5) * mask),
        "count": jnp.sum(mask),
        "topk": topk.astype(jnp.int32), "label": batch["label"], "mask": batch["mask"],
    }
    if "index" in batch:
        out["index"] = batch["index"]
    return out


def _eval_step_heads(params, batch, *, model, heads):
    video = batch["video"]
    b, v = video.shape[:2]
    logits = model.apply({"params": params}, video.reshape((b * v,) + video.shape[2:]), train=False)
    scores = logits.astype(jnp.float32).reshape(b, v, -1).mean(axis=1)
    mask, labels = batch["mask"].astype(jnp.float32), batch["label"]
    k = min(5, *heads)
    per_head = [scores[:, s] for s in losses.head_slices(heads)]
    action_topk = losses.joint_topk(scores, heads, 5)
    action = losses.action_code(labels, heads)
    out = {
        "top1": jnp.sum(losses.action_correct(scores, labels, heads) * mask),
        "top5": jnp.sum(jnp.any(action_topk == action[:, None], axis=-1).astype(jnp.float32) * mask),
        "head_top1": jnp.stack([jnp.sum(losses.topk_correct(x, labels[:, h], 1) * mask)
                                for h, x in enumerate(per_head)]),
        "head_top5": jnp.stack([jnp.sum(losses.topk_correct(x, labels[:, h], 5) * mask)
                                for h, x in enumerate(per_head)]),
        "count": jnp.sum(mask),
        "topk": jnp.stack([jax.lax.top_k(x, k)[1] for x in per_head], axis=1).astype(jnp.int32),
        "action_topk": action_topk, "label": labels, "mask": batch["mask"],
    }
    if "index" in batch:
        out["index"] = batch["index"]
    return out


def compile_train_step(cfg, model, tx, schedule, num_classes: int, state_shardings, batch_shardings, replicated,
                       seeds: int = 1):
    """The jitted step. `seeds` > 1: the step mapped over a leading seed axis of the state, the batch and the rng
    (`train.seeds`; the shardings given are the stacked ones), each seed's metrics a [seeds] vector."""
    from vivit_cli import config

    heads = config.head_sizes(cfg) if cfg.data.heads else ()
    fn = partial(train_step, model=model, tx=tx, schedule=schedule, num_classes=num_classes,
                 label_smoothing=cfg.train.label_smoothing, mixup_alpha=cfg.train.mixup, heads=heads, crop=cfg.data.crop)
    fn = SeedAxis(seeds).map(fn)
    return jax.jit(fn, in_shardings=(state_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def compile_eval_step(model, param_shardings, batch_shardings, replicated, seeds: int = 1,
                      heads: tuple[int, ...] = ()):
    """The jitted eval step. `seeds` > 1: mapped over the params' leading seed axis, all seeds on the same batch
    (every output with the seed axis in front). `heads`: the class counts of a multi-head model (`eval_step`)."""
    fn = SeedAxis(seeds).map(partial(eval_step, model=model, heads=heads), in_axes=(0, None))
    return jax.jit(fn, in_shardings=(param_shardings, batch_shardings), out_shardings=replicated)
