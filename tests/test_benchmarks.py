"""The benchmark scripts run end to end (tiny configs): the GPU check is run rarely and on borrowed time, so a
broken script must show up here, not on the GPU machine."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_writes_its_report(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path),
                        "--budget", "1", "--big-batch", "0", "--repeats", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    payload = json.loads((tmp_path / "gpu_check.json").read_text())
    assert payload["peaks"]["bfloat16"] > 0 and payload["environment"]["backend"] == "cpu"
    first = payload["results"][0]
    assert first["name"] == "ViViT-B model 1" and first["metrics"]["train_clips_per_s"] > 0
    # A spent budget skips the rest but never the headline item: the CI of 2026-12-03 failed on a slowed host
    # whose peaks and probe used up a 45 s budget, leaving a report with no figure.
    assert len(payload["results"]) == 1 and "ViViT-S train" in payload["skipped"]
    probe = {row["case"]: row for row in payload["attention_probe"]}
    assert "error" not in probe["attention grad"] and "refusals" in probe["fall-backs recorded"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "ViViT-B model 1 training MFU at batch" in md and "cuDNN fused-attention probe" in md


@pytest.mark.slow
def test_vs_pytorch_runs_both_sides_in_both_precisions(tmp_path):
    # Each precision once and each device count once: a third case (float32 on one device) only repeated paths
    # these two take, at 17 s of the suite.
    for precision, devices in (("bfloat16", 1), ("float32", 2)):
        out = tmp_path / f"{precision}_{devices}.json"
        r = subprocess.run([sys.executable, "benchmarks/vs_pytorch.py", "--sizes", "tiny", "--rounds", "1",
                            "--block-seconds", "0.2", "--no-vivit-b", "--no-write", "--precision", precision,
                            "--cpu-devices", str(devices), "--json", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        (size,) = json.loads(out.read_text())["sizes"]
        assert size["precision"] == precision and size["ours_devices"] == devices
        assert size["median"]["ours_clips_per_s"] > 0 and size["median"]["torch_clips_per_s"] > 0
        assert f"{precision} peak GFLOP/s" in r.stdout


def test_bench_cli_times_the_commands_that_compute_nothing_and_sees_no_heavy_import(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/bench_cli.py", "--rounds", "1", "--results", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines() if line.startswith("| `vivit ")]
    assert {row[0].strip() for row in rows} >= {"`vivit report`", "`vivit status`", "`vivit sweep --list`"}
    for command, _tree, median, _max, heavy, codes in rows:
        assert float(median) > 0 and heavy.strip() == "none" and codes.strip() == "0", (command, heavy, codes)
