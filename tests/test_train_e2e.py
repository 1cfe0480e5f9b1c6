"""End-to-end training tests: real runs of a tiny model (in-process and as subprocesses).

Topology tests compare loss curves on 1 device, 8 CPU devices and 2 processes x 2 devices; preemption tests
really kill (-9) or terminate a training process and check the resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import train_helpers as h
from vivit_cli.io import read_json

pytestmark = pytest.mark.slow


def _params(workdir):
    from vivit_cli.runtime import checkpoint

    return checkpoint.load(workdir)[1]


def _assert_trees_close(a, b, atol=1e-5):
    import jax

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) > 0
    worst = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(la, lb))
    assert worst <= atol, worst


def _check_predictions(workdir, clips: int = 40):
    """The final eval's per-clip predictions: every clip once, sorted, and exactly the summary's top-1/top-5."""
    s = read_json(workdir / "summary.json")
    assert s["predictions"] == f"predictions/{s['eval_split']}@{s['eval_views']}.npz"
    assert [p.name for p in (workdir / "predictions").iterdir()] == [s["predictions"].split("/")[1]]  # no temp file
    with np.load(workdir / s["predictions"], allow_pickle=False) as z:
        p = {k: z[k] for k in z.files}
    assert sorted(p) == ["index", "label", "top5"] and all(a.dtype == np.int32 for a in p.values())
    assert np.array_equal(p["index"], np.arange(clips)) and p["top5"].shape == (clips, 4)  # k = the 4 classes
    assert np.array_equal(p["label"], h.synthetic_clips(clips, 4, 16, 1)[1])
    assert (p["top5"][:, 0] == p["label"]).mean() == s["top1"]
    assert (p["top5"] == p["label"][:, None]).any(axis=1).mean() == s["top5"]
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run that several tests compare against."""
    wd = tmp_path_factory.mktemp("reference") / "run"
    summary = h.run_synthetic(wd)
    return wd, summary


def test_run_leaves_config_metrics_checkpoints_and_summary(reference):
    from vivit_cli import config

    wd, s = reference
    assert s["status"] == "done" and s == read_json(wd / "summary.json")
    for key in ("top1", "top5", "params", "gflops", "steps", "train_seconds", "run_id", "config_hash",
                "num_classes", "device"):
        assert s[key] is not None, key
    assert s["steps"] == 8 and s["num_classes"] == 4 and 0 <= s["top1"] <= s["top5"] <= 1
    cfg = config.from_json((wd / "config.json").read_text())
    assert cfg.data.num_classes == 4 and s["config_hash"] == config.config_hash(cfg)
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 9))
    assert all({"loss", "lr", "clips_per_s"} <= set(r) for r in train_rows)
    assert "top1" in rows[-1]
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [4, 8]
    _check_predictions(wd)


def test_summary_records_the_runs_perf(reference):
    from vivit_cli import config
    from vivit_cli.bench import core

    from vivit_cli import models

    wd, s = reference
    assert s["numerics"] == models.NUMERICS_VERSION  # which model code computed it (reports flag a mix)
    p = s["perf"]
    cfg = config.from_json((wd / "config.json").read_text())
    # Steps 2..8 are timed: the first compiles. Not a timing assertion, only that the figures hang together.
    assert p["timed_steps"] == 7 and p["train_clips_per_s"] > 0
    assert p["train_clips_per_s"] == pytest.approx(8 / (p["train_step_ms"] / 1e3), rel=1e-3)
    assert p["model_flops_per_clip"] == core.model_flops_per_clip(cfg, 4)
    # The peak is this process's measurement, or the best kept for this machine when that is higher (or measured
    # by another process within bench.peak.REUSE_S: then this one did not measure).
    assert p["peak_flops_dtype"] == "float32" and p["peak_flops"] > 0
    assert p["peak_flops_this_run"] is None or p["peak_flops"] >= p["peak_flops_this_run"] > 0
    assert ("not measured" in p["peak_flops_source"]) == (p["peak_flops_this_run"] is None)
    assert 0 < p["mfu"] < 1.5
    assert p["mfu"] == pytest.approx(p["train_clips_per_s"] * 3 * p["model_flops_per_clip"] / p["peak_flops"],
                                     rel=1e-3)
    assert p["compile_seconds"] > 0 and p["compile_source"] in ("compiled", "persistent cache")
    assert p["peak_memory_bytes"] > 0 and p["device"] == s["device"]


def test_finished_workdir_is_not_trained_again(reference, capfd):
    wd, s = reference
    before = (wd / "metrics.jsonl").read_text()
    again = h.run_synthetic(wd)
    assert again == s and (wd / "metrics.jsonl").read_text() == before
    assert "already done" in capfd.readouterr().err


def test_checkpoint_load_from_run_dir_and_step_dir(reference):
    from vivit_cli.runtime import checkpoint

    wd, _ = reference
    cfg, params = checkpoint.load(wd)
    assert cfg.model.hidden == 32 and "Transformer" in params
    _, p4 = checkpoint.load(wd / "checkpoints" / "4")
    _, p8 = checkpoint.load(wd / "checkpoints" / "8")
    _assert_trees_close(params, p8, atol=0)
    assert not np.allclose(p4["output_projection"]["kernel"], p8["output_projection"]["kernel"])


def test_corrupt_latest_checkpoint_falls_back_and_reaches_the_same_params(reference, tmp_path):
    import shutil

    wd, _ = reference
    copy = tmp_path / "run"
    shutil.copytree(wd, copy)
    (copy / "summary.json").unlink()
    # Truncate the array data of the newest step: it still looks complete to a directory listing.
    for f in (copy / "checkpoints" / "8" / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = h.run_synthetic(copy)
    assert s["status"] == "done"
    assert any("unreadable" in str(w.message) for w in caught)
    _assert_trees_close(_params(copy), _params(wd))
    assert h.losses(copy) == h.losses(wd)  # metrics.jsonl reads as one run


def test_nan_loss_marks_the_run_failed(tmp_path):
    s = h.run_synthetic(tmp_path / "nan", ["train.optimizer=sgd", "train.lr=1e30", "train.grad_clip=0",
                                           "train.warmup_steps=0", "run.log_every=4"])
    assert s["status"] == "failed" and "loss became" in s["error"]
    assert read_json(tmp_path / "nan" / "summary.json")["status"] == "failed"
    # No checkpoint of diverged weights was written.
    assert not any(p.name.isdigit() for p in (tmp_path / "nan" / "checkpoints").iterdir())


def test_kill_9_and_restart_reaches_the_same_params(reference, tmp_path):
    wd = tmp_path / "killed"
    extra = ["train.steps=30", "run.checkpoint_every=2", "run.log_every=5"]  # long enough to be killed mid-run
    proc = h.subprocess_run(wd, extra, wait=False)
    deadline = time.time() + 90
    while time.time() < deadline:  # kill as soon as a checkpoint past step 2 is complete
        if any(p.name.isdigit() and int(p.name) >= 4 for p in (wd / "checkpoints").glob("*")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (wd / "summary.json").exists()
    s = h.run_synthetic(wd, extra)
    assert s["status"] == "done"
    ref = h.run_synthetic(tmp_path / "straight", extra)
    _assert_trees_close(_params(wd), _params(tmp_path / "straight"))
    assert np.allclose(h.losses(wd), h.losses(tmp_path / "straight"), atol=1e-6)
    assert s["top1"] == pytest.approx(ref["top1"])


def test_sigterm_saves_a_checkpoint_then_the_run_resumes(reference, tmp_path):
    wd = tmp_path / "term"
    extra = ["train.steps=400", "run.checkpoint_every=1000", "run.log_every=50"]
    proc = h.subprocess_run(wd, extra, wait=False)
    deadline = time.time() + 90
    while time.time() < deadline and not (wd / "metrics.jsonl").exists():
        time.sleep(0.05)
    while time.time() < deadline and not (wd / "metrics.jsonl").read_text():
        time.sleep(0.05)  # training has started
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    steps = [int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(steps) == 1 and 0 < steps[0] < 400  # a checkpoint the periodic schedule would not have made
    assert not (wd / "summary.json").exists()
    s = h.run_synthetic(wd, extra)
    assert s["status"] == "done" and s["steps"] == 400


def test_same_loss_curve_on_1_device_8_devices_and_2_processes_x_2_devices(reference, tmp_path):
    one = h.losses(reference[0])
    # 8 devices: pure data parallel, then a 4 x 2 mesh whose "model" axis shards the larger parameters.
    wide = ["model.hidden=64", "model.mlp=256"]  # MLP kernels of 64x256 are big enough to be sharded
    r8 = h.subprocess_run(tmp_path / "d8", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
                          more=[(tmp_path / "fsdp", wide + ["train.mesh_model=2"])])
    assert r8.returncode == 0, r8.stderr[-2000:]
    assert "1x8 cpu" in r8.stderr and "param tensors split over a model axis of 2" in r8.stderr
    assert "/0 param tensors" not in r8.stderr
    assert np.allclose(h.losses(tmp_path / "d8"), one, atol=1e-5)
    _check_predictions(tmp_path / "d8")  # 8 data shards: every clip once, padding rows dropped
    h.run_synthetic(tmp_path / "plain", wide)
    assert np.allclose(h.losses(tmp_path / "fsdp"), h.losses(tmp_path / "plain"), atol=1e-5)

    outs = h.two_processes(tmp_path / "mp", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert "2x2 cpu" in outs[0][1]
    assert np.allclose(h.losses(tmp_path / "mp"), one, atol=1e-5)
    _check_predictions(tmp_path / "mp")  # both processes' rows, written once by process 0
    meta = json.loads((tmp_path / "mp" / "checkpoints" / "8" / "meta" / "metadata").read_text())
    assert len(meta["data_states"]) == 2  # each process's iterator position is in the checkpoint
    _assert_trees_close(_params(tmp_path / "mp"), _params(reference[0]), atol=1e-4)


def test_wandb_offline_run_is_readable_resumes_the_same_run_and_holds_no_key(tmp_path, monkeypatch):
    from vivit_cli.train.wandb_log import read_offline_run

    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    wd = tmp_path / "wb"
    extra = ["run.wandb=offline", "run.group=my-grid", "train.steps=30", "run.log_every=2",
             "run.checkpoint_every=2"]
    proc = h.subprocess_run(wd, extra, wait=False)
    deadline = time.time() + 90
    while time.time() < deadline and not any(p.name.isdigit() and int(p.name) >= 2
                                             for p in (wd / "checkpoints").glob("*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not (wd / "summary.json").exists()
    s = h.run_synthetic(wd, extra)
    assert s["status"] == "done"
    runs = sorted((wd / "wandb").glob("offline-run-*"))
    assert len(runs) >= 1
    ids = {r.name.rsplit("-", 1)[-1] for r in runs}
    assert len(ids) == 1  # the resumed process continued the same W&B run id
    records = [read_offline_run(r) for r in runs]  # one folder per process that ran; later ones win
    record = records[-1]
    logged = {row["_step"]: row for rec in records for row in rec["history"] if "loss" in row}
    local = {r["step"]: r for r in map(json.loads, (wd / "metrics.jsonl").read_text().splitlines()) if "loss" in r}
    # Steps logged after the resume (a kill -9 may lose what wandb had not flushed: the local files are the
    # source of truth).
    for step in (20, 30):
        assert logged[step]["loss"] == pytest.approx(local[step]["loss"])
    assert record["summary"]["top1"] == pytest.approx(s["top1"])
    # The perf block's scalars, under perf/ (the nested dict itself is not a W&B summary value).
    assert record["summary"]["perf/mfu"] == pytest.approx(s["perf"]["mfu"])
    assert record["summary"]["perf/train_clips_per_s"] == pytest.approx(s["perf"]["train_clips_per_s"])
    train_cfg = record["config"]["train"]
    assert train_cfg.get("value", train_cfg)["steps"] == 30
    for f in wd.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_cli_trains_on_the_embedded_data_and_skips_a_finished_workdir(tmp_path):
    wd = tmp_path / "cli"
    args = [sys.executable, "-m", "vivit_cli.cli.app", "train", "--preset", "smoke", "--set",
            "data.source=embedded:motion", "--set", "data.crop=16", "--set", "data.frames=4", "--set",
            "model.tubelet=2x8x8", "--workdir", str(wd), "--json"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["status"] == "done" and summary["num_classes"] == 8
    assert summary == read_json(wd / "summary.json")
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "already done" in r.stderr
    # --config FILE starts from a saved config.json
    r = subprocess.run([sys.executable, "-m", "vivit_cli.cli.app", "train", "--config", str(wd / "config.json"),
                        "--set", "train.steps=1", "--workdir", str(tmp_path / "from-config"), "--json"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["steps"] == 1


def test_cli_resume_from_a_garbled_checkpoint_prints_one_warning_line(tmp_path):
    """Orbax's and TensorStore's readers of a damaged step fail on a closed event loop, one traceback each,
    after the restore has already fallen back: the terminal must show the one warning line instead."""
    wd = tmp_path / "run"
    args = [sys.executable, "-m", "vivit_cli.cli.app", "train", "--preset", "smoke", "--set",
            "data.source=embedded:motion", "--set", "data.crop=16", "--set", "data.frames=4", "--set",
            "model.tubelet=2x8x8", "--workdir", str(wd), "--json"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    straight = json.loads(r.stdout)
    steps = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
    assert len(steps) >= 2  # an older step to fall back to
    (wd / "summary.json").unlink()
    rng = np.random.default_rng(0)
    for f in sorted((wd / "checkpoints" / str(steps[-1])).rglob("*")):
        if f.is_file() and f.parent.name == "d" and f.stat().st_size > 0:  # the arrays' data: garbage
            f.write_bytes(rng.bytes(f.stat().st_size))
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    fallback = [line for line in out.splitlines() if "unreadable" in line or "falling back" in line]
    assert len(fallback) == 1 and fallback[0].startswith("warning: "), out[-3000:]
    assert "Traceback" not in out and "Exception ignored" not in out and "Event loop is closed" not in out, out[-3000:]
    resumed = json.loads(r.stdout)
    assert resumed["status"] == "done" and resumed["top1"] == straight["top1"]


def test_pretrain_image_then_init_a_video_model_from_it(tmp_path):
    from vivit_cli import config, models
    from vivit_cli.runtime import checkpoint
    from vivit_cli.train import init_from, loop

    sets = ["data.source=embedded:motion", "model.hidden=32", "model.layers=1", "model.heads=2", "model.mlp=64",
            "data.crop=16", "data.frames=4", "model.tubelet=2x8x8", "train.batch_size=16", "train.steps=6",
            "train.warmup_steps=2", "run.log_every=3", "run.checkpoint_every=6", "model.init=central_frame"]
    cfg = config.build(sets)
    img = loop.pretrain_image(cfg, tmp_path / "img")
    assert img["status"] == "done" and img["kind"] == "image" and img["num_classes"] == 10
    img_cfg, img_params = checkpoint.load(tmp_path / "img")
    assert img_cfg.data.frames == 1 and img_params["embedding"]["kernel"].ndim == 4

    video_cfg = config.build(sets + [f"model.init_from={tmp_path / 'img'}"])
    import jax

    fresh = models.init_params(video_cfg.replace(data=video_cfg.data), 12, jax.random.PRNGKey(0))
    params, how = init_from.initial_params(video_cfg, fresh, video_cfg.model.init_from)
    assert "inflated" in how
    block = "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel".split("/")
    src, dst = img_params, params
    for k in block:
        src, dst = src[k], dst[k]
    assert np.array_equal(src, dst)
    kernel = params["embedding"]["kernel"]  # central frame: the 2-D kernel in the middle time slice only
    assert kernel.shape[0] == 2 and np.array_equal(kernel[1], img_params["embedding"]["kernel"])
    assert not np.any(kernel[0])
    s = loop.run(video_cfg, tmp_path / "video")
    assert s["status"] == "done" and s["num_classes"] == 8


def test_periodic_eval_writes_top1_into_the_metrics(tmp_path):
    s = h.run_synthetic(tmp_path / "ev", ["train.eval_every=4", "run.log_every=3"])
    rows = [json.loads(line) for line in (tmp_path / "ev" / "metrics.jsonl").read_text().splitlines()]
    evaluated = {r["step"]: r["top1"] for r in rows if "top1" in r and "loss" in r}
    assert sorted(evaluated) == [4] and 0.0 <= evaluated[4] <= 1.0
    assert [r["step"] for r in rows if "loss" in r] == [3, 4, 6, 8]
    assert rows[-1]["top1"] == s["top1"]
