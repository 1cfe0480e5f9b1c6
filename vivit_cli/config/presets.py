"""Named scales. A preset is a dict of overrides applied on top of the defaults (the CPU preset)."""

from __future__ import annotations

from vivit_cli.errors import VivitError

# A value the user must give (`--set KEY=...`): the paper's data and image ViT live on the user's disk.
NEEDED = "<PATH>"
HINTS = {"data.source": "{kind}:PATH (your copy as distributed, docs/data.md)",
         "model.init_from": "DIR (an ImageNet-21k ViT converted with `vivit convert vit`)"}

PRESETS: dict[str, dict[str, object]] = {
    # The defaults: the embedded data on a 2-core CPU, about half a minute per run.
    "cpu": {},
    # Seconds per run, for tests and for checking that a grid is wired up.
    "smoke": {"model.hidden": 32, "model.layers": 1, "model.heads": 2, "model.mlp": 64,
              "model.temporal_layers": 1, "train.steps": 6, "train.batch_size": 8, "train.warmup_steps": 2,
              "run.log_every": 2, "run.checkpoint_every": 3,
              "data.eval_split": "val"},  # 500 clips: a smoke run's figures are not evidence of anything
    # The paper's recipe (Kinetics 400, Table 7 of the arXiv version): for TPU slices. Scored on Kinetics'
    # validation set, as the paper is. It trains on the user's copy of Kinetics from the user's ImageNet-21k ViT
    # (`vivit convert vit`), as the paper initialises from one: both are placeholders that training refuses.
    "paper": {"model.size": "B", "model.tubelet": "2x16x16", "data.frames": 32, "data.stride": 2,
              "data.crop": 224, "data.source": f"kinetics:{NEEDED}", "model.init_from": NEEDED,
              "data.color_jitter": 0.8,
              "data.eval_views": "4x3", "data.eval_split": "val", "train.optimizer": "sgd", "train.lr": 0.1,
              "train.momentum": 0.9, "train.weight_decay": 0.0, "train.batch_size": 64, "train.steps": 125_000,
              "train.warmup_steps": 10_400, "train.precision": "bfloat16",
              "run.checkpoint_every": 1000, "run.log_every": 100},
}


def preset_overrides(name: str) -> dict[str, object]:
    if name not in PRESETS:
        raise VivitError(f"unknown preset {name!r}: allowed values are {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def placeholder_kind(key: str, value) -> str | None:
    """For a value still holding NEEDED: the data kind it wants ("kinetics", "epic") or "" (model.init_from)."""
    text = str(value)
    if key == "data.source" and text.endswith(f":{NEEDED}"):
        return text[: -len(NEEDED) - 1]
    if key == "model.init_from" and text == NEEDED:
        return ""
    return None


def needed_set(key: str, kind: str, scope: str | None = None) -> str:
    """`--set [scope:]key=hint`, what to pass for a placeholder."""
    return f"--set {scope + ':' if scope else ''}{key}={HINTS[key].format(kind=kind)}"


def missing_message(preset: str | None, needed: list[str]) -> str:
    ordered = sorted(dict.fromkeys(needed), key=lambda n: "model.init_from" in n)  # the data first
    return f"--preset {preset} trains on your data from your image ViT, and these are not set: pass " + "; ".join(ordered)


def check_given(cfg, preset: str | None, keys: tuple[str, ...] = ("data.source", "model.init_from")) -> None:
    """Refuses a config that still holds a placeholder of the preset (one line naming what to pass)."""
    values = {"data.source": cfg.data.source, "model.init_from": cfg.model.init_from}
    needed = [needed_set(k, kind) for k in keys if (kind := placeholder_kind(k, values[k])) is not None]
    if needed:
        raise VivitError(missing_message(preset, needed))
