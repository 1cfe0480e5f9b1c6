"""`vivit eval` (multi-view testing of a checkpoint) and `vivit predict` (video files, or clip arrays -> logits)."""

from __future__ import annotations

from typing import List, Optional

import typer

from vivit_cli.errors import VivitError

from .common import JsonOption, console, print_json


def _fmt(x) -> str:
    return "-" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


def eval_command(
    path: str = typer.Argument(..., help="A run's workdir, a checkpoint step folder inside it, or a converted "
                                         "reference checkpoint (folder with config.json, or its weights file)."),
    data: Optional[str] = typer.Option(None, "--data", help="Evaluate on this data.source instead of the "
                                                            "run's own (same number of classes)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to evaluate. Default: the config's "
                                                              "data.eval_split."),
    views: Optional[str] = typer.Option(None, "--views", help="TxS: T temporal clips evenly spread x S spatial "
                                                              "crops per video, logits averaged (paper: 4x3). "
                                                              "Default: the config's data.eval_views."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Videos per step over all devices, "
                                                                        "rounded up to a multiple of the device "
                                                                        "count. Default: train.batch_size / views."),
    as_json: bool = JsonOption,
    save_logits: Optional[str] = typer.Option(None, "--save-logits", help="Write per-video logits: FILE.npy "
                                                                          "[N, C], or FILE.npz with logits, "
                                                                          "view_logits, label, index."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write a confusion-matrix PNG here."),
) -> None:
    """Evaluate a checkpoint with multi-view testing: top-1, top-5, mean class accuracy, throughput.

    The result is added to eval.json beside the checkpoint's config.json under "<split>@<T>x<S>"
    (other keys are kept), each clip's predicted classes to predictions/eval/<split>@<T>x<S>.npz beside it. A
    failed evaluation writes nothing.
    """
    from vivit_cli.eval import evaluate_checkpoint

    run = evaluate_checkpoint(path, data=data, split=split, views=views, batch_size=batch_size,
                              save_logits=save_logits, plot=plot)
    from vivit_cli import runtime

    if not runtime.is_main():
        return
    e = run.entry
    if as_json:
        print_json({"key": run.key, **e, "eval_json": str(run.eval_json) if run.eval_json else None})
        return
    from rich.table import Table

    table = Table(title=f"{run.restored.path}  {run.key}", show_header=False)
    heads = [h.partition(":")[0] for h in e["heads"].split(",")] if e.get("heads") else []
    what = "action " if heads else ""  # a multi-head model's headline figures are the action's (every head right)
    rows = [(f"{what}top-1", _fmt(e["top1"])), (f"{what}top-5", _fmt(e["top5"])),
            (f"{what}mean class accuracy", _fmt(e["mean_class_accuracy"])),
            *((f"{h} top-1 / top-5", f"{_fmt(e[f'{h}_top1'])} / {_fmt(e[f'{h}_top5'])}") for h in heads),
            ("videos", f"{e['videos']} of {e['split_size']} in split {e['split']}"
                       + (f" ({e['skipped']} undecodable, skipped)" if e["skipped"] else "")),
            ("views", f"{e['views']} = {e['views_per_video']} per video, logits averaged"),
            ("throughput", f"{e['clips_per_s']} clips/s, {e['videos_per_s']} videos/s "
                           f"({e['forward_ms_per_clip']} ms/clip forward)"),
            ("batch", f"{e['batch_size']} videos on {e['device']}"),
            ("data", e["source"]), ("step", _fmt(e["step"]))]
    for k, v in rows:
        table.add_row(k, v)
    console().print(table)
    if run.eval_json:
        console().print(f"wrote {run.eval_json} ({run.key}) and the per-clip {e['predictions']}", markup=False,
                        highlight=False)


def predict_command(
    checkpoint: str = typer.Argument(..., help="A run's workdir, a step folder or a converted checkpoint."),
    videos: Optional[List[str]] = typer.Argument(None, help="Video files to classify."),
    top_k: int = typer.Option(5, "--top-k", help="Labels to show per video."),
    views: str = typer.Option("1x1", "--views", help="TxS views per video, logits averaged (as `vivit eval`)."),
    array: Optional[str] = typer.Option(None, "--array", help="A .npy of clips [N, T, H, W, 3], float, the "
                                                              "model input exactly (no resizing/normalising)."),
    out: Optional[str] = typer.Option(None, "--out", help="With --array: where to write the float32 logits "
                                                          "[N, C] (.npy)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Clips per step over all devices."),
    as_json: bool = JsonOption,
) -> None:
    """Classify video files (top-k labels with probabilities), or turn a clip array into raw logits.

      vivit predict RUN clip1.mp4 clip2.webm --top-k 3
      vivit predict RUN --array clips.npy --out logits.npy
    """
    from vivit_cli import config
    from vivit_cli.eval import predict, restore, results

    if array is None and not videos:
        raise VivitError("predict: give video files, or --array CLIPS.npy --out LOGITS.npy")
    if array is not None and videos:
        raise VivitError("predict: give video files or --array, not both")
    if array is not None and not out:
        raise VivitError("predict --array: --out LOGITS.npy is required")
    if out and array is None:
        raise VivitError("predict: --out goes with --array")
    if batch_size <= 0:
        raise VivitError(f"--batch-size={batch_size}: must be positive")
    view_pair = config.parse_views(views, "--views")
    results.check_writable(out, "--out")

    restored = restore.load(checkpoint)
    cfg, params, nc = restored.cfg, restored.params, restored.num_classes
    from vivit_cli import runtime

    if array is not None:
        clips = predict.load_clips(array, cfg)
        logits = predict.predict_array(cfg, params, nc, clips, batch_size)
        if runtime.is_main():
            results.save_npy(out, logits)
            if as_json:
                print_json({"out": out, "clips": int(len(logits)), "num_classes": nc, "dtype": "float32"})
            else:
                console().print(f"wrote {out}: float32 logits {list(logits.shape)}")
        return

    names = restore.label_names(cfg, restored.home, nc)
    preds = predict.predict_videos(cfg, params, nc, list(videos), views=view_pair, top_k=top_k, label_names=names,
                                   batch_size=batch_size)
    if not runtime.is_main():
        return
    if as_json:
        print_json([{k: v for k, v in p.items() if k != "logits"} for p in preds])
        return
    from rich.table import Table

    table = Table(title=f"{restored.path} ({view_pair[0]}x{view_pair[1]} views)")
    table.add_column("video")
    table.add_column("rank", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for p in preds:
        for rank, t in enumerate(p["top"], 1):
            table.add_row(p["file"] if rank == 1 else "", str(rank), t["label"], f"{t['probability']:.4f}",
                          end_section=rank == len(p["top"]))
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("predict")(predict_command)
