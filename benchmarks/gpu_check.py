"""The GPU check behind benchmarks/gpu_check.sh: `vivit bench`'s measurement core on one NVIDIA GPU.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out DIR [--budget 260]

Measures, in bf16 (f32 params and optimizer state), in this order so that the figures that matter most come
first if the time budget runs out: the matmul peaks; a probe that cuDNN's fused attention really runs, forward and
backward, at model 1's shape and inside its train step (a refusal would silently fall back to XLA attention:
what the first run on an H200 found); ViViT-B model 1 at 32x224x224 (train step + forward, the MFU target: >= 0.45
of the bf16 peak), then its train step at `--big-batch` (16) where it fits in memory, and again with the crop
on the device (uint8 windows in, `data.crop_on_device`); the forward pass of models 2-4; a train step of the tiny and ViViT-S
CPU-target configs; then the train steps of models 2-4. Each item is timed on its own, an item that fails
(OOM, a cuDNN refusal) is retried once with XLA's attention and otherwise recorded with its error, and
DIR/gpu_check.json and DIR/gpu_check.md are rewritten after every item, so a kill still leaves results.

Needs only jax (with CUDA), flax, optax and numpy: it calls the library, not the Typer CLI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VIVIT_B = ["model.size=B", "data.frames=32", "data.crop=224", "model.tubelet=2x16x16", "train.precision=bfloat16"]
TINY = ["model.size=tiny", "data.frames=16", "data.crop=32", "model.tubelet=2x8x8", "train.precision=bfloat16"]
SMALL = ["model.size=S", "data.frames=16", "data.crop=112", "model.tubelet=2x16x16", "train.precision=bfloat16"]
VARIANTS = ("spatio_temporal", "factorised_encoder", "factorised_self_attention", "factorised_dot_product")
MFU_TARGET = 0.45
CROP_ON_DEVICE = ", crop on device"


SMOKE = ["model.hidden=32", "model.layers=1", "model.heads=2", "model.mlp=64", "data.frames=4", "data.crop=16",
         "model.tubelet=2x8x8", "model.temporal_layers=1", "train.precision=bfloat16"]


def plan(batch: int, smoke: bool = False, big_batch: int = 0) -> list[dict]:
    """The items in order. `smoke` swaps every config for a tiny one (checks the script itself on a CPU)."""
    items = _plan(batch, big_batch)
    if smoke:
        for it in items:
            it["sets"] = SMOKE + [s for s in it["sets"] if s.startswith(("model.variant=", "data.crop_on_device="))]
            it["batch"] = 2
    return items


def _plan(batch: int, big_batch: int = 0) -> list[dict]:
    items = [{"name": "ViViT-B model 1", "sets": VIVIT_B + ["model.variant=spatio_temporal"], "train": True,
              "forward": True, "batch": batch}]
    if big_batch and big_batch != batch:  # a GPU is under-fed at batch 8: the MFU target may need a bigger one
        items.append({"name": f"ViViT-B model 1 (batch {big_batch})", "sets": VIVIT_B + ["model.variant=spatio_temporal"],
                      "train": True, "forward": False, "batch": big_batch})
    # What the crop on the accelerator costs the step (data.crop_on_device: the host's share is in RESULTS.md).
    items.append({"name": f"ViViT-B model 1{CROP_ON_DEVICE}",
                  "sets": VIVIT_B + ["model.variant=spatio_temporal", "data.crop_on_device=true"], "train": True,
                  "forward": False, "batch": big_batch or batch})
    for i, v in enumerate(VARIANTS[1:], start=2):
        items.append({"name": f"ViViT-B model {i} forward", "sets": VIVIT_B + [f"model.variant={v}"], "train": False,
                      "forward": True, "batch": batch})
    items.append({"name": "tiny train", "sets": TINY, "train": True, "forward": False, "batch": 8})
    items.append({"name": "ViViT-S train", "sets": SMALL, "train": True, "forward": False, "batch": 8})
    for i, v in enumerate(VARIANTS[1:], start=2):
        items.append({"name": f"ViViT-B model {i} train", "sets": VIVIT_B + [f"model.variant={v}"], "train": True,
                      "forward": False, "batch": batch})
    return items


def environment() -> dict:
    import jax

    info = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()], "xla_flags": os.environ.get("XLA_FLAGS", "")}
    for mod in ("jaxlib", "flax", "optax"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    return info


def fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


def render(env: dict, peaks: dict | None, results: list[dict], skipped: list[str], elapsed: float,
           probe: list[dict] | None = None) -> str:
    lines = ["## GPU check (`benchmarks/gpu_check.sh`)", "",
             f"- Date: {env['date']}; device: {', '.join(env['devices'])}; jax {env['jax']} (jaxlib {env.get('jaxlib')}), "
             f"flax {env.get('flax')}, optax {env.get('optax')}, Python {env['python']}",
             f"- Wall time of the check: {elapsed:.0f} s"]
    if peaks:
        lines.append(f"- Matmul peak measured in this run: bf16 {peaks['bfloat16'] / 1e12:.1f} TFLOP/s, f32 "
                     f"{peaks['float32'] / 1e12:.1f} TFLOP/s (N={peaks['details'][0]['n']})")
    lines += ["", "| item | batch | train clips/s | train step ms | MFU (bf16 peak) | forward ms/clip | forward MFU | "
                  "compile s | program memory GiB | attention | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r.get("metrics") or {}
        mem = m.get("program_memory_bytes")
        lines.append(
            f"| {r['name']} | {r['batch']} | {fmt(m.get('train_clips_per_s'))} | {fmt(m.get('train_step_ms'), '.1f')} | "
            f"{fmt(m.get('mfu'), '.3f')} | {fmt(m.get('forward_ms_per_clip'), '.2f')} | {fmt(m.get('forward_mfu'), '.3f')} | "
            f"{fmt(m.get('compile_seconds') or m.get('forward_compile_seconds'), '.1f')} | "
            f"{fmt(None if mem is None else mem / 2**30, '.1f')} | {r.get('attention', '-')} | "
            f"{(r.get('error') or '').replace('|', '/')[:120]} |")
    model1 = [r for r in results if r["name"].startswith("ViViT-B model 1") and r.get("metrics")]
    for m1 in (r for r in model1 if CROP_ON_DEVICE not in r["name"]):
        mfu = m1["metrics"].get("mfu")
        if mfu is not None:
            lines += ["", f"ViViT-B model 1 training MFU at batch {m1['batch']}: **{mfu:.3f}** of the bf16 peak "
                          f"(target >= {MFU_TARGET}: {'met' if mfu >= MFU_TARGET else 'NOT met'})."]
    for dev in (r for r in model1 if CROP_ON_DEVICE in r["name"]):
        host = next((r for r in model1 if CROP_ON_DEVICE not in r["name"] and r["batch"] == dev["batch"]), None)
        a, b = dev["metrics"].get("train_clips_per_s"), host and host["metrics"].get("train_clips_per_s")
        if a and b:
            lines += ["", f"The crop on the device (uint8 windows in) trains at {a / b:.3f}x the clips/s of cropped "
                          f"clips in, at batch {dev['batch']}."]
    fwd = {r["name"].split(" forward")[0]: r["metrics"]["forward_ms_per_clip"] for r in results
           if r.get("metrics") and r["metrics"].get("forward_ms_per_clip") is not None}
    if "ViViT-B model 1" in fwd:
        ratios = ", ".join(f"{k.replace('ViViT-B ', '')}: {v / fwd['ViViT-B model 1']:.2f}" for k, v in fwd.items()
                           if k.startswith("ViViT-B"))
        lines += ["", f"Forward latency relative to model 1 (ViViT-B, 32x224x224): {ratios}."]
    if skipped:
        lines += ["", "Skipped for lack of time: " + ", ".join(skipped) + "."]
    if probe:
        lines += ["", "cuDNN fused-attention probe (the cuDNN path forced: a refusal is an error, not a fall back):", ""]
        lines += [f"- {row.pop('case', '?')}: " + ", ".join(f"{k}={v}" for k, v in row.items()) for row in map(dict, probe)]
    return "\n".join(lines) + "\n"


def write(out: Path, payload: dict, md: str) -> None:
    for name, text in (("gpu_check.json", json.dumps(payload, indent=2, default=str)), ("gpu_check.md", md)):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)


def run_item(item: dict, peaks: dict, repeats: int) -> dict:
    from vivit_cli import config
    from vivit_cli.bench import core

    cfg = config.build(item["sets"])
    rec = {"name": item["name"], "batch": item["batch"], "sets": item["sets"]}
    for attempt, attention in enumerate(("auto", "xla")):
        if attention == "xla":
            os.environ["VIVIT_ATTENTION"] = "xla"
        t0 = time.time()
        try:
            rec["metrics"] = core.run(cfg, batch_size=item["batch"], num_classes=400, train=item["train"],
                                      forward=item["forward"], repeats=repeats, warmup=2, peaks=peaks)
            rec["attention"] = "auto (cuDNN if GPU+bf16)" if attention == "auto" else "XLA (forced)"
            rec.pop("error", None)
            break
        except Exception as e:  # noqa: BLE001 - record and go on: one failure must not cost the other figures
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            rec.setdefault("tracebacks", []).append(traceback.format_exc()[-3000:])
            print(f"  {item['name']}: {rec['error']} (attention={attention})", flush=True)
        finally:
            os.environ.pop("VIVIT_ATTENTION", None)
            rec["seconds"] = round(time.time() - t0, 1)
            import gc

            gc.collect()
    return rec


def _hlo_facts(compiled) -> dict:
    """How many cuDNN fused-attention calls (forward / backward) the compiled program holds, and its memory."""
    text = compiled.as_text()
    facts = {"cudnn_fmha_calls": text.count('custom_call_target="__cudnn$fmha'),
             "cudnn_fmha_backward_calls": text.count("Backward")}
    try:
        m = compiled.memory_analysis()
        facts["temp_gib"] = round(m.temp_size_in_bytes / 2**30, 2)
    except Exception:  # noqa: BLE001
        pass
    return facts


def _fits(results: list[dict], batch: int) -> bool:
    """Would model 1's train step fit at `batch`, scaling its memory at the first batch linearly?"""
    import jax

    first = next((r for r in results if r["name"] == "ViViT-B model 1" and r.get("metrics")), None)
    mem = (first or {}).get("metrics", {}).get("program_memory_bytes")
    try:
        limit = jax.devices()[0].memory_stats()["bytes_limit"]
    except Exception:  # noqa: BLE001
        return True
    return mem is None or mem * batch / first["batch"] < 0.9 * limit


def attention_probe(smoke: bool = False) -> list[dict]:
    """Does cuDNN's fused attention really run, forward and backward, at ViViT-B model 1's shape, alone and
    inside the trainer's step? A refusal would silently fall back to XLA attention, which keeps [B, H, N, N]."""
    import jax
    import jax.numpy as jnp

    from vivit_cli.models import attention

    shape = (2, 64, 2, 16) if smoke else (8, 3136, 12, 64)
    q, k, v = (jax.random.normal(jax.random.key(i), shape, jnp.bfloat16) for i in range(3))
    path = "cudnn" if jax.default_backend() == "gpu" else "xla"  # cuDNN's kernel forced: a refusal raises
    fused = lambda q, k, v: attention.attend(path, q, k, v)  # noqa: E731
    loss = lambda q, k, v: fused(q, k, v).astype(jnp.float32).sum()  # noqa: E731
    cases = [("attention forward", jax.jit(fused)), ("attention grad", jax.jit(jax.grad(loss, argnums=(0, 1, 2))))]
    rows = []
    for name, fn in cases:
        row = {"case": name, "shape": list(shape)}
        try:
            row.update(_hlo_facts(fn.lower(q, k, v).compile()))
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
        rows.append(row)
    from vivit_cli import config, models
    from vivit_cli.bench import core

    for remat in ("false", "true"):
        sets = (SMOKE if smoke else VIVIT_B) + ["model.variant=spatio_temporal", f"model.remat={remat}"]
        row = {"case": f"ViViT-B model 1 train step, batch 2, remat={remat}"}
        t0 = time.time()
        try:
            p = core.prepare(config.build(sets), batch_size=2, num_classes=400)
            p.train_step()
            row.update(_hlo_facts(p._train))
            row["compile_s"] = round(p.compile_seconds, 1)
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
    refused = models.attention_choice(config.build(SMOKE if smoke else VIVIT_B)).refused  # the build-time probe's
    rows.append({"case": "fall-backs recorded", "refusals": [refused] if refused else []})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ViViT GPU check")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_results"))
    ap.add_argument("--budget", type=float, default=260.0, help="seconds; items that would not fit are skipped")
    ap.add_argument("--batch", type=int, default=8, help="ViViT-B batch size")
    ap.add_argument("--big-batch", type=int, default=16, help="a second model-1 train item at this batch (0: none)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="tiny configs and a small peak: test the script on a CPU")
    args = ap.parse_args(argv)
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import jax

    from vivit_cli.bench import peak

    env = environment()
    print(f"devices: {env['devices']}, jax {env['jax']}", flush=True)
    if env["backend"] != "gpu":
        print("warning: no GPU backend; the figures below are not a GPU check", flush=True)
    results, skipped = [], []
    peaks = None
    payload = {"environment": env, "peaks": None, "results": results, "skipped": skipped}
    try:
        peaks = peak.measure_peaks(repeats=5, n=256 if args.smoke else None)
        payload["peaks"] = peaks
        print(f"peaks: bf16 {peaks['bfloat16'] / 1e12:.1f} TFLOP/s, f32 {peaks['float32'] / 1e12:.1f} TFLOP/s", flush=True)
    except Exception as e:  # noqa: BLE001
        payload["peak_error"] = f"{type(e).__name__}: {e}"
        print(f"peak measurement failed: {e}", flush=True)
        peaks = {"float32": float("nan"), "bfloat16": float("nan")}
    payload["attention_probe"] = attention_probe(args.smoke)
    for row in payload["attention_probe"]:
        print(f"probe: {row}", flush=True)
    write(out, payload, render(env, payload["peaks"], results, skipped, time.time() - t_start, payload.get("attention_probe")))

    last_cost = 0.0
    for i, item in enumerate(plan(args.batch, args.smoke, args.big_batch)):
        left = args.budget - (time.time() - t_start)
        # Train items of ViViT-B cost about what model 1's did; do not start one that would not finish. The first
        # item is the check's headline figure and runs whatever is left: on a slowed host the peaks and the probe
        # once used up the whole budget, and a report with no figure is no check.
        need = max(10.0, 0.8 * last_cost if "ViViT-B" in item["name"] and item["train"] else 10.0)
        if i > 0 and left < need:
            skipped.append(item["name"])
            continue
        if item["name"].startswith("ViViT-B model 1") and i > 0 and not _fits(results, item["batch"]):
            skipped.append(item["name"] + " (would not fit in memory)")
            continue
        print(f"{item['name']} (batch {item['batch']}, {left:.0f} s left)...", flush=True)
        rec = run_item(item, peaks, args.repeats)
        if item["name"] == "ViViT-B model 1":
            last_cost = rec.get("seconds", 0.0)
        m = rec.get("metrics") or {}
        print(f"  -> train {fmt(m.get('train_clips_per_s'))} clips/s, MFU {fmt(m.get('mfu'), '.3f')}, forward "
              f"{fmt(m.get('forward_ms_per_clip'))} ms/clip, {rec.get('seconds')} s", flush=True)
        results.append(rec)
        write(out, payload, render(env, payload["peaks"], results, skipped, time.time() - t_start, payload.get("attention_probe")))
        jax.clear_caches()
    md = render(env, payload["peaks"], results, skipped, time.time() - t_start, payload.get("attention_probe"))
    write(out, payload, md)
    print(md, flush=True)
    return 0 if any(r.get("metrics") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
