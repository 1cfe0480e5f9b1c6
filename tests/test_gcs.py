"""gs:// workdirs and run stores against a GCS emulator on localhost (tests/gcs_emulator.py): the path layer,
the run store's states, a real training run (Orbax arrays through tensorstore's GCS driver) that resumes and
is evaluated, and sweeps (local and emulated TPU backends) read back by `vivit status` and `vivit report`."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

import gcs_emulator
from conftest import run_cli
from test_sweep_run import FAKE_GCLOUD, RANDOM, write_grid
from vivit_cli import io

BUCKET = gcs_emulator.BUCKET
SMALL = ["--set", "data.source=embedded:motion", "--set", "data.crop=16", "--set", "data.frames=4", "--set",
         "model.tubelet=2x8x8"]


@pytest.fixture(scope="module")
def gcs():
    """The emulator's URL, with this process (and the subprocesses it starts) pointed at it."""
    with gcs_emulator.running() as url, pytest.MonkeyPatch.context() as mp:
        for key, value in gcs_emulator.env(url).items():
            mp.setenv(key, value)
        yield url


def other_client():
    """A second gcsfs client with its own caches: what another process would see and write."""
    import gcsfs

    return gcsfs.GCSFileSystem(skip_instance_cache=True, use_listings_cache=False)


def test_io_round_trips_on_gs(gcs):
    root = io.as_path(f"gs://{BUCKET}/io")
    assert io.is_remote(root) and not isinstance(root, Path)
    assert str(io.as_path(f"gs://{BUCKET}/io", absolute=True)) == f"gs://{BUCKET}/io"  # never ./gs:/...
    assert io.as_path("results/x", absolute=True) == Path("results/x").absolute()

    io.write_json(root / "a" / "b.json", {"x": 1})
    assert io.read_json(root / "a" / "b.json") == {"x": 1}
    assert io.read_json(f"gs://{BUCKET}/io/a/b.json") == {"x": 1}
    assert json.loads(other_client().cat(f"{BUCKET}/io/a/b.json")) == {"x": 1}
    io.write_text(root / "a" / "b.json", '{"x": 2')  # a torn or foreign file reads as "not written yet"
    assert io.read_json(root / "a" / "b.json") is None
    assert io.read_json(root / "missing.json") is None

    # Listed once here, then written by another client: still seen (fsspec's listing cache is off).
    assert [p.name for p in (root / "a").iterdir()] == ["b.json"]
    other_client().pipe(f"{BUCKET}/io/a/c.json", b'{"y": 3}')
    assert sorted(p.name for p in (root / "a").iterdir()) == ["b.json", "c.json"]
    assert io.read_json(root / "a" / "c.json") == {"y": 3}

    io.rmtree(root / "a")
    assert not (root / "a" / "b.json").exists()
    io.rmtree(root / "a")  # missing: nothing to do


def test_metrics_log_on_gs_rewrites_the_object_in_batches(gcs):
    from vivit_cli.train.logs import MetricsLog

    path = io.as_path(f"gs://{BUCKET}/metrics/metrics.jsonl")
    log = MetricsLog(path, resume_step=0, remote_every=3600)
    log.write({"step": 1, "loss": 1.0})
    assert not path.exists()  # batched: no request per logged step
    log.flush()  # what the trainer calls at each checkpoint
    log.write({"step": 2, "loss": float("nan")})
    log.close()
    assert [json.loads(x) for x in path.read_text().splitlines()] == [{"step": 1, "loss": 1.0},
                                                                     {"step": 2, "loss": None}]
    log.write({"step": 3, "loss": 0.5})  # closed: ignored
    # A resume from step 1 drops what the dead run logged after its checkpoint.
    MetricsLog(path, resume_step=1).close()
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1]


def test_gs_without_gcsfs_is_a_one_line_error(monkeypatch):
    import importlib.util

    from vivit_cli.errors import VivitError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("gcsfs", "tensorflow")
                        else real(name, *a))
    with pytest.raises(VivitError, match=r"gs://b/run: gs:// paths need gcsfs \(pip install 'vivit-cli\[gcs\]'\)"):
        io.as_path("gs://b/run")


def test_run_store_states_on_gs(gcs):
    from vivit_cli.sweep import status, store as st

    url = f"gs://{BUCKET}/states"
    root = io.as_path(url)
    cells = {"d": "done", "f": "failed", "p": "partial", "u": "uncommitted", "n": "new"}
    for run_id in cells:
        io.write_json(root / "g" / run_id / "cell.json", {"run_id": run_id, "row": run_id, "column": "c", "seed": 0})
    io.write_json(root / "g" / "d" / "summary.json", {"status": "done", "top1": 0.5})
    io.write_json(root / "g" / "f" / "summary.json", {"status": "failed", "error": "loss became nan"})
    io.write_text(root / "g" / "p" / "checkpoints" / "3" / "commit_success.txt", "ok")
    io.write_text(root / "g" / "p" / "metrics.jsonl", '{"step": 2, "loss": 1.0}\n{"step": 3, "loss": 0.9}\n')
    # A step folder without Orbax's commit marker is a save cut off midway, not a checkpoint.
    io.write_text(root / "g" / "u" / "checkpoints" / "6" / "params" / "manifest.ocdbt", "x")

    store = st.RunStore(url)
    assert store.remote and store.workdir(SimpleNamespace(grid="g", run_id="d")) == f"{url}/g/d"
    assert not str(store.lock_dir).startswith("gs:")  # flocks need a local file
    states = {r: store.state(SimpleNamespace(grid="g", run_id=r)) for r in cells}
    assert {r: s.state for r, s in states.items()} == {"d": "done", "f": "failed", "p": "partial", "u": "new",
                                                       "n": "new"}
    assert states["d"].top1 == 0.5 and states["f"].error == "loss became nan" and states["p"].step == 3

    rows = status.collect(url)
    assert {r["run_id"]: r["state"] for r in rows} == {"d": "done", "f": "failed", "p": "partial", "u": "new",
                                                       "n": "new"}

    from vivit_cli.report.store import load_runs

    runs, _ = load_runs(url)
    by_id = runs.set_index("run_id")
    assert by_id.loc["d", "status"] == "done" and by_id.loc["d", "top1"] == 0.5
    assert by_id.loc["f", "status"] == "failed" and by_id.loc["d", "mtime"] > 0


@pytest.mark.slow
def test_train_on_gs_saves_resumes_and_evaluates(gcs, tmp_path):
    from vivit_cli.runtime.checkpoint import step_dirs

    wd = f"gs://{BUCKET}/train/run"
    root = io.as_path(wd)
    args = ["train", "--preset", "smoke", *SMALL, "--workdir", wd, "--json"]
    r = run_cli(*args, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["status"] == "done" and io.read_json(root / "summary.json") == summary
    assert [d.name for d in step_dirs(root / "checkpoints")] == ["6", "3"]
    arrays = other_client().find(f"{BUCKET}/train/run/checkpoints/6/params")
    assert any("ocdbt" in a for a in arrays)  # tensorstore wrote the arrays to the bucket
    assert list(tmp_path.iterdir()) == []  # nothing landed locally (e.g. a ./gs:/ folder)

    # As a kill right after step 3's checkpoint leaves it: no summary, no step 6.
    io.rmtree(root / "checkpoints" / "6")
    (root / "summary.json").unlink()
    r = run_cli(*args, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step 3" in r.stderr and json.loads(r.stdout)["status"] == "done"
    logged = [json.loads(line)["step"] for line in (root / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert logged == [2, 4, 6]  # the resumed run's history reads as one run

    r = run_cli(*args, timeout=180, cwd=tmp_path)
    assert r.returncode == 0 and "already done" in r.stderr

    r = run_cli("eval", wd, "--json", timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["step"] == 6 and io.read_json(root / "eval.json")[out["key"]]["top1"] == out["top1"]
    assert list(tmp_path.iterdir()) == []


TPU_CELL = 'fixed({"model.init": "random", "train.warmup_steps": 1}, row=T.TUBELET_CENTRAL, column=T.APPEARANCE)'


@pytest.mark.slow
def test_sweeps_on_gs_local_and_tpu_backends_then_status_and_report(gcs, tmp_path):
    # Unique per test run: the sweep keeps a remote store's locks and logs in the local cache, keyed by URL.
    url = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}/results"
    root = io.as_path(url)

    def sweep(grid, *extra, **kw):
        return run_cli("sweep", str(grid), "--preset", "smoke", "--results", url, "--json", *extra, cwd=tmp_path,
                       **kw)

    r = sweep(write_grid(tmp_path / "gsgrid.py", RANDOM.format(row="TUBELET_RANDOM")), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert json.loads(r.stdout)["done"] == 1
    (run_dir,) = (root / "gsgrid").iterdir()
    assert io.read_json(run_dir / "summary.json")["status"] == "done"
    assert io.read_json(run_dir / "sweep.json")["last"] == "done"

    # The same cell in a second grid: copied over (no links on an object store), summary.json last.
    r = sweep(write_grid(tmp_path / "gsother.py", RANDOM.format(row="TUBELET_INFLATION")), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    shared = root / "gsother" / run_dir.name
    assert io.read_json(shared / "cell.json")["shared_from"] == f"gsgrid/{run_dir.name}"
    assert io.read_json(shared / "summary.json") == io.read_json(run_dir / "summary.json")

    # A TPU slice (tests/fake_gcloud: 2 jax.distributed processes) writing to the same bucket.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").symlink_to(FAKE_GCLOUD)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_GCLOUD_STATE": str(tmp_path / "gcloud"),
           "FAKE_GCLOUD_WORKERS": "2"}
    r = sweep(write_grid(tmp_path / "gstpu.py", TPU_CELL), "--backend", "tpu", "--backend-opt", "zone=us-central2-b",
              "--backend-opt", f"python={sys.executable}", "--backend-opt", "install=false", "--backend-opt",
              "poll=0.5", env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    (tpu_run,) = (root / "gstpu").iterdir()
    assert io.read_json(tpu_run / "summary.json")["device"].startswith("2x")  # 2 processes, one bucket

    r = run_cli("status", "--results", url, "--json", timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["counts"] == {"done": 3}
    r = run_cli("report", "--table", "embed-ablation", "--results", url, "--format", "markdown", timeout=60,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for row in ("Tubelet: random init", "Tubelet: filter inflation", "Tubelet: central frame"):
        assert row in r.stdout, r.stdout
