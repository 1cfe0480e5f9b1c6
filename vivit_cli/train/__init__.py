"""Training: `run(cfg, workdir) -> summary` and `pretrain_image(cfg, workdir)`.

  loop.py        the train loop (read it top to bottom), resume order, preemption, image pretraining
  step.py        the jitted train/eval steps (pure functions)
  losses.py      label smoothing, mixup, cross-entropy, top-k
  optim.py       optax SGD+momentum / AdamW, cosine schedule with linear warmup, clipping
  mesh.py        Mesh over all devices ("data", "model"), shardings, per-process batch feeding
  checkpoint.py  Orbax checkpoints with data-iterator + rng state; `load(path) -> (cfg, params)`
  init_from.py   `model.init_from`: image-ViT inflation or weight copy
  wandb_log.py   W&B (offline by default) and an offline-run reader
  logs.py        metrics.jsonl, progress display, `itstime`
  runtime.py     jax.distributed / persistent compilation cache / env vars (VIVIT_COORDINATOR, ...)
  tasks.py       video clips vs still images behind one interface

Nothing is imported from JAX at package import time.
"""

from __future__ import annotations


def run(cfg, workdir, **kwargs):
    from .loop import run as _run

    return _run(cfg, workdir, **kwargs)


def pretrain_image(cfg, workdir):
    from .loop import pretrain_image as _pretrain

    return _pretrain(cfg, workdir)


__all__ = ["run", "pretrain_image"]
