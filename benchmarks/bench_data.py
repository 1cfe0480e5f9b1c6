"""Input pipeline throughput, next to what the training step consumes.

    .venv/bin/python benchmarks/bench_data.py [--seconds 10] [--workers 0 1 2] [--skip-train-step]

Reports clips/s of `data.train_iterator` for the embedded data at the default CPU preset
(8x32x32), for mp4 files decoded with PyAV at the paper's 32x224x224 (stride 2, from 256x340 h264
clips written here), and the clips/s of one jitted train step of the default tiny model on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def _rate(it, batch: int, seconds: float) -> float:
    next(it)  # warm-up: worker start, first decode
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    return n / (time.perf_counter() - t0)


def bench_embedded(workers: int, seconds: float) -> dict:
    from vivit_cli import config, data

    cfg = config.build([f"data.workers={workers}"])
    data.open_source(cfg)  # generation/caching is not part of the steady-state rate
    return {"what": "embedded:motion 8x32x32", "workers": workers,
            "clips_per_s": round(_rate(data.train_iterator(cfg, batch_size=32), 32, seconds), 1)}


def bench_mp4(workers: int, seconds: float, folder: str) -> dict:
    from vivit_cli import config, data

    cfg = config.build([f"data.source=folder:{folder}", "data.frames=32", "data.stride=2", "data.crop=224",
                        "model.tubelet=2x16x16", f"data.workers={workers}", "data.max_skip_fraction=0"])
    return {"what": "mp4 (h264 256x340) -> 32x224x224, stride 2", "workers": workers,
            "clips_per_s": round(_rate(data.train_iterator(cfg, batch_size=4), 4, seconds), 2)}


PAPER_CLIP = ["data.frames=32", "data.stride=2", "data.crop=224", "model.tubelet=2x16x16", "data.max_skip_fraction=0"]


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its live children (grain's worker processes)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def bench_records(kind: str, source: str, workers: int, seconds: float, on_device: bool = False) -> dict:
    """clips/s, and CPU seconds per clip (every thread and worker process): the per-core cost, which a shared
    machine's load does not change the way it changes wall-clock rates. `on_device`: data.crop_on_device, the host
    stops at each clip's uint8 window (the interpolation is the accelerator's, not measured here)."""
    from vivit_cli import config, data

    cfg = config.build([f"data.source={source}", *PAPER_CLIP, f"data.workers={workers}",
                        f"data.crop_on_device={on_device}"])
    it = data.train_iterator(cfg, batch_size=4)
    next(it)  # warm-up: worker start, first decode
    n, c0, t0 = 0, _cpu_seconds(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += 4
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {"what": kind, "workers": workers, "clips_per_s": n / wall, "cpu_s_per_clip": cpu / n}


def run_records(args, tmp: str) -> None:
    """mp4 vs records, interleaved rounds; one JSON line per measurement, then the medians."""
    from vivit_cli.data import sources
    from vivit_cli.data.prepare import prepare

    for video in args.videos:
        frames, height, width = (int(v) for v in video.split("x")[:3])
        folder, out = os.path.join(tmp, f"mp4-{video}"), os.path.join(tmp, f"records-{video}")
        write_mp4s(folder, frames=frames, height=height, width=width, texture=video.endswith("textured"))
        mp4_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
        src = sources.open_source(f"folder:{folder}", frames=32, stride=2, crop=224)
        t0 = time.perf_counter()
        prepare(src, out, short_side=256, progress=False)
        clips = sum(len(sp) for sp in src.splits.values())
        print(json.dumps({"what": f"prepare {clips} clips of {video} (frames x height x width)",
                          "seconds": round(time.perf_counter() - t0, 2),
                          "mp4_kbit_per_s": round(mp4_bytes * 8 / clips / (frames / 25) / 1e3),
                          "records_bytes_per_clip": sum(os.path.getsize(os.path.join(out, f))
                                                        for f in os.listdir(out)) // clips}), flush=True)
        runs: dict = {}
        crops = {"host": (False,), "device": (True,), "both": (False, True)}[args.crop]
        for r in range(args.rounds):
            for w in args.workers:
                for on in crops:
                    for name, spec in (("mp4", f"folder:{folder}"), ("records", f"records:{out}")):
                        kind = f"{name} {video}" + (" crop on device" if on else "")
                        row = bench_records(kind, spec, w, args.seconds, on)
                        row["round"] = r
                        print(json.dumps({**row, "clips_per_s": round(row["clips_per_s"], 2),
                                          "cpu_s_per_clip": round(row["cpu_s_per_clip"], 4)}), flush=True)
                        runs.setdefault((name, on, w), []).append(row)
        for w, on in ((w, on) for w in args.workers for on in crops):
            mp4, rec = runs[("mp4", on, w)], runs[("records", on, w)]

            def med(rows, key):
                return float(np.median([row[key] for row in rows]))

            print(json.dumps({"videos": video, "workers": w, "rounds": args.rounds, "crop_on_device": on,
                              "mp4_clips_per_s": round(med(mp4, "clips_per_s"), 2),
                              "records_clips_per_s": round(med(rec, "clips_per_s"), 2),
                              "ratio_clips_per_s": round(float(np.median([b["clips_per_s"] / a["clips_per_s"]
                                                                          for a, b in zip(mp4, rec)])), 2),
                              "mp4_cpu_s_per_clip": round(med(mp4, "cpu_s_per_clip"), 4),
                              "records_cpu_s_per_clip": round(med(rec, "cpu_s_per_clip"), 4),
                              "ratio_per_core": round(float(np.median([a["cpu_s_per_clip"] / b["cpu_s_per_clip"]
                                                                       for a, b in zip(mp4, rec)])), 2),
                              "load_avg_1min": round(os.getloadavg()[0], 2)}), flush=True)
        for w in args.workers if len(crops) == 2 else ():  # what an accelerator fed from records gains over mp4 as it was
            mp4, rec = runs[("mp4", False, w)], runs[("records", True, w)]
            print(json.dumps({"videos": video, "workers": w, "compare": "records, crop on device / mp4, crop on host",
                              "ratio_per_core": round(float(np.median([a["cpu_s_per_clip"] / b["cpu_s_per_clip"]
                                                                       for a, b in zip(mp4, rec)])), 2)}), flush=True)


def bench_jpeg(rounds: int = 5, n: int = 200) -> None:
    import io

    import PIL.features
    import PIL.Image
    import simplejpeg

    from vivit_cli.data.sources.records import encode_jpeg

    yy, xx = np.mgrid[0:256, 0:341]
    frame = np.stack([np.sin(xx / 30) * 100 + 120, np.cos(yy / 25) * 100 + 120, np.full_like(xx, 80.0)], -1)
    frame = np.clip(frame + np.random.default_rng(0).normal(0, 8, frame.shape), 0, 255).astype(np.uint8)
    data = encode_jpeg(frame, 90)
    decoders = {"simplejpeg": lambda: simplejpeg.decode_jpeg(data, colorspace="RGB"),
                "pillow": lambda: np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))}
    assert np.array_equal(decoders["simplejpeg"](), decoders["pillow"]())
    times: dict = {k: [] for k in decoders}
    for _ in range(rounds):
        for name, f in decoders.items():
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            times[name].append((time.perf_counter() - t0) / n * 1e3)
    print(json.dumps({"what": "decode one 256x341 JPEG (quality 90, 4:4:4), ms, median of interleaved rounds",
                      "pillow_libjpeg_turbo": PIL.features.check_feature("libjpeg_turbo"),
                      **{k: round(float(np.median(v)), 3) for k, v in times.items()}, "bytes": len(data)}))


def write_mp4s(folder: str, per_class: int = 4, classes: int = 2, frames: int = 80, height: int = 256,
               width: int = 340, texture: bool = False) -> None:
    """h264 clips of smooth moving gradients (like real footage, unlike noise, which no codec compresses). With
    `texture`, a blurred random texture panning under them plus a little per-frame noise: a bitrate nearer real
    footage's (the smooth 360p clips are about 120 kbit/s)."""
    from vivit_cli.data.video import write_video

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    for c in range(classes):
        os.makedirs(os.path.join(folder, f"class{c}"), exist_ok=True)
        for i in range(per_class):
            phase = rng.uniform(0, 6)
            if texture:
                noise = rng.uniform(-60, 60, (height + frames * 2, width + frames * 3, 3))
                field = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, (1, 1), (0, 1))) / 4
            video = []
            for t in range(frames):
                frame = np.stack([(np.sin(xx / 30 + t / 5 + phase) * 100 + 120),
                                  (np.cos(yy / 25 - t / 7) * 100 + 120),
                                  np.full_like(xx, 60 + 40 * c, dtype=float)], -1)
                if texture:
                    frame = frame * 0.6 + field[2 * t:2 * t + height, 3 * t:3 * t + width] + rng.normal(0, 1.5, frame.shape)
                video.append(np.clip(frame, 0, 255).astype(np.uint8))
            write_video(os.path.join(folder, f"class{c}", f"clip{i}.mp4"), np.stack(video), "libx264", fps=25)


def bench_train_step(seconds: float) -> dict:
    import jax
    import optax

    from vivit_cli import config
    from vivit_cli.models import build_model, init_params

    cfg = config.build([])
    model = build_model(cfg, 12)
    params = init_params(cfg, 12, jax.random.PRNGKey(0))
    tx = optax.adamw(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, video, label):
        def loss_fn(p):
            logits = model.apply({"params": p}, video, train=True, rngs={"dropout": jax.random.PRNGKey(0)})
            return optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    video = np.zeros((32, 8, 32, 32, 3), np.float32)
    label = np.zeros((32,), np.int32)
    params, opt, loss = step(params, opt, video, label)
    loss.block_until_ready()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        params, opt, loss = step(params, opt, video, label)
        n += 32
    loss.block_until_ready()
    rate = n / (time.perf_counter() - t0)
    return {"what": "train step, default tiny model 1, batch 32", "clips_per_s": round(rate, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--skip-train-step", action="store_true")
    ap.add_argument("--records", action="store_true", help="mp4 decoding against prepared records, interleaved")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--videos", nargs="+", default=["80x256x340", "250x360x640"],
                    help="FRAMESxHEIGHTxWIDTH[xtextured] of the h264 clips: the 80-frame 256x340 ones above, and "
                         "Kinetics-like 10 s at 25 fps, 360p (textured: a real footage's bitrate)")
    ap.add_argument("--crop", choices=["host", "device", "both"], default="host",
                    help="--records: where the training crop runs (data.crop_on_device); both: interleaved")
    ap.add_argument("--jpeg", action="store_true", help="simplejpeg against Pillow")
    args = ap.parse_args()
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    if args.jpeg:
        bench_jpeg()
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("VIVIT_CACHE", os.path.join(tmp, "cache"))
        if args.records:
            run_records(args, tmp)
            return
        write_mp4s(os.path.join(tmp, "mp4"))
        for w in args.workers:
            print(json.dumps(bench_embedded(w, args.seconds)), flush=True)
        for w in args.workers:
            print(json.dumps(bench_mp4(w, args.seconds, os.path.join(tmp, "mp4"))), flush=True)
    if not args.skip_train_step:
        print(json.dumps(bench_train_step(args.seconds)), flush=True)


if __name__ == "__main__":
    main()
