"""Behaviour of the bench core on tiny configs: the keys users and sweeps read, sane values, and MFU computed
from the measured quantities (never timing assertions: the CPU is shared)."""

import json
import math

import pytest

from vivit_cli import config
from vivit_cli.bench import core, peak
from vivit_cli.runtime import timing
from vivit_cli.errors import VivitError

TINY = ["model.hidden=32", "model.layers=1", "model.heads=2", "model.mlp=64", "data.frames=4", "data.crop=16",
        "model.tubelet=2x8x8", "model.temporal_layers=1"]
# A fixed peak keeps these tests fast and makes MFU checkable; one test measures the real thing.
PEAKS = {"float32": 1e11, "bfloat16": 2e11}


def test_time_calls_median_and_samples():
    calls = []

    def fn():
        import jax.numpy as jnp

        calls.append(1)
        return jnp.ones(3)

    t = timing.time_calls(fn, warmup=2, repeats=3, inner=2)
    assert len(calls) == 2 + 3 * 2
    assert len(t["samples_s"]) == 3
    assert t["min_s"] <= t["median_s"] <= t["max_s"]
    with pytest.raises(ValueError):
        timing.time_calls(fn, repeats=0)


def test_time_stateful_threads_the_state():
    seen = []

    def step(s):
        seen.append(s)
        return s + 1, s

    t, final = timing.time_stateful(step, 0, warmup=1, repeats=2, inner=3)
    assert final == 1 + 2 * 3 and seen == list(range(7))
    assert len(t["samples_s"]) == 2


def test_matmul_peak_is_measured_and_plausible():
    p = peak.measure_peaks(n=256, repeats=2)
    for dtype in ("float32", "bfloat16"):
        assert 1e8 < p[dtype] < 1e15, (dtype, p[dtype])
    # bf16 is the better of bf16 -> bf16 and bf16 -> f32 accumulation.
    bf = [d["flops_per_s"] for d in p["details"] if d["dtype"] == "bfloat16"]
    assert len(bf) == 2 and p["bfloat16"] == max(bf)
    d = p["details"][0]
    assert d["n"] == 256 and math.isclose(d["flops_per_s"], 2 * 256**3 / d["median_s"])


def test_mfu_definition():
    assert core.mfu(10.0, 3e9, 1e11) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        core.mfu(1.0, 1.0, 0.0)


@pytest.mark.parametrize("variant", [
    "spatio_temporal", "factorised_dot_product",
    pytest.param("factorised_encoder", marks=pytest.mark.slow),
    pytest.param("factorised_self_attention", marks=pytest.mark.slow)])
def test_run_reports_every_key_with_consistent_values(variant):
    cfg = config.build(TINY + [f"model.variant={variant}"])
    r = core.run(cfg, batch_size=2, num_classes=5, repeats=2, warmup=1, peaks=PEAKS)
    for key in ("train_clips_per_s", "forward_ms_per_clip", "model_flops_per_clip", "peak_flops", "mfu", "device",
                "compile_seconds", "peak_memory_bytes", "achieved_flops", "train_step_ms"):
        assert r[key] is not None, key
    json.dumps(r)  # JSON-able as `vivit bench --json` prints it
    assert r["variant"] == variant and r["batch_size"] == 2 and r["tokens"] == 2 * 2 * 2
    assert r["train_clips_per_s"] > 0 and r["forward_ms_per_clip"] > 0 and r["compile_seconds"] > 0
    assert r["peak_memory_bytes"] > 0
    assert r["train_loss_finite"]
    # The derived figures come from the measured ones.
    assert r["train_clips_per_s"] == pytest.approx(2 / (r["train_step_ms"] / 1e3))
    assert r["peak_flops"] == PEAKS["float32"] * r["device_count"]
    assert r["achieved_flops"] == pytest.approx(r["train_clips_per_s"] * 3 * r["model_flops_per_clip"])
    assert r["mfu"] == pytest.approx(r["achieved_flops"] / r["peak_flops"])
    assert r["forward_mfu"] == pytest.approx(r["model_flops_per_clip"] / (r["forward_ms_per_clip"] / 1e3)
                                             / r["peak_flops"])
    # Model FLOPs are the analytic count of what the model runs, as `vivit describe` gives it (2 x GMACs).
    from vivit_cli import models

    assert r["model_flops_per_clip"] == pytest.approx(2e9 * models.describe(cfg, 5)["gflops_executed"], rel=1e-3)
    # XLA's own count of the train step is the same order as 3x forward x batch (it also counts softmax etc.).
    xla = r["xla_train_flops_per_step"]
    if xla:
        assert 0.5 < xla / (3 * r["model_flops_per_clip"] * 2) < 4


def test_bfloat16_uses_the_bf16_peak_and_forward_only_mode():
    cfg = config.build(TINY + ["train.precision=bfloat16"])
    r = core.run(cfg, batch_size=2, num_classes=5, repeats=1, warmup=1, peaks=PEAKS, train=False)
    assert r["peak_flops_dtype"] == "bfloat16" and r["peak_flops"] == PEAKS["bfloat16"]
    assert r["train_clips_per_s"] is None and r["mfu"] is None
    assert r["forward_ms_per_clip"] > 0 and r["peak_memory_bytes"] > 0
    assert r["attention"] == "bf16 products, f32 softmax (CPU bf16 mode)"


def test_crop_on_device_times_the_step_on_uint8_windows():
    """With data.crop_on_device the timed step is fed what the trainer feeds it: windows and geometry, no clips."""
    import numpy as np

    from vivit_cli.train import device_crop

    cfg = config.build(TINY + ["data.crop_on_device=true"])
    p = core.prepare(cfg, batch_size=2, num_classes=5)
    w, g = np.asarray(p.data["window"]), np.asarray(p.data["geometry"])
    assert w.dtype == np.uint8 and w.shape[:2] == (2, 4) and w.shape[2] > 16 and g.shape == (2, 7)
    clips = np.asarray(device_crop.crop_batch(w, g, 16))  # the trainer's own draws: crops inside the window
    assert clips.shape == (2, 4, 16, 16, 3) and -1 <= clips.min() < clips.max() <= 1 and clips.std() > 0.3
    step = p.train_step()
    assert set(p._train_data) == {"window", "geometry", "label"}
    state, metrics = step(p.train_state())
    assert np.isfinite(float(metrics["loss"]))
    r = core.run(cfg, batch_size=2, num_classes=5, repeats=1, warmup=1, peaks=PEAKS, forward=False)
    assert r["train_loss_finite"] and r["data"].endswith("uint8 windows cropped in the step")


def test_attention_path_reports_a_cudnn_refusal(monkeypatch):
    from vivit_cli.models import attention

    cfg = config.build(TINY + ["train.precision=bfloat16"])
    import jax

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # the choice is made from the backend's name
    monkeypatch.setattr(attention, "cudnn_refusal", lambda *a: "(2, 65, 2, 48) bfloat16: NotImplementedError: odd")
    with pytest.warns(UserWarning, match="cuDNN attention refused"):
        assert core.attention_path(cfg).startswith("XLA: cuDNN refused (2, 65, 2, 48)")
    monkeypatch.setattr(attention, "cudnn_refusal", lambda *a: None)
    assert core.attention_path(cfg) == "cuDNN fused (flash) attention"


def test_bad_input_is_a_vivit_error():
    cfg = config.build(TINY)
    with pytest.raises(VivitError):
        core.run(cfg, batch_size=0, peaks=PEAKS)
    with pytest.raises(VivitError):
        core.run(cfg, train=False, forward=False, peaks=PEAKS)


@pytest.mark.slow
def test_cli_json(cli):
    res = cli("bench", *sum((["--set", s] for s in TINY), []), "--batch-size", "2", "--repeats", "1",
              "--peak-size", "128", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    for key in ("train_clips_per_s", "forward_ms_per_clip", "model_flops_per_clip", "peak_flops", "mfu", "device"):
        assert key in r
    assert r["peak_flops"] == pytest.approx(r["peak_flops_f32"])
    assert r["mfu"] == pytest.approx(r["train_clips_per_s"] * 3 * r["model_flops_per_clip"] / r["peak_flops"])


@pytest.mark.slow
def test_cli_splits_the_batch_over_cpu_devices(cli):
    res = cli("bench", *sum((["--set", s] for s in TINY), []), "--batch-size", "4", "--repeats", "2",
              "--peak-size", "128", "--cpu-devices", "2", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["device_count"] == 2 and r["device"].startswith("2x cpu")
    # One process's devices share its cores: the peak is one process's, not twice it.
    assert r["peak_flops"] == pytest.approx(r["peak_flops_f32"])
    assert r["train_clips_per_s"] > 0 and r["forward_ms_per_clip"] > 0
    res = cli("bench", *sum((["--set", s] for s in TINY), []), "--batch-size", "3", "--cpu-devices", "2")
    assert res.returncode == 2 and "divisible" in res.stderr and "Traceback" not in res.stderr


def test_cli_rejects_bad_options(cli):
    res = cli("bench", "--mode", "sideways")
    assert res.returncode == 2 and "--mode" in res.stderr and "Traceback" not in res.stderr
    res = cli("bench", "--batch-size", "0")
    assert res.returncode == 2 and "--batch-size" in res.stderr
    res = cli("bench", "--cpu-devices", "0")
    assert res.returncode == 2 and "--cpu-devices" in res.stderr


def test_xla_cpu_defaults_respect_the_user():
    from vivit_cli.runtime import cpu as xla_flags

    if not (xla_flags._installed("jaxlib") or "").startswith(xla_flags.MEASURED_JAXLIB):
        pytest.skip("flags are only applied on the jaxlib series they were measured on")
    assert xla_flags.cpu_flags_to_add({}) == ["--xla_cpu_experimental_ynn_fusion_type=-reduce"]
    assert xla_flags.cpu_flags_to_add({"VIVIT_XLA_DEFAULTS": "0"}) == []
    assert xla_flags.cpu_flags_to_add({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+dot"}) == []
    # The CLI entry applies them before a command starts JAX; importing the package sets nothing.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    probe = ("import os, vivit_cli, vivit_cli.cli.app as app; before = os.environ.get('XLA_FLAGS'); "
             "app.main(['--help']); print(before, '|', os.environ.get('XLA_FLAGS'))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    before, after = out.stdout.strip().splitlines()[-1].split(" | ")
    assert before == "None" and "xla_cpu_experimental_ynn_fusion_type=-reduce" in after


def test_median_step_seconds_weighs_intervals_by_their_steps():
    assert timing.median_step_seconds([]) is None and timing.median_step_seconds([(0, 1.0)]) is None
    # 9 steps at 0.1 s and one slow interval of 1 step: the median step is a fast one.
    assert timing.median_step_seconds([(9, 0.9), (1, 5.0)]) == pytest.approx(0.1)
    assert timing.median_step_seconds([(1, 0.1), (1, 0.3)]) == pytest.approx(0.2)


def test_devices_peak_counts_a_cpu_process_once():
    class Dev:
        def __init__(self, platform, process_index=0):
            self.platform, self.process_index = platform, process_index

    # Fake CPU devices share one process's cores; accelerators add up.
    assert core.devices_peak(1e11, [Dev("cpu")] * 8) == 1e11
    assert core.devices_peak(1e11, [Dev("cpu", 0), Dev("cpu", 0), Dev("cpu", 1), Dev("cpu", 1)]) == 2e11
    assert core.devices_peak(1e14, [Dev("gpu")] * 4) == 4e14


def test_best_peak_keeps_the_best_figure_per_key_and_never_a_lower_one(tmp_path, monkeypatch):
    measured = []

    def fake_measure(*, n, repeats, dtypes, device):
        measured.append(next(figures))
        return {dtypes[0]: measured[-1]}

    def new_process():
        monkeypatch.setattr(peak, "_memo", {})

    monkeypatch.setattr(peak, "measure_peaks", fake_measure)
    monkeypatch.setattr(peak, "REUSE_S", 0.0)  # every new process measures (the reuse: the next test)
    figures = iter([1e11, 2e11, 5e10, 7e10, 3e10, 4e10, 9e10])
    new_process()
    first = peak.best_peak("float32", n=64, cache_dir=tmp_path)
    assert first["flops_per_s"] == 1e11 and first["source"] == "measured by this process"
    assert peak.best_peak("float32", n=64, cache_dir=tmp_path)["flops_per_s"] == 1e11 and len(measured) == 1
    new_process()  # a faster measurement replaces the kept one
    assert peak.best_peak("float32", n=64, cache_dir=tmp_path)["flops_per_s"] == 2e11
    new_process()  # a slower one (a loaded machine) is raised to the kept best, and says so
    slow = peak.best_peak("float32", n=64, cache_dir=tmp_path)
    assert (slow["flops_per_s"], slow["measured_flops_per_s"]) == (2e11, 5e10) and "best kept" in slow["source"]
    # Another dtype, matmul size or XLA_FLAGS is another figure: nothing kept for it yet.
    assert peak.best_peak("bfloat16", n=64, cache_dir=tmp_path)["flops_per_s"] == 7e10
    assert peak.best_peak("float32", n=128, cache_dir=tmp_path)["flops_per_s"] == 3e10
    with monkeypatch.context() as m:
        m.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
        assert peak.best_peak("float32", n=64, cache_dir=tmp_path)["flops_per_s"] == 4e10
    # An expired, torn or foreign entry is ignored (and replaced).
    new_process()
    for f in tmp_path.iterdir():
        f.write_text('{"flops_per_s": 1e20')
    assert peak.best_peak("float32", n=64, cache_dir=tmp_path)["flops_per_s"] == 9e10 and len(measured) == 7
    new_process()
    monkeypatch.setattr(peak, "measure_peaks", lambda **kw: {"float32": 1e9})
    assert peak.best_peak("float32", n=64, cache_dir=tmp_path, max_age_s=0)["flops_per_s"] == 1e9


def test_best_peak_is_not_measured_again_within_the_reuse_window(tmp_path, monkeypatch):
    measured = []

    def fake_measure(*, n, repeats, dtypes, device):
        measured.append(next(figures))
        return {dtypes[0]: measured[-1]}

    figures = iter([1e11, 5e10, 3e11])
    monkeypatch.setattr(peak, "measure_peaks", fake_measure)
    monkeypatch.setattr(peak, "_memo", {})
    assert peak.best_peak("float32", n=64, cache_dir=tmp_path)["source"] == "measured by this process"
    # A second process within the window takes the kept figure and measures nothing.
    monkeypatch.setattr(peak, "_memo", {})
    reused = peak.best_peak("float32", n=64, cache_dir=tmp_path)
    assert (reused["flops_per_s"], reused["measured_flops_per_s"], len(measured)) == (1e11, None, 1)
    assert "not measured by this run (at most every 10 min)" in reused["source"]
    # Past the window it measures again: a lower figure keeps the best but counts as a check of the machine ...
    monkeypatch.setattr(peak, "_memo", {})
    low = peak.best_peak("float32", n=64, cache_dir=tmp_path, reuse_s=0)
    assert (low["flops_per_s"], low["measured_flops_per_s"]) == (1e11, 5e10)
    monkeypatch.setattr(peak, "_memo", {})
    assert peak.best_peak("float32", n=64, cache_dir=tmp_path)["measured_flops_per_s"] is None and len(measured) == 2
    # ... and a machine that sped up is seen at the next check.
    monkeypatch.setattr(peak, "_memo", {})
    assert peak.best_peak("float32", n=64, cache_dir=tmp_path, reuse_s=0)["flops_per_s"] == 3e11
