"""The report's intervals and marks on hand-written results with known answers: per-clip predictions in run folders
as the trainer writes them (predictions/<split>@<views>.npz beside summary.json), a clear difference and a tie, the
interval shrinking with more clips and more seeds, pairing, the one-seed and no-predictions cases, the exports."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_report import done, latex_body_ok, write_run
from vivit_cli.cli.app import main
from vivit_cli.report import bootstrap, render, report
from vivit_cli.report.tables import (APPEARANCE, MODEL_1, MODEL_2, MODEL_3, MOTION, TUBELET_CENTRAL, TUBELET_RANDOM,
                                     UNIFORM_FRAME)

CLASSES = 10


def hits(n: int, p: float, seed: int) -> np.ndarray:
    """n clips, a fraction p of them (exactly round(p n), at random places) right."""
    out = np.zeros(n, bool)
    out[np.random.default_rng(seed).permutation(n)[:round(p * n)]] = True
    return out


def write_predictions(run_dir: Path, correct: np.ndarray, rel: str = "predictions/val@1x1.npz") -> str:
    """The contract: index int32 [N] sorted, label int32 [N], top5 int32 [N, 5] best first."""
    n = len(correct)
    index = np.arange(n, dtype=np.int32)
    label = (index % CLASSES).astype(np.int32)  # the clip's class: the same for every run on these clips
    wrong = (label + 1) % CLASSES
    top5 = np.stack([np.where(correct, label, wrong)] + [(label + k) % CLASSES for k in (2, 3, 4, 5)], 1)
    (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir / rel, "wb") as f:
        np.savez(f, index=index, label=label, top5=top5.astype(np.int32))
    return rel


def add_run(root: Path, row: str, seed: int, correct: np.ndarray | None = None, *, grid="model-variants",
            column=APPEARANCE, top1: float | None = None, eval_videos: int | None = None) -> Path:
    """A done run; with `correct` its predictions file and summary figures follow from it."""
    top1 = float(np.mean(correct)) if correct is not None else top1
    summary = done(top1)
    if correct is not None:
        summary |= {"predictions": "predictions/val@1x1.npz", "eval_split": "val", "eval_videos": len(correct)}
    elif eval_videos is not None:
        summary |= {"eval_videos": eval_videos}
    d = write_run(root, grid, f"{''.join(ch for ch in row if ch.isalnum())}-{column}-s{seed}", row=row,
                  column=column, seed=seed, summary=summary)
    if correct is not None:
        write_predictions(d, correct)
    return d


def cell(rep, row: str, column: str = APPEARANCE) -> pd.Series:
    return rep.cells[(rep.cells["row"] == row) & (rep.cells["column"] == column)].iloc[0]


def width(c) -> float:
    return float(c["hi"] - c["lo"])


# ---- marks ---------------------------------------------------------------------------------------------------


def test_a_clear_difference_is_resolved_and_a_tie_is_not(tmp_path):
    # Three seeds each on 500 clips: model 1 ~70%, model 2 ~50% (20 points apart: resolved), model 3 ~69% (a tie).
    for seed in range(3):
        add_run(tmp_path, MODEL_1, seed, hits(500, (0.70, 0.68, 0.72)[seed], seed))
        add_run(tmp_path, MODEL_2, seed, hits(500, (0.50, 0.48, 0.52)[seed], 10 + seed))
        add_run(tmp_path, MODEL_3, seed, hits(500, (0.69, 0.67, 0.71)[seed], 20 + seed))
    rep = report("model-variants", tmp_path)
    m1, m2, m3 = (cell(rep, r) for r in (MODEL_1, MODEL_2, MODEL_3))
    assert (m1["mark"], m2["mark"], m3["mark"]) == ("best", "below", "tied")
    assert m1["mean"] == pytest.approx(70.0) and m1["lo"] < 70.0 < m1["hi"]
    assert m2["vs_best_hi"] < 0 < m3["vs_best_hi"] and m3["vs_best_lo"] < 0
    assert m2["vs_best"] == pytest.approx(-20.0) and m2["vs_ref"] == pytest.approx(-20.0)  # model 1 is both
    assert m1["method"] == "clips+seeds"
    headers, body, _ = render.header_and_rows(rep)
    assert "Δ appearance vs Model 1" in headers
    line = {b[0]: b for b in body}
    assert line[MODEL_1][1] == f"70.0 [{m1['lo']:.1f}, {m1['hi']:.1f}]*"  # all 3 seeds done: no n=
    assert line[MODEL_2][1].endswith("]") and "†" not in line[MODEL_2][1]
    assert line[MODEL_3][1].endswith("]†")
    ref_col = headers.index("Δ appearance vs Model 1")
    assert line[MODEL_1][ref_col] == "ref"
    assert line[MODEL_2][ref_col] == f"-20.0 [{m2['vs_ref_lo']:+.1f}, {m2['vs_ref_hi']:+.1f}]"
    note = render.footnotes(rep)[0]
    assert "mean over 3 seeds" in note and "hierarchical bootstrap over seeds and the 500 val clips" in note
    assert "2000 resamples" in note and "† = not distinguishable" in note and "n=k/" not in note


def test_pairing_resolves_a_difference_on_the_same_clips(tmp_path):
    """Two models right on the same 250 of 500 clips, the first also on 15 more: 3 points apart. Paired over the
    clips the difference is resolved (its noise is those 15 clips); unpaired (no predictions, binomial clips) the
    two ~2.2-point standard errors swamp it."""
    base = hits(500, 0.5, 1)
    better = base.copy()
    better[np.flatnonzero(~base)[:15]] = True
    add_run(tmp_path, MODEL_1, 0, better)
    add_run(tmp_path, MODEL_2, 0, base)
    rep = report("model-variants", tmp_path)
    m2 = cell(rep, MODEL_2)
    assert m2["vs_best"] == pytest.approx(-3.0) and m2["mark"] == "below"
    assert -5.0 < m2["vs_best_lo"] < m2["vs_best_hi"] < -1.0  # 15 flips of 500: about +-1.5 points around -3
    # The same figures without predictions: each cell's interval is as wide, but the comparison is unpaired.
    other = tmp_path / "unpaired"
    add_run(other, MODEL_1, 0, top1=float(better.mean()), eval_videos=500)
    add_run(other, MODEL_2, 0, top1=float(base.mean()), eval_videos=500)
    rep = report("model-variants", other)
    m2u = cell(rep, MODEL_2)
    assert m2u["method"] == "binomial" and m2u["mark"] == "tied"
    assert width(m2u) == pytest.approx(width(m2), rel=0.2)
    assert m2u["vs_best_lo"] < -8.0 and m2u["vs_best_hi"] > 2.0


# ---- interval widths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [200, 2000])
def test_one_seed_interval_is_the_clip_sampling_and_agrees_with_scipy(tmp_path, n):
    scipy_stats = pytest.importorskip("scipy.stats")
    correct = hits(n, 0.5, 3)
    add_run(tmp_path, UNIFORM_FRAME, 0, correct, grid="embed-ablation")
    rep = report("embed-ablation", tmp_path)
    c = cell(rep, UNIFORM_FRAME)
    # The binomial standard error of 50% on n clips, in points: 95% width = 2 x 1.96 x sqrt(0.25 / n).
    assert width(c) == pytest.approx(2 * 1.96 * 100 * math.sqrt(0.25 / n), rel=0.1)
    ref = scipy_stats.bootstrap((correct.astype(float),), np.mean, n_resamples=4000, method="percentile",
                                rng=np.random.default_rng(0)).confidence_interval
    assert c["lo"] == pytest.approx(100 * ref.low, abs=0.6) and c["hi"] == pytest.approx(100 * ref.high, abs=0.6)
    note = render.footnotes(rep)[0]
    assert "one seed" in note and f"sampling of the {n} val clips only" in note
    assert "seed-to-seed variation is not in it" in note
    assert c["method"] == "clips" and c["mark"] == "best"


def test_the_interval_shrinks_with_more_clips(tmp_path):
    widths = {}
    for n in (200, 2000):
        root = tmp_path / str(n)
        for seed in range(3):
            add_run(root, TUBELET_CENTRAL, seed, hits(n, (0.6, 0.62, 0.58)[seed], seed), grid="embed-ablation")
        widths[n] = width(cell(report("embed-ablation", root), TUBELET_CENTRAL))
    assert widths[2000] < 0.6 * widths[200]


def test_the_interval_shrinks_with_more_seeds(tmp_path):
    """Seeds at 55% and 65% in turn on 2000 clips: the seed-to-seed spread dominates, and averages out with more."""
    widths = {}
    for k in (2, 8):
        root = tmp_path / str(k)
        for seed in range(k):
            add_run(root, TUBELET_CENTRAL, seed, hits(2000, (0.55, 0.65)[seed % 2], seed), grid="embed-ablation")
        rep = report("embed-ablation", root)
        assert cell(rep, TUBELET_CENTRAL)["mean"] == pytest.approx(60.0)
        widths[k] = width(cell(rep, TUBELET_CENTRAL))
    assert widths[8] < 0.7 * widths[2]


def test_reports_are_reproducible_digit_for_digit(tmp_path):
    for seed in range(2):
        add_run(tmp_path, MODEL_1, seed, hits(300, 0.6, seed))
        add_run(tmp_path, MODEL_2, seed, hits(300, 0.55, 5 + seed))
    assert render.to_json(report("model-variants", tmp_path)) == render.to_json(report("model-variants", tmp_path))
    # Another table in the store does not move this one's draws.
    first = render.to_csv(report("model-variants", tmp_path))
    add_run(tmp_path, UNIFORM_FRAME, 0, hits(300, 0.4, 9), grid="embed-ablation")
    assert render.to_csv(report("model-variants", tmp_path)) == first


# ---- runs without predictions, seeds short of the table's ----------------------------------------------------


def test_runs_without_predictions_fall_back_to_binomial_clips_and_say_so(tmp_path):
    add_run(tmp_path, UNIFORM_FRAME, 0, top1=0.6, eval_videos=500, grid="embed-ablation")
    add_run(tmp_path, TUBELET_RANDOM, 0, top1=0.5, grid="embed-ablation")  # no clip count either: the bare mean
    rep = report("embed-ablation", tmp_path)
    uf, rnd = cell(rep, UNIFORM_FRAME), cell(rep, TUBELET_RANDOM)
    assert uf["method"] == "binomial"
    assert width(uf) == pytest.approx(2 * 1.96 * 100 * math.sqrt(0.24 / 500), rel=0.12)
    assert rnd["method"] == "none" and math.isnan(rnd["lo"])
    body = {b[0]: b for b in render.header_and_rows(rep)[1]}
    assert body[TUBELET_RANDOM][1] == "50.0"  # below the best, resolved by the best's clip noise alone
    notes = render.footnotes(rep)
    assert any("2 run(s) have no per-clip predictions" in n and "binomial" in n and "unpaired" in n for n in notes)
    assert any("the bare mean" in n for n in notes)


def test_predictions_that_do_not_give_the_reported_figure_are_not_used(tmp_path):
    d = add_run(tmp_path, UNIFORM_FRAME, 0, hits(400, 0.5, 0), grid="embed-ablation")
    summary = json.loads((d / "summary.json").read_text())
    (d / "summary.json").write_text(json.dumps(summary | {"top1": 0.6}))  # e.g. a file of another evaluation
    rep = report("embed-ablation", tmp_path)
    c = cell(rep, UNIFORM_FRAME)
    assert c["mean"] == pytest.approx(60.0) and c["method"] == "binomial"
    assert any("do not give their reported figure" in n for n in render.footnotes(rep))


def test_torn_or_malformed_predictions_count_as_none(tmp_path):
    d = add_run(tmp_path, UNIFORM_FRAME, 0, hits(400, 0.5, 0), grid="embed-ablation")
    for text in (b"PK\x03\x04 half a zip", b""):
        (d / "predictions" / "val@1x1.npz").write_bytes(text)
        assert cell(report("embed-ablation", tmp_path), UNIFORM_FRAME)["method"] == "binomial"
    with open(d / "predictions" / "val@1x1.npz", "wb") as f:
        np.savez(f, index=np.array([2, 1, 3]), label=np.zeros(3, int), top5=np.zeros((3, 1), int))  # unsorted
    assert cell(report("embed-ablation", tmp_path), UNIFORM_FRAME)["method"] == "binomial"


def test_cells_with_fewer_seeds_than_the_table_say_n(tmp_path):
    for seed in range(3):
        add_run(tmp_path, MODEL_1, seed, hits(300, 0.6, seed))
    for seed in range(2):
        add_run(tmp_path, MODEL_2, seed, hits(300, 0.5, 7 + seed))
    write_run(tmp_path, "model-variants", "m2-failed-s2", row=MODEL_2, column=APPEARANCE, seed=2,
              summary={"status": "failed", "error": "loss is NaN at step 40"})
    rep = report("model-variants", tmp_path)
    assert rep.seeds_planned == 3
    body = {b[0]: b for b in render.header_and_rows(rep)[1]}
    assert "(n=" not in body[MODEL_1][1]
    assert body[MODEL_2][1].endswith("(n=2/3, 1 failed)")
    assert cell(rep, MODEL_2)["mean"] == pytest.approx(50.0)  # the two done seeds, and the cell says it is two
    assert "mean over 3 seeds (n=k/3 where fewer are done)" in render.footnotes(rep)[0]


# ---- accuracies from eval.json, mean class accuracy ----------------------------------------------------------


def test_an_eval_view_uses_its_own_predictions(tmp_path):
    correct = hits(300, 0.7, 2)
    d = add_run(tmp_path, UNIFORM_FRAME, 0, hits(300, 0.5, 1), grid="embed-ablation")
    rel = write_predictions(d, correct, "predictions/val@4x3.npz")
    (d / "eval.json").write_text(json.dumps({"val@4x3": {"top1": float(correct.mean()), "top5": float(correct.mean()),
                                                         "videos": 300, "predictions": rel}}))
    rep = report("embed-ablation", tmp_path, accuracy="val@4x3")
    c = cell(rep, UNIFORM_FRAME)
    assert c["mean"] == pytest.approx(70.0) and c["method"] == "clips" and rep.split == "val"
    assert report("embed-ablation", tmp_path, accuracy="val@4x3:top5").cells.iloc[0]["method"] == "clips"
    # Mean class accuracy (the classes are index % 10) is recomputed per resample from the file's hits and labels.
    mca = bootstrap.accuracy_of(correct, (np.arange(300) % CLASSES))
    (d / "eval.json").write_text(json.dumps({"val@4x3": {"top1": float(correct.mean()), "top5": 1.0, "videos": 300,
                                                         "mean_class_accuracy": mca, "predictions": rel}}))
    c = report("embed-ablation", tmp_path, accuracy="val@4x3:mean_class_accuracy").cells.iloc[0]
    assert c["method"] == "clips" and c["mean"] == pytest.approx(100 * mca) and c["lo"] < c["mean"] < c["hi"]


def test_bootstrap_column_directly():
    n = 400
    index = np.arange(n)
    ev = {r: [bootstrap.Evaluation(float(h.mean()), index=index, correct=h)]
          for r, h in (("a", hits(n, 0.8, 0)), ("b", hits(n, 0.4, 1)))}
    col = bootstrap.column(ev, key="k", reference="b")
    assert col.best == "a" and col.marks == {"a": "best", "b": "below"}
    assert col.vs_reference["a"].mean == pytest.approx(40.0) and col.vs_reference["a"].lo > 30
    assert bootstrap.column({}, key="k").best is None
    # Runs on partly different clips are scored on the clips each has (a union of indices).
    part = bootstrap.Evaluation(0.5, index=np.arange(100, 300), correct=hits(200, 0.5, 4))
    col = bootstrap.column({"a": ev["a"], "c": [part]}, key="k")
    assert col.cells["c"].lo < 50 < col.cells["c"].hi and col.clips == [200, 400]


# ---- exports -------------------------------------------------------------------------------------------------


@pytest.fixture
def two_rows(tmp_path):
    for seed in range(2):
        add_run(tmp_path, MODEL_1, seed, hits(300, 0.7, seed))
        add_run(tmp_path, MODEL_2, seed, hits(300, 0.45, 3 + seed))
        add_run(tmp_path, MODEL_1, seed, hits(300, 0.4, 6 + seed), column=MOTION)
        add_run(tmp_path, MODEL_2, seed, hits(300, 0.41, 9 + seed), column=MOTION)
    return tmp_path


def test_exports_carry_intervals_marks_and_differences(two_rows):
    rep = report("model-variants", two_rows)
    m2 = cell(rep, MODEL_2, MOTION)
    assert m2["mark"] == "best" and cell(rep, MODEL_1, MOTION)["mark"] == "tied"

    csv = pd.read_csv(io.StringIO(render.to_csv(rep)))
    for key in ("lo", "hi", "mark", "vs_best", "vs_ref", "vs_ref_lo", "vs_ref_hi", "method"):
        assert f"appearance_{key}" in csv.columns and f"motion_{key}" in csv.columns
    pd.testing.assert_frame_equal(csv, rep.frame, check_dtype=False, atol=1e-4)

    data = json.loads(render.to_json(rep))
    assert data["spread"] == "ci" and data["marks"]["†"].startswith("not distinguishable")
    assert data["reference"] == MODEL_1 and data["seeds_planned"] == 2 and data["clips"] == [300]
    assert data["method"].startswith("Ours: top-1 accuracy in %, mean over 2 seeds")
    row2 = next(r for r in data["rows"] if r["row"] == MODEL_2)
    mot = row2["cells"]["motion"]
    assert mot["mark"] == "best" and mot["method"] == "clips+seeds"
    assert mot["interval"] == [pytest.approx(m2["lo"]), pytest.approx(m2["hi"])]
    assert row2["cells"]["appearance"]["vs_reference"]["mean"] == pytest.approx(-25.0)
    assert row2["cells"]["appearance"]["mark"] == "below"

    md = render.to_markdown(rep)
    assert "| Δ appearance vs Model 1 | Δ motion vs Model 1 |" in md and "]†" in md and "]*" in md
    assert "- Δ vs Model 1: the row's mean minus that of 'Model 1: Spatio-temporal'" in md

    tex = render.to_latex(rep)
    latex_body_ok(tex)
    assert "\\dag{}" in tex and "$\\Delta$ appearance vs Model 1" in tex

    text = render.render(rep, "table")
    assert "70.0 [" in text and "+1.0 [" in text and "88.9" in text  # nothing cropped: the paper's last columns
    flat = " ".join(text.split())  # the caption wraps at the table's width
    assert "[lo, hi] = 95% interval" in flat and "Δ vs Model 1:" in flat


def test_stat_std_keeps_the_old_table(two_rows):
    std = report("model-variants", two_rows, stat="std")
    assert "appearance_lo" not in std.frame.columns
    body = render.header_and_rows(std)[1]
    assert body[0][1].startswith("70.0 ± ") and body[0][1].endswith("(n=2)")
    assert "Δ" not in "".join(render.header_and_rows(std)[0])
    with pytest.raises(Exception, match="stat='ci'"):
        render.header_and_rows(std, spread="ci")


def test_cli_stat_option(two_rows, capsys):
    assert main(["report", "-t", "model-variants", "--results", str(two_rows), "-f", "markdown"]) == 0
    assert "]*" in capsys.readouterr().out
    for flag in ("--stat", "--spread"):
        assert main(["report", "-t", "model-variants", "--results", str(two_rows), "-f", "markdown", flag,
                     "std"]) == 0
        out = capsys.readouterr().out
        assert "(n=2)" in out and "[" not in out.split("\n- ")[0]
    assert main(["report", "-t", "model-variants", "--results", str(two_rows), "--stat", "iqr"]) == 2
    assert "--stat/--spread 'iqr'" in capsys.readouterr().err


@pytest.mark.slow
def test_plot_draws_the_intervals(two_rows, tmp_path, capsys):
    from vivit_cli.report import plot as plot_mod

    rep = report("model-variants", two_rows)
    series = {r: (m, e) for r, m, e in plot_mod._series(rep, APPEARANCE)}
    c = cell(rep, MODEL_1)
    assert series[MODEL_1][1] == (pytest.approx(c["mean"] - c["lo"]), pytest.approx(c["hi"] - c["mean"]))
    for name, stat in (("model-variants", "ci"), ("model-variants", "std")):
        png = tmp_path / f"{name}-{stat}.png"
        assert main(["report", "-t", name, "--results", str(two_rows), "-f", "csv", "--stat", stat,
                     "--plot", str(png)]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()


def test_intervals_import_neither_jax_nor_scipy(tmp_path):
    """The bootstrap is numpy: `import scipy.stats` alone takes about a second, and the report must answer fast."""
    import subprocess
    import sys

    for seed in range(3):
        add_run(tmp_path, MODEL_1, seed, hits(2000, 0.6, seed))
        add_run(tmp_path, MODEL_2, seed, hits(2000, 0.5, 5 + seed))
    root = Path(__file__).resolve().parents[1]
    code = ("import json, sys; from vivit_cli.cli.app import main; "
            f"rc = main(['report', '--results', {str(tmp_path)!r}, '-t', 'model-variants', '-f', 'json']); "
            "heavy = [m for m in ('jax', 'scipy', 'matplotlib', 'tensorflow', 'pandas') if m in sys.modules]; "
            "sys.stderr.write(json.dumps([rc, heavy]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)
    rc, heavy = json.loads(proc.stderr.strip().splitlines()[-1])
    assert rc == 0 and heavy == [], proc.stderr
    data = json.loads(proc.stdout)
    assert data["rows"][0]["cells"]["appearance"]["method"] == "clips+seeds" and data["clips"] == [2000]
