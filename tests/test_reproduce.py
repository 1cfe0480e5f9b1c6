"""The README's main job, end to end at the smoke scale: both sweeps, then both tables beside the paper's."""

import json

import pytest

from vivit_cli.report import tables


@pytest.mark.slow
def test_reproduce_runs_both_grids_and_prints_both_tables(cli, tmp_path):
    results = tmp_path / "results"
    out = tmp_path / "TABLES.md"
    r = cli("reproduce", "--preset", "smoke", "--results", str(results), "--format", "markdown", "--out", str(out),
            timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    for row in tables.EMBED_ROWS + tables.VARIANT_ROWS:
        assert row in text, row
    assert "79.2" in text and "455.2" in text  # the paper's numbers sit beside ours
    assert "missing" not in text and "failed" not in text
    assert "MFU" not in text  # the paper's columns only; `vivit report --perf` adds the perf ones
    # Every cell of both grids ran once per seed (3 by default, each cell's seeds as one group); the image ViT they
    # share ran once.
    assert len(list((results / "embed-ablation").glob("*/summary.json"))) == 4 * 3
    assert len(list((results / "model-variants").glob("*/summary.json"))) == 10 * 3
    assert len(list((results / "_deps").glob("*/summary.json"))) == 1
    groups = [json.loads(p.read_text()).get("group") for p in (results / "model-variants").glob("*/summary.json")]
    assert all(g is not None and len(g) == 3 for g in groups)
    # Running it again trains nothing and prints the same tables.
    again = cli("reproduce", "--preset", "smoke", "--results", str(results), "--format", "markdown", timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Model 2: Ave. pool baseline" in again.stdout
