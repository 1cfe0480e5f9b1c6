"""Our ViViT (JAX/Flax, `vivit bench`'s train step) against Hugging Face transformers' PyTorch
`VivitForVideoClassification` (model 1), same configuration, same batch, timed interleaved in one process.

    .venv/bin/python benchmarks/vs_pytorch.py                      # tiny + ViViT-S + ViViT-B forward, writes RESULTS.md
    .venv/bin/python benchmarks/vs_pytorch.py --sizes tiny --rounds 3 --no-write
    .venv/bin/python benchmarks/vs_pytorch.py --sizes none --vivit-b   # only the ViViT-B forward latencies

Why interleaved: the machine is shared, so its load changes by the minute. Each round times a block of our
steps, a block of PyTorch's and a matmul peak back to back (alternating which goes first); the reported ratio is
the median of the per-round ratios, so both sides saw the same load. Both train steps do the same work:
forward, softmax cross-entropy, backward, global-norm clipping to 1, AdamW. PyTorch uses its default SDPA
attention and all cores (torch.get_num_threads()).

Writes the block between the `vs_pytorch` markers of benchmarks/RESULTS.md (the rest of the file, e.g. the
GPU figures, is kept) and, with --json, the raw figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vivit_cli.runtime.cpu import apply_xla_defaults  # noqa: E402

apply_xla_defaults()  # first: the project's XLA CPU flags, before JAX starts its backend

SIZES = {
    # name: (config overrides, target ratio of our train clips/s over PyTorch's, MFU target or None)
    "tiny": (["model.size=tiny", "data.frames=16", "data.crop=32", "model.tubelet=2x8x8"], 1.3, None),
    "S": (["model.size=S", "data.frames=16", "data.crop=112", "model.tubelet=2x16x16"], 1.6, 0.55),
}
# The PyTorch side's optimizer (AdamW, wd 0.05, clip 1.0), on our side too: the same update on both.
SAME_OPTIMIZER = ["train.optimizer=adamw", "train.weight_decay=0.05", "train.grad_clip=1.0"]
VIVIT_B = ["model.size=B", "data.frames=32", "data.crop=224", "model.tubelet=2x16x16"]
VARIANT_NAMES = {"spatio_temporal": "Model 1: spatio-temporal", "factorised_encoder": "Model 2: factorised encoder",
                 "factorised_self_attention": "Model 3: factorised self-attention",
                 "factorised_dot_product": "Model 4: factorised dot-product"}
def markers(precision: str, cpu_devices: int = 1) -> tuple[str, str]:
    """Each precision and device count has its own block in RESULTS.md (float32 on one device keeps the
    original markers)."""
    tag = "vs_pytorch" if precision == "float32" else f"vs_pytorch_{precision}"
    if cpu_devices > 1:
        tag += f"_{cpu_devices}cpu"
    return f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"


def torch_model(cfg, num_classes: int):
    import torch
    import transformers

    from vivit_cli.config import parse_tubelet

    m = cfg.model
    hc = transformers.VivitConfig(
        image_size=cfg.data.crop, num_frames=cfg.data.frames, tubelet_size=list(parse_tubelet(m.tubelet)),
        num_channels=3, hidden_size=m.hidden, num_hidden_layers=m.layers, num_attention_heads=m.heads,
        intermediate_size=m.mlp, num_labels=num_classes, hidden_act="gelu_pytorch_tanh",  # our MLP's tanh GELU
        layer_norm_eps=1e-6, qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.VivitForVideoClassification(hc)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)
    return model, opt, model.config._attn_implementation


def torch_step_fn(model, opt, video: np.ndarray, labels: np.ndarray, precision: str = "float32"):
    import contextlib

    import torch

    pixels = torch.from_numpy(np.ascontiguousarray(video.transpose(0, 1, 4, 2, 3)))  # [B, T, C, H, W]
    target = torch.from_numpy(labels.astype(np.int64))
    # bf16: PyTorch's own mixed precision (f32 params, bf16 matmuls through oneDNN), the counterpart of ours.
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bfloat16" \
        else contextlib.nullcontext

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = model(pixel_values=pixels).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    return step


def time_block(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def compare_size(name: str, rounds: int, batch: int, num_classes: int, budget_s: float,
                 precision: str = "float32") -> dict:
    import jax
    import torch

    from vivit_cli import config
    from vivit_cli.bench import core, peak

    sets, target_ratio, target_mfu = SIZES[name]
    cfg = config.build(sets + SAME_OPTIMIZER + [f"train.precision={precision}"])
    prep = core.prepare(cfg, batch_size=batch, num_classes=num_classes)
    step = prep.train_step()
    state = [prep.train_state()]

    def ours():
        state[0], metrics = step(state[0])
        return metrics

    def ours_block(n):
        t0 = time.perf_counter()
        m = None
        for _ in range(n):
            m = ours()
        jax.block_until_ready((state[0], m))
        return (time.perf_counter() - t0) / n

    tmodel, topt, attn = torch_model(cfg, num_classes)
    video = np.asarray(jax.device_get(prep.data["video"]))
    labels = np.asarray(jax.device_get(prep.data["label"]))
    tstep = torch_step_fn(tmodel, topt, video, labels, precision)
    torch.manual_seed(0)

    # Warm-up both (compilation, allocator, thread pools), then size the blocks to ~budget_s each.
    ours_block(2)
    tstep(); tstep()
    n_ours = max(2, int(budget_s / ours_block(1)))
    n_torch = max(2, int(budget_s / time_block(tstep, 1)))

    flops = core.model_flops_per_clip(cfg, num_classes) * core.TRAIN_FLOPS_PER_FORWARD
    rows = []
    for r in range(rounds):
        load = os.getloadavg()[0]
        p32 = peak.matmul_flops_per_s(precision, repeats=3, accumulate_f32=precision == "bfloat16")["flops_per_s"]
        if r % 2 == 0:
            t_ours = ours_block(n_ours)
            t_torch = time_block(tstep, n_torch)
        else:
            t_torch = time_block(tstep, n_torch)
            t_ours = ours_block(n_ours)
        rows.append({"ours_clips_per_s": batch / t_ours, "torch_clips_per_s": batch / t_torch,
                     "ratio": t_torch / t_ours, "peak_f32": p32, "load": load,
                     "ours_mfu": batch / t_ours * flops / p32, "torch_mfu": batch / t_torch * flops / p32})
        print(f"  [{name}] round {r + 1}/{rounds}: ours {batch / t_ours:7.2f} clips/s  torch {batch / t_torch:7.2f}"
              f"  ratio {t_torch / t_ours:.2f}  ours MFU {rows[-1]['ours_mfu']:.2f}  {precision} peak {p32 / 1e9:.0f} GFLOP/s"
              f"  load {load:.1f}", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {"size": name, "config": sets, "precision": precision, "batch": batch, "num_classes": num_classes, "torch_attention": attn,
            "torch_threads": torch.get_num_threads(), "ours_devices": len(jax.devices()), "rounds": rows, "median": med,
            "target_ratio": target_ratio, "target_mfu": target_mfu,
            "ratio_met": med["ratio"] >= target_ratio,
            "mfu_met": None if target_mfu is None else med["ours_mfu"] >= target_mfu,
            "train_flops_per_clip": flops, "compile_seconds": prep.compile_seconds,
            "steps_per_block": {"ours": n_ours, "torch": n_torch}}


def vivit_b_forward(repeats: int, batch: int, precision: str = "float32") -> dict:
    """Forward latency per clip of ViViT-B models 1-4 (ours only: the HF port has model 1 alone)."""
    import jax

    from vivit_cli import config
    from vivit_cli.bench import core

    preps, fwds = {}, {}
    for variant in VARIANT_NAMES:
        cfg = config.build(VIVIT_B + [f"model.variant={variant}", f"train.precision={precision}"])
        preps[variant] = core.prepare(cfg, batch_size=batch, num_classes=400)
        fwds[variant] = preps[variant].forward()
        jax.block_until_ready(fwds[variant]())
    times = {v: [] for v in VARIANT_NAMES}
    for r in range(repeats):  # interleaved: every variant once per round
        for v, f in fwds.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[v].append((time.perf_counter() - t0) / batch)
        print(f"  [ViViT-B forward] round {r + 1}/{repeats}: " +
              "  ".join(f"{v.split('_')[0]} {times[v][-1] * 1e3:.0f} ms" for v in times), flush=True)
    med = {v: statistics.median(t) for v, t in times.items()}
    m1 = med["spatio_temporal"]
    return {"batch": batch, "repeats": repeats, "precision": precision, "ms_per_clip": {v: 1e3 * t for v, t in med.items()},
            "ratio_to_model1": {v: t / m1 for v, t in med.items()},
            "gflops": {v: core.model_flops_per_clip(config.build(VIVIT_B + [f"model.variant={v}"]), 400) / 2e9
                       for v in VARIANT_NAMES},
            "model2_ratio_met": med["factorised_encoder"] / m1 <= 0.35,
            "models34_faster_met": med["factorised_self_attention"] < m1 and med["factorised_dot_product"] < m1}


def machine() -> dict:
    import flax
    import jax
    import jaxlib
    import optax
    import torch
    import transformers

    cpu = platform.processor() or "?"
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "python": platform.python_version(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def render(mach: dict, sizes: list[dict], vb: dict | None, load_before, load_after, precision: str = "float32",
           cpu_devices: int = 1) -> str:
    ok = lambda b: "met" if b else "**not met**"  # noqa: E731
    begin, end = markers(precision, cpu_devices)
    title = "" if precision == "float32" else (
        ", bfloat16 (ours: bf16 x bf16 -> f32 products, f32 activations; PyTorch: `torch.autocast` bf16)")
    if cpu_devices > 1:
        title += (f", ours data parallel over {cpu_devices} CPU devices (`--cpu-devices {cpu_devices}`: the batch "
                  f"split over the cores, one gradient all-reduce per step)")
    lines = [begin, f"## CPU: ours vs Hugging Face PyTorch ViViT (`benchmarks/vs_pytorch.py`){title}", "",
             f"- Date: {mach['date']}",
             f"- Machine: {mach['cpu']}, {mach['cores']} cores ({', '.join(mach['isa'])}), shared with other jobs",
             f"- Load average (1 min) before / after: {load_before:.2f} / {load_after:.2f}",
             f"- Versions: Python {mach['python']}, jax {mach['jax']} (jaxlib {mach['jaxlib']}), flax {mach['flax']}, "
             f"optax {mach['optax']}, torch {mach['torch']}, transformers {mach['transformers']}",
             f"- XLA_FLAGS: `{mach['xla_flags'] or '(none)'}`", ""]
    if sizes:
        lines += [f"Training step, batch 8, model 1, {precision}, same config and optimizer (AdamW) both sides; medians "
                  f"over interleaved rounds (ratio = median of per-round ratios; MFU = 3 x forward FLOPs x clips/s / "
                  f"{precision} matmul peak measured in each round).", "",
                  "| size | config | ours clips/s | PyTorch clips/s | ratio (target) | ours MFU (target) | PyTorch MFU "
                  f"| {precision} peak GFLOP/s | rounds |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in sizes:
            m = s["median"]
            mfu_t = "" if s["target_mfu"] is None else f" (>= {s['target_mfu']}, {ok(s['mfu_met'])})"
            lines.append(f"| {s['size']} | {' '.join(c.split('=')[1] for c in s['config'])} | "
                         f"{m['ours_clips_per_s']:.2f} | {m['torch_clips_per_s']:.2f} | {m['ratio']:.2f} "
                         f"(>= {s['target_ratio']}, {ok(s['ratio_met'])}) | {m['ours_mfu']:.2f}{mfu_t} | "
                         f"{m['torch_mfu']:.2f} | {m['peak_f32'] / 1e9:.0f} | {len(s['rounds'])} |")
        lines += ["", "PyTorch side: " + ", ".join(f"{s['size']}: attention `{s['torch_attention']}`, "
                                                   f"{s['torch_threads']} threads" for s in sizes), ""]
    if vb:
        lines += [f"ViViT-B, 32x224x224, tubelet 2x16x16, forward latency per clip (ours, {precision}, batch {vb['batch']}, "
                  f"median of {vb['repeats']} interleaved rounds):", "",
                  "| model | GFLOPs (MACs) | ms / clip | ratio to model 1 |", "|---|---|---|---|"]
        for v, name in VARIANT_NAMES.items():
            lines.append(f"| {name} | {vb['gflops'][v]:.1f} | {vb['ms_per_clip'][v]:.0f} | "
                         f"{vb['ratio_to_model1'][v]:.2f} |")
        lines += ["", f"Targets: model 2 <= 0.35x model 1: {ok(vb['model2_ratio_met'])}; models 3 and 4 faster than "
                      f"model 1: {ok(vb['models34_faster_met'])}.", ""]
    lines.append(end)
    return "\n".join(lines)


def write_results(path: Path, block: str, precision: str = "float32", cpu_devices: int = 1) -> None:
    from vivit_cli.io import atomic_write_text

    old = path.read_text() if path.exists() else "# Benchmark results\n\nWritten by the scripts in `benchmarks/`.\n"
    begin, end = markers(precision, cpu_devices)
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,S", help="comma-separated of: tiny, S; or none")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block-seconds", type=float, default=3.0, help="time per side per round")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                    help="both sides: f32, or bf16 mixed precision (ours: train.precision=bfloat16, PyTorch: autocast)")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--cpu-devices", type=int, default=1,
                    help="ours over N CPU devices in this process: the batch split over the cores (data parallel)")
    ap.add_argument("--vivit-b", action=argparse.BooleanOptionalAction, default=True,
                    help="also time ViViT-B models 1-4 forward at 32x224x224 (slow on a CPU)")
    ap.add_argument("--vivit-b-repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--json", default=None, help="also write the raw figures here")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    names = [] if args.sizes == "none" else [s.strip() for s in args.sizes.split(",") if s.strip()]
    for n in names:
        if n not in SIZES:
            ap.error(f"--sizes: unknown size {n!r} (allowed: {', '.join(SIZES)}, none)")

    if args.cpu_devices < 1 or args.batch % args.cpu_devices:
        ap.error(f"--cpu-devices {args.cpu_devices}: must be >= 1 and divide --batch {args.batch}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from vivit_cli import runtime

    runtime.setup(cpu_devices=args.cpu_devices)  # before JAX starts its backend
    load_before = os.getloadavg()[0]
    mach = machine()
    print(f"{mach['cpu']}, {mach['cores']} cores, load {load_before:.2f}", flush=True)
    sizes = [compare_size(n, args.rounds, args.batch, args.num_classes, args.block_seconds, args.precision)
             for n in names]
    # One clip per device: the forward's latency per clip, not a batch's.
    vb = vivit_b_forward(args.vivit_b_repeats, args.cpu_devices, args.precision) if args.vivit_b else None
    load_after = os.getloadavg()[0]
    block = render(mach, sizes, vb, load_before, load_after, args.precision, args.cpu_devices)
    print(block)
    if args.json:
        from vivit_cli.io import atomic_write_json

        atomic_write_json(args.json, {"machine": mach, "sizes": sizes, "vivit_b_forward": vb,
                                      "load_before": load_before, "load_after": load_after})
    if not args.no_write:
        write_results(Path(args.out), block, args.precision, args.cpu_devices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
