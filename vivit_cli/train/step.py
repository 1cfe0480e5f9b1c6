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

from . import losses


def train_step(state, batch, base_rng, *, model, tx, schedule, num_classes: int, label_smoothing: float,
               mixup_alpha: float):
    """One SGD step. state = {"step", "params", "opt_state"} (`train.state`); batch = {"video" [B,T,H,W,3],
    "label" [B]}."""
    rng = jax.random.fold_in(base_rng, state["step"])
    mix_rng, drop_rng = jax.random.split(rng)
    video, labels = batch["video"], batch["label"]
    targets = losses.smoothed_onehot(labels, num_classes, label_smoothing)
    if mixup_alpha > 0:
        video, targets, _ = losses.mixup(mix_rng, video, targets, mixup_alpha)

    def loss_fn(params):
        logits = model.apply({"params": params}, video, train=True, rngs={"dropout": drop_rng})
        return losses.softmax_xent(logits, targets), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32)),
        "grad_norm": optax.global_norm(grads),
        "lr": schedule(state["step"]),
    }
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics


def eval_step(params, batch, *, model):
    """One batch of multi-view clips: the sums of top-1/top-5 hits over its real (mask=True) clips, and per clip
    the k = min(5, classes) best classes (best first) beside its label, index and mask, for the predictions file.

    batch["video"] is [B, V, T, H, W, 3]: the raw logits of the V views are averaged before ranking, the
    reference's multi-view inference, as `vivit eval` does. The model runs at the training precision here
    (the train-time eval), while `vivit eval` forces float32: for a float32 run both report the same numbers,
    for a bfloat16 run they may differ by its rounding. The outputs are replicated, so every process holds
    every row of the global batch (no gather needed for the predictions).
    """
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


def compile_train_step(cfg, model, tx, schedule, num_classes: int, state_shardings, batch_shardings, replicated,
                       seeds: int = 1):
    """The jitted step. `seeds` > 1: the step vmapped over a leading seed axis of the state, the batch and the rng
    (`train.seeds`; the shardings given are the stacked ones), each seed's metrics a [seeds] vector."""
    fn = partial(train_step, model=model, tx=tx, schedule=schedule, num_classes=num_classes,
                 label_smoothing=cfg.train.label_smoothing, mixup_alpha=cfg.train.mixup)
    if seeds > 1:
        fn = jax.vmap(fn)
    return jax.jit(fn, in_shardings=(state_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def compile_eval_step(model, param_shardings, batch_shardings, replicated, seeds: int = 1):
    """The jitted eval step. `seeds` > 1: vmapped over the params' leading seed axis, all seeds on the same batch
    (every output with the seed axis in front)."""
    fn = partial(eval_step, model=model)
    if seeds > 1:
        fn = jax.vmap(fn, in_axes=(0, None))
    return jax.jit(fn, in_shardings=(param_shardings, batch_shardings), out_shardings=replicated)
