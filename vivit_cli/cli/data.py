"""`vivit data list` and `vivit data inspect SPEC`: what sources exist, and what is in one."""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import JsonOption, SetOption, console, print_json

data_app = typer.Typer(help="Video data sources: list the kinds, inspect one, prepare records.", no_args_is_help=True)


@data_app.command("list")
def list_command(as_json: bool = JsonOption) -> None:
    """The kinds of data.source, with their spec syntax."""
    from vivit_cli.data.spec import KINDS

    if as_json:
        print_json({kind: {"spec": spec, "description": desc} for kind, (spec, desc) in KINDS.items()})
        return
    from rich.table import Table

    table = Table(title="data.source kinds (default: embedded:motion)")
    table.add_column("spec", style="bold")
    table.add_column("what it reads")
    for spec, desc in KINDS.values():
        table.add_row(spec, desc)
    console().print(table)


@data_app.command("inspect")
def inspect_command(
    spec: str = typer.Argument(..., help="A data.source spec, e.g. embedded:motion, folder:/data/ucf101, tfds:ucf101"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="TFDS data_dir (data.data_dir)."),
    sets: Optional[List[str]] = SetOption,
    as_json: bool = JsonOption,
) -> None:
    """Clips per split, classes, frame counts, resolution and decode failures of one source."""
    from vivit_cli import config
    from vivit_cli.data import sources
    from vivit_cli.data.api import describe_source, short_side

    overrides = [f"data.source={spec}", *(sets or [])]
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    cfg = config.build(overrides)
    d = cfg.data
    src = sources.open_source(d.source, frames=d.frames, stride=d.stride, crop=d.crop, data_dir=d.data_dir,
                              max_skip_fraction=None,  # inspect reports broken files instead of failing on them
                              short_side=short_side(cfg))
    info = describe_source(src)
    roles = split_roles(d, info["splits"])
    for name, role in roles.items():
        info["splits"][name]["role"] = role
    if as_json:
        print_json(info)
        return
    from rich.table import Table

    out = console()
    out.print(f"[bold]{info['source']}[/bold]  kind={info['kind']}  classes={info['num_classes']}")
    names = info["label_names"]
    out.print("labels: " + ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else ""))
    if info.get("info"):  # what the source says of its layout: e.g. Kinetics' replaced clips, unlabelled splits
        out.print("  ".join(f"{k}={v}" for k, v in info["info"].items()), markup=False, highlight=False)
    table = Table()
    for col in ("split", "clips", "used for", "frames (min/median/max)", "resolution", "codecs"):
        table.add_column(col)
    for name, e in info["splits"].items():
        fr = e.get("frames") or {}
        table.add_row(name, str(e["clips"]), e.get("role", ""),
                      f"{fr.get('min', '-')}/{fr.get('median', '-')}/{fr.get('max', '-')}",
                      ", ".join(e.get("resolutions", [])[:3]), ", ".join(e.get("codecs", [])))
    out.print(table)
    total = sum(e["clips"] for e in info["splits"].values())
    out.print(f"{total} clips in {len(info['splits'])} splits")
    if info["files_scanned"]:
        out.print(f"decode failures: {info['decode_failures']} of {info['files_scanned']} files")
        for f in info["failures"][:10]:
            out.print(f"  {f['file']}: {f['problem']}", markup=False, highlight=False)


@data_app.command("prepare")
def prepare_command(
    spec: str = typer.Argument(..., help="The data.source spec to prepare, e.g. kinetics:/data/k400"),
    out: str = typer.Option(..., "--out", help="The records folder (new, or one a killed prepare left: it continues)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: every core)."),
    clips_per_shard: int = typer.Option(32, "--clips-per-shard", help="Clips per ArrayRecord file (about)."),
    quality: int = typer.Option(90, "--quality", help="JPEG quality of the stored frames."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="TFDS data_dir (data.data_dir)."),
    sets: Optional[List[str]] = SetOption,
    as_json: bool = JsonOption,
) -> None:
    """Decode every clip of every split once into JPEG frames in sharded ArrayRecord files (train with
    data.source=records:OUT, same data.crop / data.eval_resize)."""
    from vivit_cli import config
    from vivit_cli.data import sources
    from vivit_cli.data.api import short_side
    from vivit_cli.data.prepare import prepare

    overrides = [f"data.source={spec}", *(sets or [])]
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    cfg = config.build(overrides)
    d, short = cfg.data, short_side(cfg)
    src = sources.open_source(d.source, frames=d.frames, stride=d.stride, crop=d.crop, data_dir=d.data_dir,
                              short_side=short, max_skip_fraction=None)  # failures are listed, not fatal
    manifest = prepare(src, out, short_side=short, quality=quality, clips_per_shard=clips_per_shard,
                       workers=workers, progress=not as_json)
    summary = {"out": out, "source": manifest["source"], "short_side": manifest["short_side"],
               "splits": {n: e["clips"] for n, e in manifest["splits"].items()},
               "failures": len(manifest["failures"])}
    if as_json:
        print_json(summary)
        return
    console().print(f"{out}: " + ", ".join(f"{n} {c} clips" for n, c in summary["splits"].items())
                    + f"; {summary['failures']} failures (vivit data inspect records:{out} lists them)",
                    markup=False, highlight=False)


def split_roles(d, splits) -> dict[str, str]:
    """What the config (`d`, its data section) uses each split for: training, choices made while training, the
    final eval that the tables report."""
    from vivit_cli.data.sources import SPLIT_ALIASES

    uses = (("train", d.train_split), ("choices while training (train.eval_every)", d.val_split),
            ("final eval, tables", d.eval_split))
    roles: dict[str, list[str]] = {name: [] for name in splits}
    for role, split in uses:
        key = SPLIT_ALIASES.get(split, split)
        if key in roles:
            roles[key].append(role)
    return {name: "; ".join(r) for name, r in roles.items()}


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
