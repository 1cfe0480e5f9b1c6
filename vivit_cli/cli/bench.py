"""`vivit bench`: how fast the configured model trains and runs on this machine, and how close to the
hardware's measured matmul peak (MFU)."""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import JsonOption, PresetOption, SetOption, build_config, console, print_json


def bench(
    sets: Optional[List[str]] = SetOption,
    preset: Optional[str] = PresetOption,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Global batch (default: train.batch_size)."),
    mode: str = typer.Option("both", "--mode", help="What to time: train, forward or both."),
    repeats: int = typer.Option(5, "--repeats", help="Timed samples; the median is reported."),
    peak_size: Optional[int] = typer.Option(None, "--peak-size", help="Matmul size N for the peak (default 2048 on "
                                            "CPU, 8192 on accelerators)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classifier width (default: data.num_classes"
                                              " or 400)."),
    cpu_devices: Optional[int] = typer.Option(None, "--cpu-devices", help="Split the batch over N CPU devices in this "
                                              "process (data parallel over the cores; as VIVIT_NUM_CPU_DEVICES)."),
    as_json: bool = JsonOption,
) -> None:
    """Measure train-step clips/s, forward latency per clip, achieved FLOP/s, MFU, peak memory and compile time.

    MFU = model FLOPs per second (3x the forward's analytic FLOPs for a train step) / the matmul peak measured
    by this same command on this same device, in the configured precision (train.precision).
    """
    from vivit_cli.errors import VivitError

    if mode not in ("train", "forward", "both"):
        raise VivitError(f"--mode {mode!r}: allowed values are train, forward, both")
    if repeats < 1:
        raise VivitError(f"--repeats {repeats}: must be >= 1")
    if batch_size is not None and batch_size < 1:
        raise VivitError(f"--batch-size {batch_size}: must be >= 1")
    if peak_size is not None and peak_size < 64:
        raise VivitError(f"--peak-size {peak_size}: must be >= 64")
    if cpu_devices is not None and cpu_devices < 1:
        raise VivitError(f"--cpu-devices {cpu_devices}: must be >= 1")
    cfg = build_config(sets, preset)
    from vivit_cli import bench as bench_lib
    from vivit_cli import runtime

    runtime.setup(cpu_devices=cpu_devices)

    result = bench_lib.run(cfg, batch_size=batch_size, num_classes=num_classes, train=mode != "forward",
                           forward=mode != "train", repeats=repeats, peak_size=peak_size)
    if as_json:
        print_json(result)
        return
    console().print(render_table(result))


def _fmt_flops(x) -> str:
    return "-" if x is None else f"{x / 1e9:,.1f} GFLOP/s"


def render_table(r: dict):
    from rich.table import Table

    t = Table(title=f"vivit bench: {r['variant']} {r['size']} {r['input']} tubelet {r['tubelet']}, batch "
                    f"{r['batch_size']}, {r['precision']}", show_header=False)
    rows = [("device", r["device"]), ("tokens", str(r["tokens"])),
            ("model GFLOPs / clip", f"{r['model_flops_per_clip'] / 1e9:.4g} (forward, 2 x multiply-adds)")]
    if r.get("train_clips_per_s") is not None:
        rows += [("train step", f"{r['train_step_ms']:.1f} ms (median of {r['repeats']})"),
                 ("train clips/s", f"{r['train_clips_per_s']:.2f}"),
                 ("achieved", _fmt_flops(r["achieved_flops"])),
                 ("MFU", f"{r['mfu']:.3f} of {_fmt_flops(r['peak_flops'])} ({r['peak_flops_dtype']} matmul peak, "
                         "measured now)"),
                 ("compile", f"{r['compile_seconds']:.1f} s")]
    if r.get("forward_ms_per_clip") is not None:
        rows += [("forward / clip", f"{r['forward_ms_per_clip']:.2f} ms (batch {r['batch_size']})"),
                 ("forward MFU", f"{r['forward_mfu']:.3f}")]
    if r.get("attention"):
        rows.append(("attention", r["attention"]))
    if r.get("peak_memory_bytes"):
        rows.append(("peak memory", f"{r['peak_memory_bytes'] / 2**20:,.0f} MiB ({r['peak_memory_source']})"))
    rows.append(("matmul peaks", f"f32 {_fmt_flops(r['peak_flops_f32'])}, bf16 {_fmt_flops(r['peak_flops_bf16'])}"))
    for k, v in rows:
        t.add_row(k, v)
    return t


def register(app: typer.Typer) -> None:
    app.command()(bench)
