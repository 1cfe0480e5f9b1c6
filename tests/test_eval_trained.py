"""`vivit eval` / `vivit predict` on a model trained by `vivit_cli.train` (smoke preset, tiny geometry):
multi-view logits against a hand-computed average, 8 devices against 1, video files against eval, exact
array logits, and bad inputs that must leave the run folder untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vivit_cli.errors import VivitError
from vivit_cli.interop.tree import flatten

ROOT = Path(__file__).resolve().parents[1]
GEOMETRY = ["data.source=embedded:appearance", "data.frames=4", "data.crop=16", "model.tubelet=2x8x8", "train.steps=4", "run.checkpoint_every=2"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from vivit_cli import config, train

    workdir = tmp_path_factory.mktemp("eval") / "run"
    cfg = config.build(GEOMETRY, preset="smoke")  # embedded:appearance: 10 classes, clips long enough for 2x1
    summary = train.run(cfg, workdir)
    assert summary["status"] == "done"
    return workdir


def _main(capsys, *args):
    from vivit_cli.cli.app import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()} | {"<dirs>": sorted(
                str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_dir())}


def _npz(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_1x1_eval_agrees_with_the_trainers_final_eval(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    split, key = summary["eval_split"], f"{summary['eval_split']}@1x1"
    rc, out, err = _main(capsys, "eval", run_dir, "--json")  # defaults: the config's eval split, 1x1 views
    assert rc == 0, err
    res = json.loads(out)
    assert res["key"] == key and res["step"] == 4 and res["videos"] == summary["eval_videos"]
    assert res["top1"] == pytest.approx(summary["top1"], abs=1e-9)
    assert res["top5"] == pytest.approx(summary["top5"], abs=1e-9)
    entry = json.loads((run_dir / "eval.json").read_text())[key]
    assert entry["top1"] == res["top1"]
    # The per-clip predictions beside eval.json: every clip once, exactly the entry's figures; the trainer's
    # own (summary.json's) are a file of their own, on the same clips.
    assert entry["predictions"] == f"predictions/eval/{key}.npz" and summary["predictions"] == f"predictions/{key}.npz"
    mine, trainers = _npz(run_dir / entry["predictions"]), _npz(run_dir / summary["predictions"])
    n = res["videos"]
    assert np.array_equal(mine["index"], np.arange(n)) and mine["top5"].shape == (n, 5)
    assert all(a.dtype == np.int32 for a in mine.values())
    assert (mine["top5"][:, 0] == mine["label"]).mean() == pytest.approx(entry["top1"], abs=1e-6)
    assert (mine["top5"] == mine["label"][:, None]).any(axis=1).mean() == pytest.approx(entry["top5"], abs=1e-6)
    assert np.array_equal(mine["index"], trainers["index"]) and np.array_equal(mine["label"], trainers["label"])
    # the rich table form, from the step folder, with a plot: another split, its own predictions file
    other = "val" if split == "test" else "test"
    rc, out, err = _main(capsys, "eval", run_dir / "checkpoints" / "2", "--split", other, "--plot",
                         run_dir.parent / "cm.png")
    assert rc == 0, err
    assert "top-1" in out and f"{other}@1x1" in out
    assert (run_dir.parent / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evals = json.loads((run_dir / "eval.json").read_text())
    assert evals[f"{other}@1x1"]["step"] == 2 and key in evals
    assert (run_dir / evals[f"{other}@1x1"]["predictions"]).is_file()
    assert _npz(run_dir / summary["predictions"])["top5"].tolist() == trainers["top5"].tolist()  # untouched


def _views_by_hand(videos: np.ndarray, span: int, n_t: int, crop: int, n_s: int) -> np.ndarray:
    """[N, n_t * n_s, span, crop, crop, 3]: clips evenly spread in time x crops evenly spread along the width,
    for frames whose height already equals the resized short side (round(crop * 8 / 7): no resize needed), in the
    model's [-1, 1] range. Three crops: Scenic's, at 0, ceil(room / 2) and room, centred vertically rounded up."""
    n, frames, h, w, _ = videos.shape
    assert h == round(crop * 8 / 7) < w
    starts = [round(i * (frames - span) / (n_t - 1)) for i in range(n_t)] if n_t > 1 else [(frames - span) // 2]
    lefts = [0, -(-(w - crop) // 2), w - crop] if n_s == 3 else [(w - crop) // 2]
    top = -(-(h - crop) // 2) if n_s == 3 else (h - crop) // 2
    views = [videos[:, s:s + span, top:top + crop, x:x + crop] for s in starts for x in lefts]
    return np.stack(views, 1).astype(np.float32) * np.float32(2 / 255) - np.float32(1)


def test_multiview_equals_hand_computed_average_of_view_logits(run_dir, tmp_path):
    from vivit_cli.eval import evaluate_checkpoint, restore
    from vivit_cli.eval.predict import predict_array

    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, (7, 12, 18, 25, 3), dtype=np.uint8)  # short side 18 already: crops are slices
    labels = np.array([0, 3, 5, 7, 8, 9, 2], np.int32)  # label 9 present: 10 classes, as the model
    np.save(tmp_path / "test_video.npy", videos)
    np.save(tmp_path / "test_label.npy", labels)
    run = evaluate_checkpoint(run_dir, data=f"npy:{tmp_path}", split="test", views="2x3",
                              save_logits=str(tmp_path / "out.npz"), write_json=False)

    r = restore.load(run_dir)
    clips = _views_by_hand(videos, 4, 2, 16, 3)
    per_view = predict_array(r.cfg, r.params, r.num_classes, clips.reshape(-1, *clips.shape[2:]), batch_size=42)
    by_hand = per_view.reshape(7, 6, -1).mean(axis=1)
    saved = np.load(tmp_path / "out.npz", allow_pickle=False)
    np.testing.assert_allclose(saved["view_logits"], per_view.reshape(7, 6, -1), atol=1e-5)
    np.testing.assert_allclose(saved["logits"], by_hand, atol=1e-5)
    assert (saved["logits"].argmax(-1) == by_hand.argmax(-1)).all()
    assert saved["index"].tolist() == list(range(7)) and saved["label"].tolist() == labels.tolist()
    assert run.entry["top1"] == pytest.approx(float((by_hand.argmax(-1) == labels).mean()))
    assert run.key.startswith("test@2x3+")  # other data than the run's own: its own eval.json key
    assert not (run_dir / "eval.json").exists() or run.key not in json.loads((run_dir / "eval.json").read_text())


def test_eval_on_8_devices_equals_eval_on_1(run_dir, tmp_path):
    from vivit_cli.eval import evaluate_checkpoint

    one = evaluate_checkpoint(run_dir, split="val", views="2x1", batch_size=5, save_logits=str(tmp_path / "1.npz"),
                              write_json=False)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "vivit_cli.cli.app", "eval", str(run_dir), "--split", "val",
                           "--views", "2x1", "--batch-size", "5", "--json", "--save-logits", str(tmp_path / "8.npz")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    eight = json.loads(proc.stdout)
    assert eight["devices"] == 8 and eight["batch_size"] == 8  # 5 rounded up to the device count
    assert one.entry["devices"] == 1 and one.entry["batch_size"] == 5
    for k in ("top1", "top5", "mean_class_accuracy", "videos", "clips"):
        assert eight[k] == one.entry[k], k
    a, b = np.load(tmp_path / "1.npz"), np.load(tmp_path / "8.npz")
    assert a["index"].tolist() == b["index"].tolist() == list(range(500))
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_allclose(a["view_logits"], b["view_logits"], atol=1e-5)
    assert json.loads((run_dir / "eval.json").read_text())["val@2x1"]["devices"] == 8


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_eval_on_two_processes_equals_eval_on_one(run_dir, tmp_path):
    """Multi-host: each process reads its shard of the split; results are gathered; process 0 writes. (The val
    split: 500 clips, a fifth of the test split's, is enough to cross the shards.)"""
    from vivit_cli.eval import evaluate_checkpoint

    one = evaluate_checkpoint(run_dir, split="val", views="1x1", batch_size=6, save_logits=str(tmp_path / "1.npz"),
                              write_json=False)
    port = _free_port()
    procs = []
    for pid in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "VIVIT_COORDINATOR": f"localhost:{port}",
               "VIVIT_NUM_PROCESSES": "2", "VIVIT_PROCESS_ID": str(pid), "VIVIT_NUM_CPU_DEVICES": "2",
               "VIVIT_INIT_TIMEOUT": "60"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vivit_cli.cli.app", "eval", str(run_dir), "--split", "val", "--views", "1x1",
             "--batch-size", "6", "--json", "--save-logits", str(tmp_path / f"p{pid}.npz")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=240))
        finally:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for _, e in outs]
    # Gloo (the CPU collectives library) prints its connection lines to stdout from C++; the JSON follows them.
    res = json.loads(outs[0][0][outs[0][0].index("\n{") + 1:] if not outs[0][0].startswith("{") else outs[0][0])
    assert "{" not in outs[1][0]  # only process 0 reports and writes
    assert not (tmp_path / "p1.npz").exists()
    assert (res["processes"], res["devices"], res["batch_size"]) == (2, 4, 8)
    for k in ("top1", "top5", "mean_class_accuracy", "videos"):
        assert res[k] == one.entry[k], k
    a, b = np.load(tmp_path / "1.npz"), np.load(tmp_path / "p0.npz")
    assert b["index"].tolist() == list(range(500))
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)


def _write_videos(root: Path, n_classes: int = 10) -> list[Path]:
    from vivit_cli.data.video import write_video

    rng = np.random.default_rng(1)
    files = []
    for c in range(n_classes):
        d = root / "test" / f"c{c:02d}"
        d.mkdir(parents=True)
        # a bright square drifting over noise: enough structure that different files get different logits
        frames = (rng.uniform(0, 60, (14, 28, 40, 3))).astype(np.uint8)
        y, x = rng.integers(0, 18, 2)
        for t in range(14):
            frames[t, y:y + 10, (x + 2 * t) % 30:(x + 2 * t) % 30 + 10] = rng.integers(120, 256, 3)
        files.append(d / f"clip{c}.mp4")
        write_video(str(files[-1]), frames)
    return files


def test_predict_on_video_files_matches_eval_on_the_same_clips(run_dir, tmp_path, capsys):
    from vivit_cli import data
    from vivit_cli.data.embedded import APPEARANCE_LABELS
    from vivit_cli.eval import evaluate_checkpoint, restore
    from vivit_cli.eval.predict import predict_videos

    files = _write_videos(tmp_path / "videos")
    spec = f"folder:{tmp_path / 'videos'}"
    run = evaluate_checkpoint(run_dir, data=spec, split="test", views="1x1", save_logits=str(tmp_path / "e.npz"),
                              write_json=False)
    assert run.entry["videos"] == 10
    saved = np.load(tmp_path / "e.npz")
    r = restore.load(run_dir)
    order = data.open_source(restore.with_source(r.cfg, spec)).split("test").paths
    eval_logits = {Path(order[i]): saved["logits"][k] for k, i in enumerate(saved["index"])}

    rc, out, err = _main(capsys, "predict", run_dir, *files, "--top-k", "3", "--json")
    assert rc == 0, err
    preds = first = json.loads(out)
    assert [Path(p["file"]) for p in preds] == files
    labels = [p["top"][0]["index"] for p in preds]
    assert labels == [int(np.argmax(eval_logits[f])) for f in files]
    assert len(set(np.round([p["top"][0]["probability"] for p in preds], 6))) > 1  # not one constant answer
    for p, f in zip(preds, files):
        z = eval_logits[f] - eval_logits[f].max()
        probs = np.exp(z) / np.exp(z).sum()
        assert [t["index"] for t in p["top"]] == list(np.argsort(-probs, kind="stable")[:3])
        assert p["top"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert p["top"][0]["label"] == APPEARANCE_LABELS[p["top"][0]["index"]]  # the run's data names the classes
    # multi-view: the same again with 2x2 views
    run = evaluate_checkpoint(run_dir, data=spec, split="test", views="2x2", save_logits=str(tmp_path / "e2.npz"),
                              write_json=False)
    saved = np.load(tmp_path / "e2.npz")
    by_file = {Path(order[i]): saved["logits"][k] for k, i in enumerate(saved["index"])}
    preds = predict_videos(r.cfg, r.params, r.num_classes, [str(f) for f in files], views=(2, 2))
    for p, f in zip(preds, files):
        np.testing.assert_allclose(p["logits"], by_file[f], atol=1e-5)

    rc, out, err = _main(capsys, "predict", run_dir, files[0], "--top-k", "2")  # the table form
    assert rc == 0, err
    for t in first[0]["top"][:2]:
        assert t["label"] in out and f"{t['probability']:.4f}" in out


def test_predict_array_gives_the_models_exact_float32_logits(run_dir, tmp_path, capsys):
    import jax

    from vivit_cli import models
    from vivit_cli.eval import restore

    clips = np.random.default_rng(2).uniform(-1, 1, (3, 4, 16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "clips.npy", clips)
    rc, out, err = _main(capsys, "predict", run_dir, "--array", tmp_path / "clips.npy", "--out",
                         tmp_path / "logits.npy", "--batch-size", "3")
    assert rc == 0, err
    logits = np.load(tmp_path / "logits.npy", allow_pickle=False)
    assert logits.dtype == np.float32 and logits.shape == (3, 10)
    r = restore.load(run_dir)
    model = models.build_model(r.cfg, r.num_classes)
    direct = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(r.params, clips))
    np.testing.assert_array_equal(logits, direct)
    # a batch that does not divide N pads the tail and drops it again
    rc, _, err = _main(capsys, "predict", run_dir, "--array", tmp_path / "clips.npy", "--out",
                       tmp_path / "logits2.npy", "--batch-size", "2")
    assert rc == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "logits2.npy"), direct, atol=1e-6)


def test_bad_inputs_exit_2_with_one_line_and_touch_nothing(run_dir, tmp_path, capsys):
    from safetensors.numpy import save_file

    from vivit_cli import config
    from vivit_cli.runtime import checkpoint

    # a converted checkpoint whose config does not match its weights (hidden 48 vs the trained 32)
    cfg, params = checkpoint.load(run_dir)
    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    (mismatch / "config.json").write_text(config.to_json(config.build(["model.hidden=48"], base=cfg)))
    save_file(flatten(params), str(mismatch / "params.safetensors"))
    # a run whose every checkpoint step is damaged
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    for f in broken.glob("checkpoints/*/params/**/*"):
        if f.is_file() and f.name != "_METADATA":
            f.write_bytes(b"garbage")
    arrays = {"rank4": np.zeros((2, 16, 16, 3), np.float32), "frames": np.zeros((2, 6, 16, 16, 3), np.float32),
              "uint8": np.zeros((2, 4, 16, 16, 3), np.uint8)}
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    (tmp_path / "notvideo.mp4").write_text("not a video")
    out = tmp_path / "never.npy"

    watched = [run_dir, mismatch, broken]
    before = [_snapshot(d) for d in watched]
    cases = [
        (["eval", run_dir, "--split", "nope"], "no split 'nope'"),
        (["eval", run_dir, "--views", "10x1"], "10 temporal clips"),
        (["eval", run_dir, "--views", "1x4"], "spatial crops"),  # 36 x 36 clips resized to 18: 2 px of room
        (["eval", run_dir, "--views", "4by3"], "--views"),
        (["eval", run_dir, "--batch-size", "0"], "batch-size"),
        (["eval", run_dir, "--data", "embedded:motion"], "8 classes, the model has 10"),
        (["eval", run_dir, "--save-logits", tmp_path / "no" / "dir" / "l.npz"], "does not exist"),
        (["eval", tmp_path / "missing"], "no such checkpoint"),
        (["eval", mismatch], "shape"),
        (["eval", broken], "no readable checkpoint"),
        (["predict", run_dir, "--array", tmp_path / "rank4.npy", "--out", out], "rank 4"),
        (["predict", run_dir, "--array", tmp_path / "frames.npy", "--out", out], "6 frames"),
        (["predict", run_dir, "--array", tmp_path / "uint8.npy", "--out", out], "uint8"),
        (["predict", run_dir, "--array", tmp_path / "rank4.npy"], "--out"),
        (["predict", run_dir, tmp_path / "nothere.mp4"], "no such video"),
        (["predict", run_dir, tmp_path / "notvideo.mp4"], "not a readable video"),
        (["predict", mismatch, tmp_path / "notvideo.mp4"], "shape"),
    ]
    for args, needle in cases:
        rc, stdout, stderr = _main(capsys, *args)
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert rc == 2, (args, stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, stderr)
        assert needle in lines[0], (args, lines[0])
        assert "Traceback" not in stderr + stdout
    # In a fresh interpreter too: a damaged Orbax item must not leave tracebacks behind at exit.
    proc = subprocess.run([sys.executable, "-m", "vivit_cli.cli.app", "eval", str(broken)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "no readable checkpoint" in lines[0], proc.stderr[-3000:]
    assert [_snapshot(d) for d in watched] == before
    assert not out.exists()




def test_restore_refuses_a_folder_that_is_no_checkpoint(tmp_path):
    from vivit_cli.eval import restore

    with pytest.raises(VivitError, match="not a run directory"):
        restore.load(tmp_path)
