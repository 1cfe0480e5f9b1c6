"""Training: `run(cfg, workdir) -> summary`, `run_group(cfgs, workdirs) -> summaries` (seeds of one config as one
compiled program) and `pretrain_image(cfg, workdir)`.

  loop.py        the train loop (read `_train` top to bottom), resume order, preemption, image pretraining
  seeds.py       the seed axis of a group: stacked state and batches, the step vmapped (none for one seed)
  step.py        the jitted train/eval steps (pure functions)
  state.py       the train state {"step", "params", "opt_state"}: its optimizer, shardings and init
  losses.py      label smoothing, mixup, cross-entropy, top-k
  optim.py       optax SGD+momentum / AdamW, cosine schedule with linear warmup, clipping
  init_from.py   `model.init_from`: image-ViT inflation or weight copy
  wandb_log.py   W&B (offline by default) and an offline-run reader
  logs.py        metrics.jsonl, progress display, `itstime`
  tasks.py       video clips vs still images behind one interface

What train/ builds on lives in `vivit_cli.runtime` (process setup, the mesh and global batches, checkpoints,
timing); summary.json's perf block is built by a function the caller passes (`vivit train` passes
`bench.perf.train_perf`), so train/ never imports bench/. Nothing is imported from JAX at package import time.
"""

from __future__ import annotations


def run(cfg, workdir, **kwargs):
    from .loop import run as _run

    return _run(cfg, workdir, **kwargs)


def run_group(cfgs, workdirs, **kwargs):
    from .loop import run_group as _run_group

    return _run_group(cfgs, workdirs, **kwargs)


def pretrain_image(cfg, workdir, **kwargs):
    from .loop import pretrain_image as _pretrain

    return _pretrain(cfg, workdir, **kwargs)


__all__ = ["run", "run_group", "pretrain_image"]
