"""`vivit describe`: build the configured model and say what it is (tokens, params, GFLOPs)."""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import JsonOption, PresetOption, SetOption, build_config, console, print_json


def describe(
    sets: Optional[List[str]] = SetOption,
    preset: Optional[str] = PresetOption,
    as_json: bool = JsonOption,
    measure: bool = typer.Option(False, "--measure", help="Cross-check GFLOPs with XLA's cost analysis."),
) -> None:
    """Print the model's variant, embedding, token grid, parameter count and GFLOPs per clip.

    GFLOPs follow the ViViT paper's convention (multiply-accumulates): ViViT-B model 1 at
    32x224x224 with 2x16x16 tubelets is 455.2 in the paper.
    """
    from vivit_cli import models

    cfg = build_config(sets, preset)
    info = models.describe(cfg)
    if measure:
        info["gflops_xla"] = float(f"{models.measure_gflops(cfg):.4g}")
    if as_json:
        print_json(info)
        return
    from rich.table import Table

    table = Table(title="ViViT model", show_header=False)
    nt, nh, nw = info["token_grid"]
    rows = [
        ("variant", info["variant"]), ("embedding", f"{info['embedding']} {info['tubelet']}"),
        ("size", f"{info['size']} (hidden {info['hidden']}, {info['layers']} layers, {info['heads']} heads, "
                 f"mlp {info['mlp']})"),
        ("input", info["input"]), ("token grid", f"{nt} x {nh} x {nw} = {info['tokens']} tokens"),
        ("classifier", info["classifier"]), ("classes", str(info["num_classes"])),
        ("params", f"{info['params'] / 1e6:.1f} M ({info['params']:,})"),
        ("GFLOPs / clip", f"{info['gflops']:.1f} (analytic, multiply-accumulates)"),
        ("GFLOPs / clip run", f"{info['gflops_executed']:.1f} (the class token's readout: its last block "
                              "computes one row)"),
    ]
    if info["temporal_layers"] is not None:
        rows.insert(3, ("temporal layers", str(info["temporal_layers"])))
    if info["attention_order"] is not None:
        rows.insert(3, ("attention order", info["attention_order"]))
    if measure:
        rows.append(("GFLOPs / clip (XLA)", f"{info['gflops_xla']:.1f} (compiled forward, FLOPs / 2)"))
    for k, v in rows:
        table.add_row(k, v)
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(describe)
