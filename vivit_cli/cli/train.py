"""`vivit train` and `vivit pretrain-image`: thin wrappers over `vivit_cli.train`.

Exit codes: 0 done (or already done), 1 the run failed (the reason is in summary.json), 2 bad input,
143 stopped by SIGTERM after saving a checkpoint (run the same command again to resume).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from vivit_cli.errors import VivitError

from .common import JsonOption, PresetOption, SetOption, print_json

WandbOption = typer.Option(None, "--wandb", help="W&B logging: offline (no account needed), online or disabled. "
                                                 "Default: the config's run.wandb (disabled).")
ConfigOption = typer.Option(None, "--config", "-c", help="Start from a config.json (e.g. another run's), then "
                                                         "apply --preset and --set.")
WorkdirOption = typer.Option(None, "--workdir", "-w", help="Run folder (created; resumed if it holds a "
                                                          "checkpoint). Default: results/train/<config hash>.")


def _config(sets, preset, config_file, wandb):
    from vivit_cli import config

    base = None
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise VivitError(f"--config {config_file}: no such file")
        base = config.from_json(path.read_text())
    extra = [f"run.wandb={wandb}"] if wandb else []
    return config.build(list(sets or []) + extra, preset=preset, base=base)


def _finish(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
    if summary.get("status") != "done":
        raise typer.Exit(1)


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    # Python shows a warning as where it was raised plus that source line; a user needs the message alone (e.g.
    # the fallback from an unreadable checkpoint).
    (file or sys.stderr).write(f"warning: {message}\n")


def _go(fn, cfg, workdir: str, as_json: bool) -> None:
    """Runs `fn(cfg, workdir, perf=...)`, the summary's perf block built by `bench.perf.train_perf`."""
    from vivit_cli.bench.perf import train_perf
    from vivit_cli.train.loop import Preempted

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line
            summary = fn(cfg, workdir, perf=train_perf)
    except Preempted as e:
        sys.stderr.write(f"{e}\n")
        raise typer.Exit(Preempted.exit_code) from None
    _finish(summary, as_json)


def train_command(
    sets: Optional[List[str]] = SetOption,
    preset: Optional[str] = PresetOption,
    config_file: Optional[str] = ConfigOption,
    workdir: Optional[str] = WorkdirOption,
    wandb: Optional[str] = WandbOption,
    as_json: bool = JsonOption,
) -> None:
    """Train one model; leaves config.json, metrics.jsonl, checkpoints/ and (last) summary.json in the workdir.

    Running it again on a finished workdir does nothing; on an unfinished one it resumes from the newest checkpoint.

    Multi-host: set VIVIT_COORDINATOR, VIVIT_NUM_PROCESSES and VIVIT_PROCESS_ID (or VIVIT_JAX_INIT=1 on a Cloud TPU slice) and start the same command on every host. Exit codes: 0 done, 1 failed, 2 bad input, 143 stopped by SIGTERM (checkpoint saved).
    """  # noqa: E501 - typer rewraps each paragraph itself
    from vivit_cli import config
    from vivit_cli.train import loop

    cfg = _config(sets, preset, config_file, wandb)
    _go(loop.run, cfg, workdir or f"results/train/{config.config_hash(cfg)}", as_json)


def pretrain_image_command(
    sets: Optional[List[str]] = SetOption,
    preset: Optional[str] = PresetOption,
    config_file: Optional[str] = ConfigOption,
    workdir: Optional[str] = WorkdirOption,
    wandb: Optional[str] = WandbOption,
    as_json: bool = JsonOption,
) -> None:
    """Train the image ViT of a video config on the still images of its data (paper Sec. 3.4).

    Takes the video model's --set/--preset; the image model keeps its transformer and patch size, with one frame. Then initialise video models from it with --set model.init_from=<this workdir>.
    """  # noqa: E501 - typer rewraps each paragraph itself
    from vivit_cli import config
    from vivit_cli.train import loop

    cfg = _config(sets, preset, config_file, wandb)
    default = f"results/pretrain/{config.config_hash(config.image_config(cfg))}"
    _go(loop.pretrain_image, cfg, workdir or default, as_json)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("pretrain-image")(pretrain_image_command)
