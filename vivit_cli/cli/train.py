"""`vivit train` and `vivit pretrain-image`: thin wrappers over `vivit_cli.train`.

Exit codes: 0 done (or already done), 1 the run failed (the reason is in summary.json), 2 bad input,
143 stopped by SIGTERM after saving a checkpoint (run the same command again to resume). With --seeds: 0 when
every seed is done, 1 when any failed (each seed's summary.json says which); --json prints the list of summaries.
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
SeedsOption = typer.Option(None, "--seeds", help="Train these seeds (e.g. 0,1,2) together as one program, each in "
                                                 "its own workdir: --workdir with {seed} in it, e.g. results/x-s{seed} "
                                                 "(default results/train/<config hash of each seed>). Replaces "
                                                 "train.seed.")


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` -> [0, 1, 2]: non-negative integers, each once."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or not all(t.isdigit() for t in items):
        raise VivitError(f"--seeds {text!r}: expected seeds as non-negative integers separated by commas, e.g. 0,1,2")
    seeds = [int(t) for t in items]
    if len(set(seeds)) != len(seeds):
        raise VivitError(f"--seeds {text!r}: a seed comes twice")
    return seeds


def _seed_configs(cfg, seeds_text: str | None, workdir: str | None):
    """(configs, workdirs): one per seed of --seeds (or the config's own seed); a {seed} in --workdir is each
    seed's number."""
    import dataclasses

    from vivit_cli import config

    seeds = parse_seeds(seeds_text) if seeds_text is not None else [cfg.train.seed]
    if workdir and len(seeds) > 1 and "{seed}" not in workdir:
        raise VivitError(f"--workdir {workdir}: several --seeds need a {{seed}} in the workdir "
                         f"(e.g. {workdir}-s{{seed}})")
    cfgs = [cfg.replace(train=dataclasses.replace(cfg.train, seed=k)) for k in seeds]
    dirs = [workdir.replace("{seed}", str(c.train.seed)) if workdir else f"results/train/{config.config_hash(c)}"
            for c in cfgs]
    return cfgs, dirs


def _config(sets, preset, config_file, wandb, needs=("data.source", "model.init_from")):
    from vivit_cli import config
    from vivit_cli.config.presets import check_given

    base = None
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise VivitError(f"--config {config_file}: no such file")
        base = config.from_json(path.read_text())
    extra = [f"run.wandb={wandb}"] if wandb else []
    cfg = config.build(list(sets or []) + extra, preset=preset, base=base)
    check_given(cfg, preset, needs)
    return cfg


def _finish(summaries: list[dict], as_json: bool) -> None:
    if as_json:
        print_json(summaries[0] if len(summaries) == 1 else summaries)
    if any(s.get("status") != "done" for s in summaries):
        raise typer.Exit(1)


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    # Python shows a warning as where it was raised plus that source line; a user needs the message alone (e.g.
    # the fallback from an unreadable checkpoint).
    (file or sys.stderr).write(f"warning: {message}\n")


def _go(fn, cfg, workdir, as_json: bool) -> None:
    """Runs `fn(cfg, workdir, perf=...)` (or a group: `fn(cfgs, workdirs, perf=...)`), the summary's perf block
    built by `bench.perf.train_perf`."""
    from vivit_cli.bench.perf import train_perf
    from vivit_cli.train.loop import Preempted

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line
            out = fn(cfg, workdir, perf=train_perf)
    except Preempted as e:
        sys.stderr.write(f"{e}\n")
        raise typer.Exit(Preempted.exit_code) from None
    _finish(out if isinstance(out, list) else [out], as_json)


def train_command(
    sets: Optional[List[str]] = SetOption,
    preset: Optional[str] = PresetOption,
    config_file: Optional[str] = ConfigOption,
    workdir: Optional[str] = WorkdirOption,
    seeds: Optional[str] = SeedsOption,
    wandb: Optional[str] = WandbOption,
    as_json: bool = JsonOption,
) -> None:
    """Train one model (or, with --seeds, several seeds of it together as one program, each in its own workdir); leaves config.json, metrics.jsonl, checkpoints/ and (last) summary.json in the workdir.

    Running it again on a finished workdir does nothing; on an unfinished one it resumes from the newest checkpoint.

    Multi-host: set VIVIT_COORDINATOR, VIVIT_NUM_PROCESSES and VIVIT_PROCESS_ID (or VIVIT_JAX_INIT=1 on a Cloud TPU slice) and start the same command on every host. Exit codes: 0 done, 1 failed, 2 bad input, 143 stopped by SIGTERM (checkpoint saved).
    """  # noqa: E501 - typer rewraps each paragraph itself
    from vivit_cli import config
    from vivit_cli.train import loop

    cfg = _config(sets, preset, config_file, wandb)
    if seeds is None and (workdir is None or "{seed}" not in workdir):  # one run, as before groups existed
        _go(loop.run, cfg, workdir or f"results/train/{config.config_hash(cfg)}", as_json)
        return
    cfgs, workdirs = _seed_configs(cfg, seeds, workdir)
    _go(loop.run_group, cfgs, workdirs, as_json)


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

    cfg = _config(sets, preset, config_file, wandb, needs=("data.source",))  # an image ViT starts from scratch
    default = f"results/pretrain/{config.config_hash(config.image_config(cfg))}"
    _go(loop.pretrain_image, cfg, workdir or default, as_json)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("pretrain-image")(pretrain_image_command)
