"""Reports from a run store written by hand: exact cells, frames and exports."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from vivit_cli.errors import VivitError
from vivit_cli.report import aggregate, load_runs, render, report, tables
from vivit_cli.report.tables import (APPEARANCE, MODEL_1, MODEL_2, MODEL_2_AVE_POOL, MODEL_3, MODEL_4, MOTION,
                                     TUBELET_INFLATION, TUBELET_RANDOM, UNIFORM_FRAME)


def write_run(root: Path, grid: str, run_id: str, *, row, column, seed, table=None, summary=None, evals=None,
              mtime=None, raw_summary: str | None = None) -> Path:
    """One run folder as the sweep and the trainer write it; `raw_summary` writes summary.json verbatim."""
    d = root / grid / run_id
    d.mkdir(parents=True)
    cell = {"grid": grid, "table": table or grid, "cell": f"{row}/{column}", "row": row, "column": column,
            "seed": seed, "overrides": {"train.seed": seed}, "run_id": run_id}
    (d / "cell.json").write_text(json.dumps(cell))
    (d / "config.json").write_text("{}")
    if raw_summary is not None:
        (d / "summary.json").write_text(raw_summary)
    elif summary is not None:
        (d / "summary.json").write_text(json.dumps({"run_id": run_id, "steps": 600, "train_seconds": 30.0,
                                                     **summary}))
    if evals is not None:
        (d / "eval.json").write_text(json.dumps(evals))
    if mtime is not None:
        for f in d.iterdir():
            os.utime(f, (mtime, mtime))
    return d


def done(top1, gflops=0.5, params=1_000_000, ms=None, device="cpu", top5=None):
    s = {"status": "done", "top1": top1, "top5": top5 if top5 is not None else min(1.0, top1 + 0.2),
         "gflops": gflops, "params": params, "device": device}
    if ms is not None:
        s["forward_ms_per_clip"] = ms
    return s


def failed(error="RuntimeError: loss is NaN at step 12\nTraceback (most recent call last): ..."):
    return {"status": "failed", "error": error, "params": 1_000_000, "gflops": 0.5}


def make_store(root: Path) -> Path:
    """model-variants with several seeds, a partial cell (1 done + 1 failed), a half-written summary, a failed cell,
    a missing cell and a missing row; embed-ablation; and folders that hold no usable run."""
    g = "model-variants"
    for seed, acc in enumerate((0.50, 0.60, 0.70)):
        write_run(root, g, f"m1a-s{seed}", row=MODEL_1, column=APPEARANCE, seed=seed,
                  summary=done(acc, gflops=0.8, params=2_000_000, ms=4.0 + seed))
    for seed, acc in enumerate((0.40, 0.44)):
        # Motion runs have a different head and FLOPs: the table's metrics come from the appearance runs.
        write_run(root, g, f"m1m-s{seed}", row=MODEL_1, column=MOTION, seed=seed,
                  summary=done(acc, gflops=9.0, params=9_000_000, ms=99.0))
    write_run(root, g, "m2a-s0", row=MODEL_2, column=APPEARANCE, seed=0, summary=done(0.55, gflops=0.4, ms=2.0))
    write_run(root, g, "m2a-s1", row=MODEL_2, column=APPEARANCE, seed=1, summary=failed())
    write_run(root, g, "m2m-s0", row=MODEL_2, column=MOTION, seed=0, raw_summary='{"status": "done", "to')
    write_run(root, g, "m3a-s0", row=MODEL_3, column=APPEARANCE, seed=0, summary=failed("OOM"))
    # Model 3 / motion: no run at all (missing).
    write_run(root, g, "m4a-old-s0", row=MODEL_4, column=APPEARANCE, seed=0, summary=done(0.10), mtime=1_000_000)
    write_run(root, g, "m4a-s0", row=MODEL_4, column=APPEARANCE, seed=0, summary=done(0.45, gflops=0.3, ms=1.5))
    write_run(root, g, "m4m-s0", row=MODEL_4, column=MOTION, seed=0, summary=done(0.35))
    # Model 2 ave-pool baseline: no runs at all.
    (root / g / "no-cell-json").mkdir()
    (root / g / "no-cell-json" / "summary.json").write_text(json.dumps(done(0.9)))
    (root / g / "torn-cell-json").mkdir()
    (root / g / "torn-cell-json" / "cell.json").write_text('{"grid": "model-var')
    (root / g / "_pretrain").mkdir()  # the sweep's own helper folders are not runs

    e = "embed-ablation"
    for seed, acc in enumerate((0.30, 0.32)):
        write_run(root, e, f"uf-s{seed}", row=UNIFORM_FRAME, column=APPEARANCE, seed=seed, summary=done(acc))
    write_run(root, e, "rnd-s0", row=TUBELET_RANDOM, column=APPEARANCE, seed=0, summary=done(0.2))
    write_run(root, e, "inf-s0", row=TUBELET_INFLATION, column=APPEARANCE, seed=0)  # started, no summary yet
    return root


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "results")


# ---- pure helpers -----------------------------------------------------------------------------------------------


def test_seed_stats_mean_std_and_t_interval():
    st = aggregate.seed_stats([0.5, 0.6, 0.7])
    assert st["n"] == 3
    assert st["mean"] == pytest.approx(60.0)
    assert st["std"] == pytest.approx(10.0)
    assert st["ci95"] == pytest.approx(4.303 * 10.0 / math.sqrt(3))
    one = aggregate.seed_stats([0.25])
    assert one["mean"] == 25.0 and one["n"] == 1 and math.isnan(one["std"]) and math.isnan(one["ci95"])
    assert aggregate.seed_stats([])["n"] == 0
    assert aggregate.t975(1) == 12.706 and aggregate.t975(100) == 1.96


@pytest.mark.parametrize("counts,state", [((2, 0, 0), "done"), ((1, 1, 0), "partial"), ((1, 0, 2), "partial"),
                                          ((0, 1, 1), "running"), ((0, 2, 0), "failed"), ((0, 0, 0), "missing")])
def test_cell_state(counts, state):
    assert aggregate.cell_state(*counts) == state


def test_metric_columns_share_their_decimals():
    assert render.numbers([0.8, 0.3, math.nan]) == ["0.800", "0.300", "—"]
    assert render.numbers([455.2, 170.0]) == ["455.2", "170.0"] and render.numbers([455.2, 17.0])[1] == "17.00"
    assert render.numbers([0.00159, 0.0021]) == ["0.00159", "0.00210"]
    assert render.numbers([math.nan]) == ["—"]


def test_row_label_helpers():
    assert tables.temporal_layers_row(4) == "L_t=4"
    assert tables.tubelet_row("2x16x16") == "16x2"
    assert tables.row_number("L_t=12") == 12.0 and tables.row_number("16x8") == 8.0
    assert tables.row_number(MODEL_1) is None


def test_every_table_is_well_formed():
    for name, spec in tables.TABLES.items():
        assert spec.name == name and spec.rows and spec.columns
        for paper in spec.paper:
            assert set(paper.values) <= set(spec.rows) | {tables.temporal_layers_row(12)}, (name, paper.label)
        # A table either shows the paper's numbers or says why it cannot.
        assert spec.paper or spec.paper_note
    with pytest.raises(VivitError, match="unknown table 'nope'"):
        tables.get("nope")


# ---- loading ----------------------------------------------------------------------------------------------------


def test_load_runs_states_and_skips(store):
    runs, stats = load_runs(store)
    by_id = runs.set_index("run_id")
    assert by_id.loc["m1a-s1", "status"] == "done" and by_id.loc["m1a-s1", "top1"] == 0.6
    assert by_id.loc["m2a-s1", "status"] == "failed"
    assert by_id.loc["m2a-s1", "error"] == "RuntimeError: loss is NaN at step 12"  # first line only
    assert by_id.loc["m2m-s0", "status"] == "running"  # truncated summary.json
    assert by_id.loc["inf-s0", "status"] == "running"  # no summary.json yet
    assert by_id.loc["m4a-s0", "top1"] == 0.45
    assert "m4a-old-s0" not in by_id.index and stats.superseded == {"model-variants": 1}
    assert sorted(stats.no_cell) == ["model-variants/no-cell-json", "model-variants/torn-cell-json"]
    assert "_pretrain" not in " ".join(runs["path"])
    assert len(runs) == 15  # 11 model-variants runs after the superseded one, 4 embed-ablation


def test_a_table_mixing_numerics_versions_says_so(tmp_path):
    grid = "model-variants"
    write_run(tmp_path, grid, "a-s0", row=MODEL_1, column=APPEARANCE, seed=0, summary={**done(0.5), "numerics": 3})
    write_run(tmp_path, grid, "b-s0", row=MODEL_2, column=APPEARANCE, seed=0, summary={**done(0.6), "numerics": 3})
    assert not any("numerics" in n for n in report(grid, tmp_path).notes)
    write_run(tmp_path, grid, "c-s0", row=MODEL_3, column=APPEARANCE, seed=0, summary=done(0.4))  # an older run
    (note,) = [n for n in report(grid, tmp_path).notes if "numerics" in n]
    assert "(3, before 3)" in note
    assert load_runs(tmp_path)[0].set_index("run_id").loc["a-s0", "numerics"] == 3


def test_missing_results_dir_is_a_vivit_error(tmp_path):
    with pytest.raises(VivitError, match="does not exist"):
        load_runs(tmp_path / "nope")


def test_done_summary_without_top1_counts_as_failed(tmp_path):
    write_run(tmp_path, "embed-ablation", "x-s0", row=UNIFORM_FRAME, column=APPEARANCE, seed=0,
              summary={"status": "done"})
    runs, _ = load_runs(tmp_path)
    assert runs.loc[0, "status"] == "failed" and "no top1" in runs.loc[0, "error"]


@pytest.mark.parametrize("name,text", [("summary.json", ""), ("summary.json", "{\"status\": \"do"),
                                       ("summary.json", "\x00\x00\x00"), ("summary.json", "[1, 2]"),
                                       ("eval.json", "{\"val@1x1\": {\"to"), ("cell.json", "{")])
def test_half_written_files_never_crash(tmp_path, name, text):
    d = write_run(tmp_path, "embed-ablation", "x-s0", row=UNIFORM_FRAME, column=APPEARANCE, seed=0,
                  summary=done(0.4), evals={"val@1x1": {"top1": 0.4}})
    (d / name).write_bytes(text.encode("latin-1"))
    rep = report("embed-ablation", tmp_path)
    cell = rep.cells.iloc[0]
    if name == "cell.json":
        assert cell["status"] == "missing"
    elif name == "summary.json":
        assert cell["status"] == "running"
    else:
        assert cell["status"] == "done" and cell["mean"] == pytest.approx(40.0)
    for fmt in render.FORMATS:
        assert render.render(rep, fmt)


# ---- the model-variants table -----------------------------------------------------------------------------------


def expected_model_variants_frame() -> pd.DataFrame:
    nan = math.nan
    std1m = math.sqrt(((40 - 42) ** 2 + (44 - 42) ** 2) / 1)
    rows = [
        # row, appearance: mean std ci95 n failed running status, motion: same, gflops params runtime, paper x5
        (MODEL_1, 60.0, 10.0, 4.303 * 10 / math.sqrt(3), 3, 0, 0, "done",
         42.0, std1m, 12.706 * std1m / math.sqrt(2), 2, 0, 0, "done", 0.8, 2.0, 5.0, 80.0, 43.1, 455.2, 88.9, 58.9),
        (MODEL_2, 55.0, nan, nan, 1, 1, 0, "partial", nan, nan, nan, 0, 0, 1, "running", 0.4, 1.0, 2.0,
         78.8, 43.7, 284.4, 115.1, 17.4),
        (MODEL_3, nan, nan, nan, 0, 1, 0, "failed", nan, nan, nan, 0, 0, 0, "missing", nan, nan, nan,
         77.4, 39.1, 372.3, 117.3, 31.7),
        (MODEL_4, 45.0, nan, nan, 1, 0, 0, "done", 35.0, nan, nan, 1, 0, 0, "done", 0.3, 1.0, 1.5,
         76.3, 39.5, 277.1, 88.9, 22.9),
        (MODEL_2_AVE_POOL, nan, nan, nan, 0, 0, 0, "missing", nan, nan, nan, 0, 0, 0, "missing", nan, nan, nan,
         75.8, 38.8, 283.9, 86.7, 17.3),
    ]
    columns = ["row"] + [f"{c}_{k}" for c in (APPEARANCE, MOTION)
                         for k in ("mean", "std", "ci95", "n", "failed", "running", "status")]
    columns += ["gflops", "params", "runtime", "Paper K400 top-1", "Paper EK top-1", "Paper GFLOPs",
                "Paper params (M)", "Paper runtime (ms)"]
    return pd.DataFrame.from_records(rows, columns=columns)


def test_model_variants_frame_is_exact(store):
    rep = report("model-variants", store, stat="std")
    assert rep.rows == list(tables.VARIANT_ROWS) and rep.columns == [APPEARANCE, MOTION]
    pd.testing.assert_frame_equal(rep.frame, expected_model_variants_frame(), check_dtype=False, atol=1e-9)
    assert (rep.cells_done, rep.cells_total) == (4, 10)
    assert rep.devices == ["cpu"]
    assert any("1 older run(s)" in n for n in rep.notes) and any("2 run folder(s)" in n for n in rep.notes)
    # What was skipped in another table's grid is not this table's business.
    assert not any("older run" in n or "run folder" in n for n in report("embed-ablation", store).notes)
    m1 = rep.cells[(rep.cells["row"] == MODEL_1) & (rep.cells["column"] == APPEARANCE)].iloc[0]
    assert m1["seeds"] == [0, 1, 2]
    m3 = rep.cells[(rep.cells["row"] == MODEL_3) & (rep.cells["column"] == APPEARANCE)].iloc[0]
    assert m3["errors"] == ["OOM"]


def test_model_variants_display_strings(store):
    headers, body, kinds = render.header_and_rows(report("model-variants", store, stat="std"))
    assert headers == ["Model", "Appearance top-1 (%)", "Motion top-1 (%)", "GFLOPs", "Params (M)",
                       "Runtime (ms/clip, cpu)", "Paper K400 top-1", "Paper EK top-1", "Paper GFLOPs",
                       "Paper params (M)", "Paper runtime (ms)"]
    assert kinds == ["row"] + ["ours"] * 5 + ["paper"] * 5
    assert body[0] == [MODEL_1, "60.0 ± 10.0 (n=3)", "42.0 ± 2.8 (n=2)", "0.800", "2.00", "5.00", "80.0", "43.1",
                       "455.2", "88.9", "58.9"]
    assert body[1][1:3] == ["55.0 (n=1, 1 failed)", "running (1)"]
    assert body[2][1:4] == ["failed (1)", "missing", "—"]
    assert body[4][1:3] == ["missing", "missing"]
    ci = render.header_and_rows(report("model-variants", store), spread="ci95")[1]
    assert ci[0][1] == f"60.0 ± {4.303 * 10 / math.sqrt(3):.1f} (n=3)"


def test_runtime_falls_back_to_eval_throughput(tmp_path):
    write_run(tmp_path, "model-variants", "a-s0", row=MODEL_1, column=APPEARANCE, seed=0, summary=done(0.5),
              evals={"val@1x1": {"top1": 0.5, "clips_per_s": 250.0}})
    assert report("model-variants", tmp_path).frame.loc[0, "runtime"] == pytest.approx(4.0)


def test_accuracy_from_an_eval_view(tmp_path):
    write_run(tmp_path, "embed-ablation", "a-s0", row=UNIFORM_FRAME, column=APPEARANCE, seed=0, summary=done(0.5),
              evals={"val@4x3": {"top1": 0.61, "top5": 0.9}})
    write_run(tmp_path, "embed-ablation", "a-s1", row=UNIFORM_FRAME, column=APPEARANCE, seed=1, summary=done(0.5))
    rep = report("embed-ablation", tmp_path, accuracy="val@4x3")
    cell = rep.cells.iloc[0]
    # Seed 1 has no 4x3 evaluation yet: it waits as "running", it is not averaged in.
    assert (cell["mean"], cell["n"], cell["running"], cell["status"]) == (pytest.approx(61.0), 1, 1, "partial")
    assert report("embed-ablation", tmp_path, accuracy="val@4x3:top5").cells.iloc[0]["mean"] == pytest.approx(90.0)
    with pytest.raises(VivitError, match="--accuracy"):
        report("embed-ablation", tmp_path, accuracy="val")


def test_temporal_layers_order_extra_rows_and_paper_only_rows(tmp_path):
    g = "temporal-layers"
    for n, acc in ((0, 0.3), (3, 0.35), (4, 0.4)):
        write_run(tmp_path, g, f"lt{n}-s0", row=tables.temporal_layers_row(n), column=APPEARANCE, seed=0,
                  summary=done(acc))
    rep = report(g, tmp_path)
    assert rep.rows == ["L_t=0", "L_t=1", "L_t=2", "L_t=3", "L_t=4", "L_t=8"]
    assert rep.display_rows == rep.rows + ["L_t=12"]
    assert (rep.cells_done, rep.cells_total) == (3, 6)  # the paper-only row is not a missing cell
    last = rep.frame.iloc[-1]
    assert last["row"] == "L_t=12" and last["appearance_status"] == "not run" and last["Paper K400 top-1"] == 78.9
    assert render.header_and_rows(rep)[1][-1] == ["L_t=12", "—", "78.9"]


def test_tubelet_table_has_per_variant_flops_and_says_paper_numbers_are_unconfirmed(tmp_path):
    for col, gf in (("Model 1", 2.0), ("Model 2", 1.0)):
        write_run(tmp_path, "tubelet-size", f"{col[-1]}-s0", row=tables.tubelet_row("2x8x8"), column=col, seed=0,
                  summary=done(0.5, gflops=gf))
    rep = report("tubelet-size", tmp_path)
    rec = rep.frame.set_index("row").loc["8x2"]
    assert (rec["Model 1_gflops"], rec["Model 2_gflops"]) == (2.0, 1.0)
    assert math.isnan(rec["Model 3_gflops"])
    assert any("UNCONFIRMED" in n for n in render.footnotes(rep))
    assert any("no numbers" in n for n in render.footnotes(report("attention-order", tmp_path)))


def perf(clips, mfu, gib=0.5, compile_s=3.0, source="compiled"):
    return {"perf": {"train_clips_per_s": clips, "mfu": mfu, "peak_memory_bytes": gib * 2**30,
                     "compile_seconds": compile_s, "compile_source": source}}


def test_perf_columns_are_loaded_and_averaged_over_seeds(tmp_path):
    g = "model-variants"
    write_run(tmp_path, g, "m1a-s0", row=MODEL_1, column=APPEARANCE, seed=0, summary=done(0.5) | perf(100, 0.2))
    write_run(tmp_path, g, "m1a-s1", row=MODEL_1, column=APPEARANCE, seed=1,
              summary=done(0.6) | perf(300, 0.4, gib=1.5, compile_s=0.2, source="persistent cache"))
    write_run(tmp_path, g, "m1m-s0", row=MODEL_1, column=MOTION, seed=0, summary=done(0.4) | perf(9, 0.9))
    write_run(tmp_path, g, "m2a-s0", row=MODEL_2, column=APPEARANCE, seed=0, summary=done(0.5))  # an older run
    runs, _ = load_runs(tmp_path)
    by_id = runs.set_index("run_id")
    assert by_id.loc["m1a-s1", "train_clips_per_s"] == 300 and by_id.loc["m1a-s1", "peak_memory_gib"] == 1.5
    assert pd.isna(by_id.loc["m1a-s1", "compile_s"])  # a cache load is not a compile time
    assert pd.isna(by_id.loc["m2a-s0", "mfu"])

    # Without --perf the table is what it always was.
    plain = report(g, tmp_path)
    assert not set(tables.PERF_METRICS) & set(plain.frame.columns)
    assert not any(n.startswith("Perf:") for n in plain.notes)
    rep = report(g, tmp_path, perf=True)
    rec = rep.frame.set_index("row").loc[MODEL_1]
    # The table's metrics come from its appearance runs: the motion run's figures stay out.
    assert rec["train_clips_per_s"] == 200 and rec["mfu"] == pytest.approx(0.3)
    assert rec["peak_memory_gib"] == 1.0 and rec["compile_s"] == 3.0
    assert math.isnan(rep.frame.set_index("row").loc[MODEL_2, "mfu"])
    headers, body, _ = render.header_and_rows(rep)
    assert headers[-9:-5] == ["Train clips/s", "MFU", "Peak memory (GiB)", "Compile (s)"]
    assert body[0][-9:-5] == ["200.0", "0.300", "1.00", "3.00"] and body[1][-8] == "—"
    assert any(n.startswith("Perf:") and "Device: cpu." in n and "1 done run(s) have no perf block" in n
               for n in render.footnotes(rep))
    data = json.loads(render.to_json(rep))
    assert data["rows"][0]["metrics"]["mfu"] == pytest.approx(0.3) and data["metrics"]["mfu"] == "MFU"


def test_perf_columns_follow_a_per_column_table_and_warn_about_mixed_devices(tmp_path):
    for col, clips, device in (("Model 1", 10.0, "cpu"), ("Model 2", 20.0, "gpu")):
        write_run(tmp_path, "tubelet-size", f"{col[-1]}-s0", row="8x2", column=col, seed=0,
                  summary=done(0.5, device=device) | perf(clips, 0.1))
    rep = report("tubelet-size", tmp_path, perf=True)
    rec = rep.frame.set_index("row").loc["8x2"]
    assert (rec["Model 1_train_clips_per_s"], rec["Model 2_train_clips_per_s"]) == (10.0, 20.0)
    assert rec["Model 1_gflops"] == 0.5  # the table's own metrics stay first
    assert any("different devices (cpu, gpu)" in n for n in rep.notes)


def test_runs_of_other_tables_and_unknown_tables_are_kept_apart(store):
    write_run(store, "mystery", "q-s0", row="x", column=APPEARANCE, seed=0, summary=done(0.9))
    rep = report("embed-ablation", store)
    assert set(rep.runs["grid"]) == {"embed-ablation"}
    from vivit_cli.report import overview

    rows, notes = overview(store)
    by = {r["table"]: r for r in rows}
    assert (by["model-variants"]["cells_done"], by["model-variants"]["cells_total"]) == (4, 10)
    assert (by["embed-ablation"]["runs_done"], by["embed-ablation"]["runs_running"]) == (3, 1)
    assert any("mystery" in n for n in notes) and any("without a readable cell.json" in n for n in notes)


# ---- exports ----------------------------------------------------------------------------------------------------

EMBED_MARKDOWN = """\
### Input encoding (paper Table 1)

| Input encoding | Appearance top-1 (%) | Paper K400 top-1 |
|---|---:|---:|
| Uniform frame sampling | 31.0 ± 1.4 (n=2) | 78.5 |
| Tubelet: random init | 20.0 (n=1) | 73.2 |
| Tubelet: filter inflation | running (1) | 77.6 |
| Tubelet: central frame | missing | 79.2 |

- Ours: top-1 accuracy in %, mean over seeds ± sample std (n = seeds done); runs read from summary.json.
- Paper K400 top-1: Kinetics 400, ViViT-B Model 1, 32 frames (Table 1).
"""


def test_markdown_export_is_exact(tmp_path):
    root = make_store(tmp_path / "r")
    shutil.rmtree(root / "model-variants")
    assert render.to_markdown(report("embed-ablation", root, stat="std")) == EMBED_MARKDOWN


def test_csv_export_round_trips_the_frame(store):
    rep = report("model-variants", store)
    text = render.to_csv(rep)
    assert text.splitlines()[0].startswith("row,appearance_mean,appearance_std,appearance_ci95,appearance_n,")
    back = pd.read_csv(__import__("io").StringIO(text))
    pd.testing.assert_frame_equal(back, rep.frame, check_dtype=False, atol=1e-4)


def test_json_export(store):
    data = json.loads(render.to_json(report("model-variants", store, stat="std")))
    assert data["table"] == "model-variants" and data["unit"] == "percent"
    assert (data["cells_done"], data["cells_total"]) == (4, 10)
    m1 = data["rows"][0]
    assert m1["row"] == MODEL_1
    assert m1["cells"]["appearance"] == {"status": "done", "mean": 60.0, "std": pytest.approx(10.0),
                                         "ci95": pytest.approx(24.844, abs=1e-3), "n": 3, "failed": 0,
                                         "running": 0, "seeds": [0, 1, 2], "errors": []}
    assert m1["metrics"] == pytest.approx({"gflops": 0.8, "params": 2.0, "runtime": 5.0})
    assert m1["paper"]["Paper EK top-1"] == 43.1
    m3 = data["rows"][2]
    assert m3["cells"]["motion"]["status"] == "missing" and m3["cells"]["motion"]["mean"] is None
    assert m3["cells"]["appearance"]["errors"] == ["OOM"]
    assert {p["label"] for p in data["paper"]} >= {"Paper K400 top-1", "Paper runtime (ms)"}


def latex_body_ok(text: str) -> None:
    """Structure every row of the tabular must have: as many cells as the column spec declares."""
    lines = text.splitlines()
    spec = next(line for line in lines if line.startswith("\\begin{tabular}"))
    n_cols = len(spec.split("{")[2].rstrip("}"))
    body = [line for line in lines if line.endswith("\\\\") and "multicolumn" not in line]
    assert body and all(line.replace("\\&", "").count("&") == n_cols - 1 for line in body), body
    assert lines.count("\\toprule") == 1 and lines.count("\\bottomrule") == 1 and lines[-1].startswith("%")
    assert "\\end{tabular}" in lines


def test_latex_export_structure_and_escaping(store):
    text = render.to_latex(report("model-variants", store, stat="std"))
    latex_body_ok(text)
    assert "60.0 $\\pm$ 10.0 (n=3)" in text and "\\multicolumn{5}{c}{Ours} & \\multicolumn{5}{c}{Paper}" in text
    assert render.latex_escape("a_b & 50% #1") == "a\\_b \\& 50\\% \\#1"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
@pytest.mark.slow
def test_latex_compiles_as_a_table_body(store, tmp_path):
    body = tmp_path / "body.tex"
    body.write_text(render.to_latex(report("model-variants", store)) + render.to_latex(report("regularisation", store)))
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                   "\\usepackage[landscape,margin=1cm]{geometry}\n\\begin{document}\n\\begin{table}\n\\tiny\n"
                   "\\input{body.tex}\n\\end{table}\n\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_rich_table_renders_every_row(store):
    text = render.render(report("model-variants", store, stat="std"), "table")
    for row in tables.VARIANT_ROWS:
        assert row in text
    assert "4/10 cells done" in text and "60.0 ± 10.0 (n=3)" in text and "455.2" in text


def test_runs_without_a_column_label(tmp_path):
    for grid, row in (("embed-ablation", UNIFORM_FRAME), ("model-variants", MODEL_1)):
        d = write_run(tmp_path, grid, "a-s0", row=row, column=APPEARANCE, seed=0, summary=done(0.5))
        cell = json.loads((d / "cell.json").read_text())
        del cell["column"]
        (d / "cell.json").write_text(json.dumps(cell))
    assert report("embed-ablation", tmp_path).cells.iloc[0]["n"] == 1  # one column: the run belongs to it
    rep = report("model-variants", tmp_path)
    assert rep.cells["n"].sum() == 0 and any("without a `column`" in n for n in rep.notes)
