"""Named scales. A preset is a dict of overrides applied on top of the defaults (the CPU preset)."""

from __future__ import annotations

from vivit_cli.errors import VivitError

PRESETS: dict[str, dict[str, object]] = {
    # The defaults: the embedded data on a 2-core CPU, about half a minute per run.
    "cpu": {},
    # Seconds per run, for tests and for checking that a grid is wired up.
    "smoke": {"model.hidden": 32, "model.layers": 1, "model.heads": 2, "model.mlp": 64,
              "model.temporal_layers": 1, "train.steps": 6, "train.batch_size": 8, "train.warmup_steps": 2,
              "run.log_every": 2, "run.checkpoint_every": 3,
              "data.eval_split": "val"},  # 500 clips: a smoke run's figures are not evidence of anything
    # The paper's recipe (Kinetics 400, Table 7 of the arXiv version): for TPU slices. Scored on Kinetics'
    # validation set, as the paper is.
    "paper": {"model.size": "B", "model.tubelet": "2x16x16", "data.frames": 32, "data.stride": 2,
              "data.crop": 224, "data.source": "tfds:kinetics400", "data.color_jitter": 0.8,
              "data.eval_views": "4x3", "data.eval_split": "val", "train.optimizer": "sgd", "train.lr": 0.1,
              "train.momentum": 0.9, "train.weight_decay": 0.0, "train.batch_size": 64, "train.steps": 125_000,
              "train.warmup_steps": 10_400, "train.precision": "bfloat16",
              "run.checkpoint_every": 1000, "run.log_every": 100},
}


def preset_overrides(name: str) -> dict[str, object]:
    if name not in PRESETS:
        raise VivitError(f"unknown preset {name!r}: allowed values are {', '.join(PRESETS)}")
    return dict(PRESETS[name])
