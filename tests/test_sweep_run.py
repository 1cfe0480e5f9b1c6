"""Sweeps that really train (smoke preset): kill -9 of the sweep and a restart, a dependency trained once,
a run shared between grids, the report finding the cells, and a TPU slice emulated by tests/fake_gcloud
(2 jax.distributed processes on localhost) that is preempted mid-run and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_GCLOUD = ROOT / "tests" / "fake_gcloud"

pytestmark = pytest.mark.slow

GRID = '''"""Test grid: one cell initialised from the image-ViT dependency, one from scratch."""
from vivit_cli.report import tables as T
from vivit_cli.sweep.grid import IMAGE_VIT, chain, fixed
TABLE = "embed-ablation"
BASE = {{"model.variant": "spatio_temporal", "data.source": "embedded:appearance"}}
def cells(base, preset):
    return chain({cells})
'''
CENTRAL = 'fixed({"model.init_from": IMAGE_VIT}, row=T.TUBELET_CENTRAL, column=T.APPEARANCE)'
RANDOM = 'fixed({{"model.init": "random"}}, row=T.{row}, column=T.APPEARANCE)'


def write_grid(path: Path, *cells: str) -> Path:
    path.write_text(GRID.format(cells=", ".join(cells)))
    return path


def sweep_argv(grid: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vivit_cli.cli.app", "sweep", str(grid), "--preset", "smoke", "--set",
            "train.steps=12", "--results", str(results), *extra]


def done(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "summary.json").read_text())["status"] == "done"
    except (OSError, ValueError, KeyError):
        return False


def steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def wait_for(predicate, timeout: float, what: str, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (rc {proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_restart_dependency_sharing_and_report(tmp_path):
    grid = write_grid(tmp_path / "killgrid.py", CENTRAL, RANDOM.format(row="TUBELET_RANDOM"))
    results = tmp_path / "results"
    plan = json.loads(subprocess.run(sweep_argv(grid, results, "--dry-run", "--json"), capture_output=True,
                                     text=True, check=True, cwd=ROOT).stdout)
    dep_id, first_id, second_id = (c["run_id"] for c in plan["cells"])
    first = results / "killgrid" / first_id

    log = open(tmp_path / "sweep1.log", "w")
    proc = subprocess.Popen(sweep_argv(grid, results), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        # Kill the sweep while the first cell (after its dependency) is mid-training, past a checkpoint.
        wait_for(lambda: any((first / "checkpoints").glob("[0-9]*")) and not done(first), 240,
                 "the first cell's first checkpoint", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert done(results / "_deps" / dep_id) and not done(first)
    # The orphaned trainer got SIGTERM from the kernel (parent death); the cell's lock is held until it exits,
    # so the restarted sweep cannot start a second writer on the same folder.
    r = subprocess.run(sweep_argv(grid, results, "--json"), capture_output=True, text=True, cwd=ROOT, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert json.loads(r.stdout)["done"] == 3

    runs = sorted(p.name for p in (results / "killgrid").iterdir())
    assert runs == sorted([first_id, second_id])  # exactly one folder per cell
    assert all(done(results / "killgrid" / r) for r in runs)
    assert sorted(p.name for p in (results / "_deps").iterdir()) == [dep_id]
    dep_record = json.loads((results / "_deps" / dep_id / "sweep.json").read_text())
    assert dep_record["attempts"] == 1  # trained once, reused
    log_text = (first / "train.log").read_text()
    assert "resumed from step" in log_text and f"_deps/{dep_id} inflated" in log_text
    s = steps(first)
    assert s == sorted(set(s)) and s[-1] == 12  # one uninterrupted history, no step logged twice
    cell = json.loads((first / "cell.json").read_text())
    assert (cell["grid"], cell["row"], cell["column"], cell["run_id"]) == ("killgrid", "Tubelet: central frame",
                                                                           "appearance", first_id)

    # A second grid with the same cell shares the done run: linked in, not trained again.
    other = write_grid(tmp_path / "othergrid.py", RANDOM.format(row="TUBELET_INFLATION"))
    t0 = time.time()
    r = subprocess.run(sweep_argv(other, results), capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert time.time() - t0 < 20
    shared = results / "othergrid" / second_id
    assert json.loads((shared / "cell.json").read_text())["shared_from"] == f"killgrid/{second_id}"
    assert (json.loads((shared / "summary.json").read_text())["top1"]
            == json.loads((results / "killgrid" / second_id / "summary.json").read_text())["top1"])
    assert not (shared / "train.log").exists()

    from vivit_cli import report

    rep = report.report("embed-ablation", results)
    assert rep.cells_done == 3  # central frame, random init and (the shared run as) filter inflation

    r = subprocess.run([sys.executable, "-m", "vivit_cli.cli.app", "status", "--results", str(results), "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert json.loads(r.stdout)["counts"] == {"done": 4}


def test_seeds_of_a_cell_train_as_one_group_and_resume_after_the_sweep_is_killed(tmp_path):
    grid = write_grid(tmp_path / "seedgrid.py", RANDOM.format(row="TUBELET_RANDOM"))
    results = tmp_path / "results"
    plan = json.loads(subprocess.run(sweep_argv(grid, results, "--seeds", "3", "--dry-run", "--json"),
                                     capture_output=True, text=True, check=True, cwd=ROOT).stdout)
    ids = [c["run_id"] for c in plan["cells"]]
    dirs = [results / "seedgrid" / i for i in ids]
    assert len(ids) == 3 and len({i.rsplit("-s", 1)[0] for i in ids}) == 1

    log = open(tmp_path / "sweep1.log", "w")
    proc = subprocess.Popen(sweep_argv(grid, results, "--seeds", "3"), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:  # kill -9 the sweep mid-group, every seed past a checkpoint
        wait_for(lambda: all(any((d / "checkpoints").glob("[0-9]*")) for d in dirs) and not done(dirs[0]), 240,
                 "every seed's first checkpoint", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert not any(done(d) for d in dirs)
    # The group's trainer (SIGTERM from the kernel at its parent's death) holds all three locks until it has saved:
    # the same command again waits for it, then resumes the group.
    r = subprocess.run(sweep_argv(grid, results, "--seeds", "3", "--json"), capture_output=True, text=True, cwd=ROOT,
                       timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert json.loads(r.stdout)["done"] == 3
    assert sorted(p.name for p in (results / "seedgrid").iterdir()) == sorted(ids)  # one folder per seed
    first_log = (dirs[0] / "train.log").read_text()
    assert "3 seeds as one program" in first_log and "resumed from step" in first_log
    for k, d in enumerate(dirs):
        s = steps(d)
        assert s == sorted(set(s)) and s[-1] == 12  # one uninterrupted history per seed
        assert json.loads((d / "cell.json").read_text())["seed"] == k
        summary = json.loads((d / "summary.json").read_text())
        assert summary["group"] == ids and (d / summary["predictions"]).is_file()
        if k:
            assert f"trained together with {ids[0]}" in (d / "train.log").read_text()
    r = subprocess.run([sys.executable, "-m", "vivit_cli.cli.app", "status", "--results", str(results), "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert json.loads(r.stdout)["counts"] == {"done": 3}


def test_tpu_slice_emulated_multi_host_preempted_and_resumed(tmp_path):
    """The real trainer on 2 jax.distributed processes per slice; the slice is lost after the first checkpoint."""
    grid = write_grid(tmp_path / "tpugrid.py", RANDOM.format(row="TUBELET_RANDOM"))
    results = tmp_path / "results"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").symlink_to(FAKE_GCLOUD)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_GCLOUD_STATE": str(tmp_path / "gcloud"), "FAKE_GCLOUD_WORKERS": "2",
           "FAKE_GCLOUD_PREEMPT_WHEN": str(results / "tpugrid" / "*" / "checkpoints" / "3")}
    r = subprocess.run(sweep_argv(grid, results, "--backend", "tpu", "--backend-opt", "zone=us-central2-b",
                                  "--backend-opt", "accelerator=v4-16", "--backend-opt", "reserved=true",
                                  "--backend-opt", f"python={sys.executable}", "--backend-opt", "install=false",
                                  "--backend-opt", "poll=0.5"),
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    (run_dir,) = (results / "tpugrid").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["device"].startswith("2x")  # 2 processes
    log = (run_dir / "train.log").read_text()
    assert "preempted (1)" in log and "resumed from step 3" in log
    s = steps(run_dir)
    assert s == sorted(set(s)) and s[-1] == 12
    calls = [json.loads(line)["argv"] for line in (tmp_path / "gcloud" / "calls.jsonl").read_text().splitlines()]
    verbs = [c[3] for c in calls if c[3] != "describe"]
    assert verbs == ["create", "scp", "ssh", "delete", "create", "scp", "ssh", "delete"], verbs
    assert "--reserved" in calls[[c[3] for c in calls].index("create")]
    assert not list((tmp_path / "gcloud" / "qr").glob("*.json"))
