"""`vivit convert`: reference checkpoints in (Scenic, Hugging Face, image ViTs), Hugging Face out.

  vivit convert scenic CHECKPOINT --out DIR [--set data.frames=32 ...] [--head noun]
  vivit convert hf MODEL_DIR --out DIR
  vivit convert vit FILE.npz --out DIR
  vivit convert to-hf RUN_OR_CHECKPOINT --out MODEL_DIR

A converted DIR works wherever a trained run does: `vivit eval DIR`, `vivit predict DIR`, `model.init_from=DIR`.
"""

from __future__ import annotations

import warnings
from typing import List, Optional

import typer

from vivit_cli.errors import VivitError

from .common import JsonOption, SetOption, console, err_console, print_json

convert_app = typer.Typer(help="Convert reference checkpoints (Scenic, Hugging Face, image ViTs) to and from "
                               "this toolkit's format.", no_args_is_help=True)

OutOption = typer.Option(..., "--out", "-o", help="Folder to write (created).")


def _ints(text: Optional[str], key: str) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise VivitError(f"{key} {text!r}: expected comma-separated integers, e.g. 300,97") from None


def _show(summary: dict, as_json: bool, title: str) -> None:
    if as_json:
        print_json(summary)
        return
    from rich.table import Table

    err = err_console()
    for note in summary.get("notes") or []:
        err.print(f"note: {note}", markup=False, highlight=False)
    table = Table(title=title, show_header=False)
    for k, v in summary.items():
        if k != "notes":
            table.add_row(k, str(v))
    console().print(table)


def _run(fn, *args, **kwargs) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notes in the summary say the same, once
        return fn(*args, **kwargs)


@convert_app.command("scenic")
def scenic_command(
    checkpoint: str = typer.Argument(..., help="Scenic Flax checkpoint file (msgpack), or its folder."),
    out: str = OutOption,
    sets: Optional[List[str]] = SetOption,
    class_splits: Optional[str] = typer.Option(None, "--class-splits", help="Logit groups of a multi-head "
                                               "checkpoint, e.g. 300,97 (Epic Kitchens' default when it has 397)."),
    split_names: Optional[str] = typer.Option(None, "--split-names", help="Names of the groups, e.g. noun,verb."),
    head: Optional[str] = typer.Option(None, "--head", help="Keep only this group's logits (e.g. verb); default: "
                                       "all, named <group>/<i> in labels.txt."),
    as_json: bool = JsonOption,
) -> None:
    """Convert a Scenic ViViT checkpoint (any variant). The param tree gives variant, sizes, tubelet, classifier
    and classes; pass --set data.frames / data.crop when the position embedding cannot tell them apart."""
    from vivit_cli import interop

    names = split_names.split(",") if split_names else None
    summary = _run(interop.convert_scenic, checkpoint, out, sets, class_splits=_ints(class_splits, "--class-splits"),
                   split_names=names, head=head)
    _show(summary, as_json, "converted Scenic checkpoint")


@convert_app.command("hf")
def hf_command(
    model_dir: str = typer.Argument(..., help="transformers VivitForVideoClassification folder (config.json + "
                                    "model.safetensors or pytorch_model.bin)."),
    out: str = OutOption,
    sets: Optional[List[str]] = SetOption,
    as_json: bool = JsonOption,
) -> None:
    """Convert a Hugging Face ViViT (model 1, token classifier); labels come from id2label."""
    from vivit_cli import interop

    _show(_run(interop.convert_hf, model_dir, out, sets), as_json, "converted Hugging Face model")


@convert_app.command("vit")
def vit_command(
    file: str = typer.Argument(..., help="Image ViT: .npz (vision_transformer / big_vision) or a Scenic ViT "
                               "msgpack checkpoint."),
    out: str = OutOption,
    sets: Optional[List[str]] = SetOption,
    as_json: bool = JsonOption,
) -> None:
    """Convert an image ViT into a one-frame image model; then `--set model.init_from=DIR` initialises a
    video model from it (kernel inflation, position embeddings tiled over time)."""
    from vivit_cli import interop

    _show(_run(interop.convert_vit, file, out, sets), as_json, "converted image ViT")


@convert_app.command("to-hf")
def to_hf_command(
    source: str = typer.Argument(..., help="A training run folder, a checkpoint step folder or a converted folder."),
    out: str = OutOption,
    as_json: bool = JsonOption,
) -> None:
    """Export a model-1 checkpoint (tubelet embedding, token classifier) as a transformers model folder."""
    from vivit_cli import interop

    _show(_run(interop.export_hf, source, out), as_json, "exported to Hugging Face")


def register(app: typer.Typer) -> None:
    app.add_typer(convert_app, name="convert")
