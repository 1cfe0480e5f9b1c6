"""How hard is the embedded data? Trains the default tiny model for the default step budget with a
plain optax adamw loop and reports val top-1, for the variants whose gap the ablations rely on.

    .venv/bin/python benchmarks/probe_difficulty.py [--steps 600] [--task motion] [--variant 1] ...

Not the real trainer (`vivit train`); a probe to tune the dataset so that no variant saturates and
the average-pool baseline (model 2 with temporal_layers=0) falls behind on the motion task.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

VARIANTS = {
    "1": ["model.variant=spatio_temporal"],
    "2": ["model.variant=factorised_encoder"],
    "avgpool": ["model.variant=factorised_encoder", "model.temporal_layers=0"],
    "3": ["model.variant=factorised_self_attention"],
    "4": ["model.variant=factorised_dot_product"],
}


def probe(task: str, variant: str, steps: int, batch: int, lr: float, extra: list[str]) -> dict:
    import jax
    import optax

    from vivit_cli import config, data
    from vivit_cli.models import build_model, init_params

    cfg = config.build([f"data.source=embedded:{task}", *VARIANTS[variant], *extra])
    src = data.open_source(cfg)
    model = build_model(cfg, src.num_classes)
    params = init_params(cfg, src.num_classes, jax.random.PRNGKey(0))
    # The default recipe of the trainer: linear warmup, then cosine decay to zero over the steps.
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, cfg.train.warmup_steps, steps, 0.0)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.05))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, video, label, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, video, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    @jax.jit
    def predict(params, video):
        return model.apply({"params": params}, video, train=False)

    it = data.train_iterator(cfg, batch_size=batch, seed=0)
    key = jax.random.PRNGKey(1)
    t0 = time.time()
    for _ in range(steps):
        b = next(it)
        key, sub = jax.random.split(key)
        params, opt, loss = step(params, opt, b["video"], b["label"], sub)
    float(loss)
    train_s = time.time() - t0
    correct = total = 0
    for b in data.eval_iterator(cfg, split="val", views=(1, 1), batch_size=100):
        logits = np.asarray(predict(params, b["video"][:, 0]))
        correct += int(((logits.argmax(-1) == b["label"]) & b["mask"]).sum())
        total += int(b["mask"].sum())
    return {"task": task, "variant": variant, "top1": correct / total, "chance": 1 / src.num_classes,
            "steps": steps, "train_s": round(train_s, 1), "clips_per_s": round(steps * batch / train_s, 1),
            "loss": round(float(loss), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600, help="train steps (the default train.steps is 600)")
    ap.add_argument("--task", action="append", choices=["motion", "appearance"])
    ap.add_argument("--variant", action="append", choices=list(VARIANTS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()
    for task in args.task or ["motion", "appearance"]:
        for variant in args.variant or ["1", "avgpool"]:
            print(json.dumps(probe(task, variant, args.steps, args.batch, args.lr, args.set)), flush=True)


if __name__ == "__main__":
    main()
