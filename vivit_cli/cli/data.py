"""`vivit data list` and `vivit data inspect SPEC`: what sources exist, and what is in one."""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import JsonOption, SetOption, console, print_json

data_app = typer.Typer(help="Video data sources: list the kinds, inspect one.", no_args_is_help=True)


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
