"""Sweeps without training: grid combinators, the grid files, run ids, bad input, the run store's states, the
TPU worker command's quoting, and the gcloud flow with a stand-in trainer (tests/fake_gcloud)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vivit_cli.errors import VivitError
from vivit_cli.report import tables
from vivit_cli.sweep import cells, grids
from vivit_cli.sweep.grid import Point, chain, cumulative, fixed, product, sweep, where, zip_

ROOT = Path(__file__).resolve().parents[1]
FAKE_GCLOUD = ROOT / "tests" / "fake_gcloud"
RUN_ID = re.compile(r"^[0-9a-f]{10}-s\d+$")


def vivit(*args, env=None, cwd=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "vivit_cli.cli.app", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=timeout)


def tree(path: Path) -> dict:
    """Every file under `path` with its size and mtime: to prove a failed command touched nothing."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def plan(name, **kw):
    return cells.plan(grids.load(name), **kw)


# ---- combinators -------------------------------------------------------------------------------------

def test_product_zip_chain_where_cumulative():
    g = product(sweep("a", [1, 2], row=lambda v: f"a{v}"), sweep("b", ["x", "y"], column=["X", "Y"]))
    assert [p.overrides for p in g] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"},
                                        {"a": 2, "b": "y"}]
    assert g[1].labels == {"row": "a1", "column": "Y"}
    z = zip_(sweep("a", [1, 2]), sweep("b", [3, 4]))
    assert [p.overrides for p in z] == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    assert len(chain(fixed({"a": 1}), z)) == 3
    assert [p.overrides["a"] for p in where(lambda o: o["a"] > 1, g)] == [2, 2]
    c = cumulative([("base", {"x": 1}), ("+y", {"y": 2}), ("+z", {"x": 3})])
    assert [p.overrides for p in c] == [{"x": 1}, {"x": 1, "y": 2}, {"x": 3, "y": 2}]
    assert [p.labels["row"] for p in c] == ["base", "+y", "+z"]


def test_conditional_axis_and_errors():
    variants = sweep("model.variant", ["factorised_encoder", "spatio_temporal"])
    g = product(variants, lambda o: sweep("model.temporal_layers", [0, 4])
                if o["model.variant"] == "factorised_encoder" else [Point()])
    assert [p.overrides for p in g] == [
        {"model.variant": "factorised_encoder", "model.temporal_layers": 0},
        {"model.variant": "factorised_encoder", "model.temporal_layers": 4},
        {"model.variant": "spatio_temporal"}]
    with pytest.raises(VivitError, match="different lengths"):
        zip_(sweep("a", [1, 2]), sweep("b", [1]))
    with pytest.raises(VivitError, match="two axes set"):
        product(sweep("a", [1]), sweep("a", [2]))
    with pytest.raises(VivitError, match="unknown label"):
        fixed({"a": 1}, colour="red")


# ---- the grid files ------------------------------------------------------------------------------------

# (cells, dependencies): a grid over both tasks starts each task from its own image ViT (grid.task_schedules)
EXPECTED = {"embed-ablation": (4, 1), "model-variants": (10, 2), "temporal-layers": (5, 1),
            "attention-order": (4, 2), "tubelet-size": (12, 1), "regularisation": (6, 1)}


def test_every_paper_grid_exists_with_lean_cell_counts():
    assert set(EXPECTED) <= set(grids.available())
    for name, (n_cells, n_deps) in EXPECTED.items():
        p = plan(name)
        assert (len(p.cells), len(p.deps)) == (n_cells, n_deps), name
        assert p.grid.table == name


# What the paper preset needs: the user's Kinetics and Epic-Kitchens, and an image ViT from `vivit convert vit`.
PAPER_SETS = ["appearance:data.source=kinetics:/data/k400", "motion:data.source=epic:/data/epic",
              "model.init_from=/models/vit-b16-i21k"]


@pytest.mark.parametrize("preset", [None, "smoke", "paper"])
def test_grid_labels_are_the_report_tables_labels(preset):
    """cell.json's row/column must be what `vivit report` looks for (the contract in report/tables.py)."""
    for name in EXPECTED:
        p = plan(name, preset=preset, sets=PAPER_SETS if preset == "paper" else None)
        spec = tables.get(p.grid.table)
        for job in p.cells:
            assert job.labels["column"] in spec.columns, (name, job.labels)
            row = job.labels["row"]
            assert row in spec.rows or (spec.numeric_rows and tables.row_number(row) is not None), (name, row)
            assert RUN_ID.match(job.run_id) and job.config is not None
        assert len({j.run_id for j in p.cells}) == len(p.cells)


def test_paper_preset_is_vivit_b_on_kinetics_and_epic_from_the_users_vit():
    p = plan("model-variants", preset="paper", sets=PAPER_SETS)
    job = p.cells[0]
    assert (job.config.model.hidden, job.config.data.frames, job.config.data.crop) == (768, 32, 224)
    assert {j.labels["column"]: j.config.data.source for j in p.cells} == {tables.APPEARANCE: "kinetics:/data/k400",
                                                                          tables.MOTION: "epic:/data/epic"}
    assert {j.config.model.init_from for j in p.cells} == {"/models/vit-b16-i21k"}


def test_paper_grids_plan_no_image_pretraining():
    """The paper initialises from an ImageNet-21k ViT: at that scale no grid trains one on video frames."""
    for name in EXPECTED:
        p = plan(name, preset="paper", sets=PAPER_SETS)
        assert all(d.kind != "pretrain-image" for d in p.deps), name
        for job in p.cells:
            assert job.config.data.source in ("kinetics:/data/k400", "epic:/data/epic"), (name, job.cell)
            assert job.config.model.init_from in ["/models/vit-b16-i21k", *(f"_deps/{d.run_id}" for d in p.deps)]
    # the regularisation table's Kinetics initialisation: trained on the user's Kinetics from the user's ViT
    (dep,) = plan("regularisation", preset="paper", sets=PAPER_SETS).deps
    assert dep.kind == "train" and dep.config.data.source == "kinetics:/data/k400"
    assert dep.config.model.init_from == "/models/vit-b16-i21k"
    one_column = plan("embed-ablation", preset="paper", sets=["data.source=kinetics:/k", "model.init_from=/v"])
    assert not one_column.deps and {j.config.data.source for j in one_column.cells} == {"kinetics:/k"}


@pytest.mark.parametrize("name, sets, needed", [
    ("embed-ablation", [], ["--set data.source=kinetics:PATH", "--set model.init_from=DIR"]),
    ("embed-ablation", ["data.source=kinetics:/k"], ["--set model.init_from=DIR"]),
    ("model-variants", ["model.init_from=/v"], ["--set appearance:data.source=kinetics:PATH",
                                                "--set motion:data.source=epic:PATH"]),
    ("regularisation", ["data.source=epic:/e", "model.init_from=/v"], ["--set appearance:data.source=kinetics:PATH"]),
])
def test_paper_preset_refuses_without_the_users_data_and_vit(name, sets, needed):
    with pytest.raises(VivitError) as e:
        plan(name, preset="paper", sets=sets)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"grid {name}: --preset paper trains on your data")
    assert all(n in message for n in needed), message
    assert message.count("--set ") == len(needed)


def test_paper_preset_one_source_for_two_columns_is_refused():
    with pytest.raises(VivitError, match=r"--set data.source=kinetics:/k would replace the epic: data of its motion "
                                         r"column; give each column its own: --set motion:data.source=epic:PATH"):
        plan("model-variants", preset="paper", sets=["data.source=kinetics:/k", "model.init_from=/v"])


def test_paper_preset_cli_refuses_and_dry_run_plans_no_pretraining(tmp_path):
    r = vivit("train", "--preset", "paper", "--set", "data.source=kinetics:/data/k400", env={"VIVIT_RESULTS": str(tmp_path)})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --preset paper trains on your data from your image ViT, and these are not set: pass "
        "--set model.init_from=DIR (an ImageNet-21k ViT converted with `vivit convert vit`)"]
    r = vivit("sweep", "embed-ablation", "--preset", "paper", "--backend", "tpu", "--backend-opt", "zone=us-central2-b",
              "--dry-run", "--set", "data.source=kinetics:/data/k400", "--set", "model.init_from=/models/vit",
              "--results", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "4 cells x seeds + 0 dependencies" in r.stdout and "pretrain" not in r.stdout


def test_embed_ablation_cells_share_one_image_vit_dependency():
    p = plan("embed-ablation", preset="smoke")
    (dep,) = p.deps
    assert dep.kind == "pretrain-image" and dep.grid == cells.DEPS_DIR
    for job in p.cells:
        assert job.deps == (dep.run_id,)
        assert job.config.model.init_from == f"_deps/{dep.run_id}"
    inits = {j.labels["row"]: (j.config.model.embedding, j.config.model.init) for j in p.cells}
    assert inits[tables.UNIFORM_FRAME][0] == "uniform_frame"
    assert inits[tables.TUBELET_INFLATION] == ("tubelet", "filter_inflation")
    uniform = next(j for j in p.cells if j.labels["row"] == tables.UNIFORM_FRAME).config
    assert uniform.model.sampled_frames == uniform.data.frames // 2  # same token count as the 2-frame tubelet


def test_an_image_vit_the_user_replaces_is_not_pretrained():
    both = plan("model-variants")
    motion_vit = next(j.deps for j in both.cells if j.labels["column"] == tables.MOTION)
    # One column from the user's ViT: only the other column's ViT is pretrained.
    scoped = plan("model-variants", sets=["motion:model.init_from=/vits/mine"])
    assert [d.run_id for d in scoped.deps] != list(motion_vit) and len(scoped.deps) == 1
    for job in scoped.cells:
        mine = job.labels["column"] == tables.MOTION
        assert (job.config.model.init_from == "/vits/mine") == mine and (job.deps == ()) == mine
    # The appearance cells keep their run ids (and runs); only the motion cells get new ones.
    assert {j.run_id for j in scoped.cells} - {j.run_id for j in both.cells} == {
        j.run_id for j in scoped.cells if j.labels["column"] == tables.MOTION}
    # Everywhere: nothing to pretrain.
    assert plan("model-variants", sets=["model.init_from=/vits/mine"]).deps == []


def test_each_task_trains_its_own_schedule_from_its_own_image_vit():
    from vivit_cli import config

    def schedule(p):
        deps = {d.run_id: config.image_config(d.config).train.steps for d in p.deps}
        return {j.labels.get("column", tables.APPEARANCE): (j.config.train.steps, j.config.train.warmup_steps,
                                                            deps[j.config.model.init_from.split("/")[1]])
                for j in p.cells}

    mv = plan("model-variants")
    assert len(mv.deps) == 2
    assert schedule(mv) == {tables.APPEARANCE: (150, 15, 1200), tables.MOTION: (300, 30, 300)}
    # Every grid's appearance cells share that ViT and, where the cell is the same, the run.
    ea = plan("embed-ablation")
    assert schedule(ea) == {tables.APPEARANCE: (150, 15, 1200)}
    assert {d.run_id for d in ea.deps} < {d.run_id for d in mv.deps}
    central = next(j for j in ea.cells if j.labels["row"] == tables.TUBELET_CENTRAL)
    assert central.run_id == next(j.run_id for j in mv.cells if j.cell == f"{tables.MODEL_1} / {tables.APPEARANCE}")
    # A --set for the sweep wins over the tasks' schedules (one ViT for all); a scoped one picks one column's.
    assert schedule(plan("model-variants", sets=["train.image_steps=600", "train.steps=200"])) == {
        tables.APPEARANCE: (200, 15, 600), tables.MOTION: (200, 30, 600)}
    assert schedule(plan("model-variants", sets=["motion:train.image_steps=600"])) == {
        tables.APPEARANCE: (150, 15, 1200), tables.MOTION: (300, 30, 600)}
    # Other presets train their own schedule in every column.
    assert schedule(plan("model-variants", preset="smoke")) == {tables.APPEARANCE: (6, 2, 6), tables.MOTION: (6, 2, 6)}
    paper = plan("model-variants", preset="paper", sets=["appearance:data.source=kinetics:/k", "model.init_from=/v",
                                                         "motion:data.source=epic:/e"])
    assert {j.config.train.steps for j in paper.cells} == {125_000} and not paper.deps


def test_run_ids_seeds_and_sharing_between_grids():
    p = plan("model-variants", seeds=3)
    assert len(p.cells) == 30
    by_cell = {}
    for j in p.cells:
        by_cell.setdefault(j.cell, []).append(j.run_id)
    for ids in by_cell.values():  # seeds of a cell share the prefix
        assert len({i.split("-")[0] for i in ids}) == 1 and sorted(i[-3:] for i in ids) == ["-s0", "-s1", "-s2"]
    mv = {(j.labels["row"], j.labels["column"]): j.run_id for j in plan("model-variants").cells}
    tl = {j.labels["row"]: j.run_id for j in plan("temporal-layers").cells}
    ao = {(j.labels["row"], j.labels["column"]): j.run_id for j in plan("attention-order").cells}
    assert tl["L_t=4"] == mv[(tables.MODEL_2, tables.APPEARANCE)]
    assert tl["L_t=0"] == mv[(tables.MODEL_2_AVE_POOL, tables.APPEARANCE)]
    assert ao[(tables.SPACE_TIME, tables.MOTION)] == mv[(tables.MODEL_3, tables.MOTION)]
    # The run section is not part of a result: W&B settings leave the run ids alone; a model key does not.
    assert [j.run_id for j in plan("model-variants", sets=["run.wandb_project=x"]).cells] == list(mv.values())
    assert not set(j.run_id for j in plan("model-variants", sets=["model.layers=2"]).cells) & set(mv.values())


def test_scoped_set_applies_to_one_column():
    p = plan("model-variants", sets=["motion:data.source=npy:/data/ek.npz"])
    sources = {j.labels["column"]: j.config.data.source for j in p.cells}
    assert sources == {"appearance": "embedded:appearance", "motion": "npy:/data/ek.npz"}
    with pytest.raises(VivitError, match="matches no cell"):
        plan("model-variants", sets=["kinetics:data.source=npy:/x"])
    with pytest.raises(VivitError, match="same config"):  # --sets that flatten the task axis
        plan("model-variants", sets=["data.source=embedded:motion", "train.steps=300", "train.warmup_steps=30",
                                     "train.image_steps=0"])


# ---- CLI ---------------------------------------------------------------------------------------------

def test_dry_run_json_lists_cells_without_jax_and_fast(tmp_path):
    code = ("import sys, time; t = time.time(); from vivit_cli.cli.app import main; "
            f"rc = main(['sweep', 'embed-ablation', '--dry-run', '--json', '--results', {str(tmp_path / 'r')!r}]); "
            "sys.stderr.write(repr((rc, time.time() - t, sorted(m for m in ('jax', 'flax', 'optax', 'orbax', "
            "'tensorflow') if m in sys.modules))))")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    wall = time.time() - t0
    rc, seconds, heavy = eval(r.stderr.strip().splitlines()[-1])  # our own repr of a tuple
    assert rc == 0 and heavy == []
    assert wall < 5 and seconds < 3, (wall, seconds)  # about 0.5 s on an idle 2-core machine
    out = json.loads(r.stdout)
    assert out["counts"] == {"new": 5} and len(out["cells"]) == 5
    first = out["cells"][1]
    assert first["state"] == "new" and "model.init_from" in first["overrides"]
    assert first["commands"][0][3] == "train" and "--workdir" in first["commands"][0]
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


def test_list_and_help():
    r = vivit("sweep", "--list", "--json")
    assert r.returncode == 0, r.stderr
    got = {g["grid"]: g["cells"] for g in json.loads(r.stdout)["grids"]}
    assert {k: got[k] for k in EXPECTED} == {k: v[0] for k, v in EXPECTED.items()}


def _bad_grid(tmp_path) -> Path:
    path = tmp_path / "badgrid.py"
    path.write_text('"""Two of three cells are invalid."""\n'
                    "from vivit_cli.sweep.grid import sweep\n"
                    "TABLE = 'model-variants'\n"
                    "def cells(base, preset):\n"
                    "    return sweep('model.heads', [2, 5, 7], row=lambda h: f'heads {h}', column='motion')\n")
    return path


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path):
    results = tmp_path / "results"
    (results / "model-variants" / "keep").mkdir(parents=True)
    (results / "model-variants" / "keep" / "cell.json").write_text("{}")
    before = tree(results)
    cases = [
        (["sweep", "no-such-grid"], "unknown grid 'no-such-grid'"),
        (["sweep", "model-variants", "--set", "model.colour=red"], "unknown config key 'model.colour'"),
        (["sweep", "model-variants", "--set", "model.variant=9"], "model.variant"),
        (["sweep", str(_bad_grid(tmp_path))], "2 of 3 cells have an invalid config"),
        (["sweep", "model-variants", "--preset", "huge"], "unknown preset"),
        (["sweep", "model-variants", "--backend", "slurm"], "unknown backend"),
        (["sweep", "model-variants", "--backend", "tpu", "--backend-opt", "zone=z"], "gcloud"),
        (["sweep", "model-variants", "--results", str(results / "model-variants" / "keep" / "cell.json" / "r")],
         "not a folder"),
    ]
    (tmp_path / "empty-bin").mkdir()
    env = {"PATH": str(tmp_path / "empty-bin")}  # no gcloud on it (this machine may have a real one)
    for args, message in cases:
        r = vivit(*args, *([] if "--results" in args else ["--results", str(results)]), env=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("error: ")
    r = vivit("sweep", str(_bad_grid(tmp_path)), "--results", str(results))
    assert "heads 5" in r.stderr and "heads 7" in r.stderr and "heads 2:" not in r.stderr  # every bad cell listed
    assert tree(results) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_results_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = vivit("sweep", "model-variants", "--preset", "smoke", "--results", str(ro / "results"))
        assert r.returncode == 2 and "not writable" in r.stderr and len(r.stderr.splitlines()) == 1
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


# ---- run store states -----------------------------------------------------------------------------------

def _fake_run(d: Path, summary: dict | None = None, checkpoint: int | None = None):
    d.mkdir(parents=True)
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    if checkpoint is not None:
        (d / "checkpoints" / str(checkpoint)).mkdir(parents=True)


def test_states_from_the_run_store(tmp_path):
    results = tmp_path / "results"
    p = plan("attention-order", preset="smoke")
    jobs = {(j.labels["row"], j.labels["column"]): j for j in p.cells}
    done = jobs[(tables.SPACE_TIME, tables.APPEARANCE)]
    failed = jobs[(tables.SPACE_TIME, tables.MOTION)]
    partial = jobs[(tables.TIME_SPACE, tables.APPEARANCE)]
    running = jobs[(tables.TIME_SPACE, tables.MOTION)]
    _fake_run(results / "attention-order" / done.run_id, {"status": "done", "top1": 0.5})
    _fake_run(results / "attention-order" / failed.run_id, {"status": "failed", "error": "loss became nan"})
    _fake_run(results / "attention-order" / partial.run_id, None, checkpoint=3)
    _fake_run(results / "attention-order" / running.run_id)  # the sweep writes cell.json before it starts a run
    (results / "attention-order" / running.run_id / "cell.json").write_text(json.dumps(running.cell_record()))
    (results / ".locks").mkdir()
    lock = results / ".locks" / f"{running.run_id}.lock"
    lock.touch()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = vivit("sweep", "attention-order", "--preset", "smoke", "--dry-run", "--json", "--results", str(results))
        states = {c["run_id"]: (c["state"], c["error"]) for c in json.loads(r.stdout)["cells"]
                  if c["kind"] == "train"}  # the image-ViT dependency is simply new here
        assert states == {done.run_id: ("done", None), failed.run_id: ("failed", "loss became nan"),
                          partial.run_id: ("partial", None), running.run_id: ("running", None)}
        # Another grid whose cell is this done run: shown as shared, linked in by the next sweep.
        mv = plan("model-variants", preset="smoke")
        model3 = next(j for j in mv.cells if j.run_id == failed.run_id or j.run_id == done.run_id)
        r = vivit("sweep", "model-variants", "--preset", "smoke", "--dry-run", "--json", "--results", str(results))
        shared = {c["run_id"]: c for c in json.loads(r.stdout)["cells"]}[done.run_id]
        assert model3.run_id == done.run_id
        assert shared["state"] == "shared" and shared["shared_from"] == f"attention-order/{done.run_id}"
        r = vivit("status", "--results", str(results), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["counts"] == {"done": 1, "failed": 1, "partial": 1, "running": 1}
    finally:
        holder.kill()
        holder.wait()


def test_status_lists_planned_cells_that_never_started(tmp_path):
    # A sweep interrupted before some cells started: `vivit status GRID` still shows the whole grid.
    from vivit_cli.sweep import store as st

    results = tmp_path / "results"
    p = plan("attention-order", preset="smoke")
    store = st.RunStore(str(results))
    store.record_plan(p.jobs)
    first, *rest = [j for j in p.jobs if j.kind == "train"]
    _fake_run(results / "attention-order" / first.run_id, {"status": "done", "top1": 0.5})
    r = vivit("status", "attention-order", "--results", str(results), "--json")
    assert r.returncode == 0, r.stderr
    got = {row["run_id"]: (row["state"], row["row"]) for row in json.loads(r.stdout)["runs"]}
    assert got == {first.run_id: ("done", None), **{j.run_id: ("new", j.labels["row"]) for j in rest}}
    everything = json.loads(vivit("status", "--results", str(results), "--json").stdout)
    assert everything["counts"] == {"done": 1, "new": len(p.jobs) - 1}  # the planned dependency's grid too
    # A second sweep with another seed adds to the plan instead of replacing it.
    p2 = plan("attention-order", preset="smoke", seeds=2)
    store.record_plan(p2.jobs)
    assert {c["run_id"] for c in store.planned("attention-order")} == {j.run_id for j in p2.jobs
                                                                       if j.grid == "attention-order"}


# ---- TPU backend ------------------------------------------------------------------------------------

EVIL = ["data.data_dir=/tmp/x; touch {pwned} #", "run.wandb_project=$(touch {pwned})`touch {pwned}`'\"",
        "data.eval_split=a && touch {pwned}"]


def test_worker_command_quotes_every_value(tmp_path):
    from vivit_cli.sweep.backends.tpu import worker_command

    pwned = tmp_path / "PWNED"
    values = [v.format(pwned=pwned) for v in EVIL]
    argv = ["train"] + [x for v in values for x in ("--set", v)] + ["--workdir", str(tmp_path / "w d")]
    cmd = worker_command(argv, {"VIVIT_RESULTS": "gs://b/r; rm -rf /"}, python=sys.executable, install=False)
    assert shlex.split(cmd)[-len(argv):] == argv
    # Run it for real through a shell, as ssh does on a worker, with a "vivit" that prints what it got.
    (tmp_path / "vivit-cli" / "vivit_cli" / "cli").mkdir(parents=True)
    for init in ("vivit_cli/__init__.py", "vivit_cli/cli/__init__.py"):
        (tmp_path / "vivit-cli" / init).write_text("")
    (tmp_path / "vivit-cli" / "vivit_cli" / "cli" / "app.py").write_text(
        "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ['VIVIT_RESULTS']]))")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [argv, "gs://b/r; rm -rf /"]
    assert not pwned.exists()


FAKE_TRAINER = '''#!{python}
"""Stands in for `python -m vivit_cli.cli.app train ...` on an emulated TPU worker: the first time it
'checkpoints' and waits to be preempted; after a re-create it finds the checkpoint and finishes."""
import json, os, sys, time
from pathlib import Path
argv = sys.argv[1:]
assert argv[:3] == ["-m", "vivit_cli.cli.app", "train"], argv
wd = Path(argv[argv.index("--workdir") + 1])
pid = int(os.environ["VIVIT_PROCESS_ID"])
(wd / f"argv{{pid}}.json").write_text(json.dumps([argv, os.environ["VIVIT_NUM_PROCESSES"]]))
if not (wd / "checkpoints" / "1").exists():
    (wd / "checkpoints" / "1").mkdir(parents=True, exist_ok=True)
    time.sleep(120)
    sys.exit(3)
if pid == 0:
    (wd / "summary.json").write_text(json.dumps({{"status": "done", "top1": 0.25}}))
'''


def _fake_gcloud_env(tmp_path, **extra) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").symlink_to(FAKE_GCLOUD)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_GCLOUD_STATE": str(tmp_path / "gcloud"),
            **extra}


def _calls(tmp_path) -> list[list[str]]:
    lines = (tmp_path / "gcloud" / "calls.jsonl").read_text().splitlines()
    return [json.loads(line)["argv"] for line in lines]


@pytest.mark.slow
def test_tpu_backend_gcloud_flow_with_preemption(tmp_path):
    """The gcloud sequence, --spot, --worker=all, quoting, and delete + re-create after a preemption."""
    grid = tmp_path / "one.py"
    grid.write_text('"""One cell."""\nfrom vivit_cli.sweep.grid import fixed\nTABLE = "model-variants"\n'
                    'def cells(base, preset):\n'
                    '    return fixed({"model.variant": "1"}, row="Model 1: Spatio-temporal", column="motion")\n')
    trainer = tmp_path / "fakepython"
    trainer.write_text(FAKE_TRAINER.format(python=sys.executable))
    trainer.chmod(0o755)
    results = tmp_path / "results"
    pwned = tmp_path / "PWNED"
    env = _fake_gcloud_env(tmp_path, FAKE_GCLOUD_PREEMPT_WHEN=str(results / "one" / "*" / "checkpoints" / "1"))
    evil = [x for v in EVIL for x in ("--set", v.format(pwned=pwned))]
    r = vivit("sweep", str(grid), "--preset", "smoke", *evil, "--results", str(results), "--backend", "tpu",
              "--backend-opt", "zone=europe-west4-a", "--backend-opt", "spot=true", "--backend-opt",
              f"python={trainer}", "--backend-opt", "install=false", "--backend-opt", "poll=0.2",
              env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    (run_dir,) = (results / "one").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "done"
    argv, nproc = json.loads((run_dir / "argv1.json").read_text())
    assert nproc == "2"  # worker 1 of the emulated 2-host slice ran the same command
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert {v.format(pwned=pwned) for v in EVIL} <= set(sets)  # arrived literally, executed nowhere
    assert not pwned.exists()
    calls = [c for c in _calls(tmp_path) if c[3] != "describe"]
    verbs = [c[3] for c in calls]
    assert verbs == ["create", "scp", "ssh", "delete", "create", "scp", "ssh", "delete"], verbs
    create = calls[0]
    assert "--spot" in create and create[create.index("--zone") + 1] == "europe-west4-a"
    assert create[4] == create[create.index("--node-id") + 1] == f"vivit-{run_dir.name}"
    assert all("--worker=all" in c for c in calls if c[2] == "tpu-vm")
    log = (run_dir / "train.log").read_text()
    assert "is SUSPENDED" in log and "preempted (1)" in log
    assert not list((tmp_path / "gcloud" / "qr").glob("*.json"))  # nothing left running (and billing)


# ---- the scheduler, with a backend that only pretends -------------------------------------------------

def launched(launch) -> list[tuple[str, Path]]:
    """(run id, workdir) of every seed a launch trains: one, or a group's (`--seeds` and a {seed} workdir)."""
    argv = launch.argv
    where = argv[argv.index("--workdir") + 1]
    seeds = argv[argv.index("--seeds") + 1].split(",") if "--seeds" in argv else None
    dirs = [Path(where)] if seeds is None else [Path(where.replace("{seed}", k)) for k in seeds]
    return [(d.name, d) for d in dirs]


class ScriptedBackend:
    """A `Backend` whose jobs end as scripted per run id: "done" (writes summary.json), "fail", "preempt". A group
    launch ends each of its seeds as scripted; its exit code is the worst of theirs."""

    name = "scripted"

    def __init__(self, script):
        self.script = {k: list(v) for k, v in script.items()}
        self.started: list[str] = []
        self.launches: list[list[str]] = []  # the run ids each process trained
        self.argvs: list[list[str]] = []
        self.lock_fds: list[int] = []
        self.running: set[int] = set()
        self.peak = 0  # the most processes at once

    def commands(self, launch):
        return [["vivit", *launch.argv]]

    def start(self, launch):
        self.started.append(launch.run_id)
        seeds = launched(launch)
        self.launches.append([run_id for run_id, _ in seeds])
        self.argvs.append(list(launch.argv))
        self.lock_fds.append(len(launch.lock_fds))
        handle = (launch, [(wd, (self.script.get(run_id) or ["done"]).pop(0)) for run_id, wd in seeds])
        self.running.add(id(handle))
        self.peak = max(self.peak, len(self.running))
        return handle

    def poll(self, handle):
        codes = []
        for workdir, outcome in handle[1]:
            if outcome == "done":
                (workdir / "summary.json").write_text(json.dumps({"status": "done", "top1": 0.5}))
                codes.append(0)
            elif outcome == "preempt":
                codes.append(143)
            else:
                (workdir / "summary.json").write_text(json.dumps({"status": "failed", "error": "loss became nan"}))
                codes.append(1)
        self.running.discard(id(handle))
        return 143 if 143 in codes else max(codes)

    def stop(self, handle):
        pass

    def close(self):
        pass


def test_scheduler_retries_blocks_dependents_and_resumes(tmp_path):
    from vivit_cli.sweep import runner, store as st

    results = tmp_path / "results"
    p = plan("embed-ablation", preset="smoke")
    dep, cells_ = p.deps[0], p.cells
    # The dependency fails every time: it is tried max_attempts times, its dependents never start.
    backend = ScriptedBackend({dep.run_id: ["fail"] * 5})
    res = runner.run(p, st.RunStore(results, max_attempts=2), backend, poll=0.01, live=True)
    assert backend.started == [dep.run_id, dep.run_id] and not res.ok
    assert "loss became nan" in res.failed[dep.run_id] and set(res.failed) == {dep.run_id} | {c.run_id for c in cells_}
    record = json.loads((results / "_deps" / dep.run_id / "sweep.json").read_text())
    assert (record["attempts"], record["failures"], record["last"]) == (2, 2, "failed")
    # Exhausted: a rerun does not try again ...
    backend = ScriptedBackend({})
    assert not runner.run(p, st.RunStore(results, max_attempts=2), backend, poll=0.01, live=False).ok
    assert backend.started == []
    # ... unless allowed more attempts; a preempted cell is simply started again.
    backend = ScriptedBackend({cells_[0].run_id: ["preempt", "done"]})
    res = runner.run(p, st.RunStore(results, max_attempts=3), backend, poll=0.01, live=False)
    assert res.ok and len(res.done) == 5
    # Costliest first (the uniform-frame cell embeds fewer frames, so it goes last); the preempted one again at once.
    order = sorted(cells_, key=lambda j: -j.cost)
    assert order[-1] is cells_[0] and order[-1].cost < order[0].cost
    assert backend.started == [dep.run_id] + [r for j in order for r in [j.run_id] * (2 if j is cells_[0] else 1)]
    for job in cells_:
        assert json.loads((results / "embed-ablation" / job.run_id / "cell.json").read_text())["run_id"] == job.run_id
    # Everything done: nothing starts.
    backend = ScriptedBackend({})
    assert runner.run(p, st.RunStore(results), backend, poll=0.01, live=False).ok and backend.started == []


def test_done_runs_from_older_model_code_are_flagged_not_rerun(tmp_path):
    # Run ids hash the config, not the code: after a numerics change a sweep keeps its done runs, and says so.
    from vivit_cli.models import NUMERICS_VERSION

    results = tmp_path / "results"
    p = plan("attention-order", preset="smoke")
    old, new, *_ = [j for j in p.jobs if j.kind == "train"]
    _fake_run(results / "attention-order" / old.run_id, {"status": "done", "top1": 0.5})  # no numerics: before 3
    _fake_run(results / "attention-order" / new.run_id, {"status": "done", "top1": 0.6, "numerics": NUMERICS_VERSION})
    r = vivit("status", "--results", str(results), "--json")
    assert r.returncode == 0, r.stderr
    stale = {row["run_id"]: row["stale"] for row in json.loads(r.stdout)["runs"]}
    assert stale[new.run_id] is None
    assert stale[old.run_id] == f"older numerics version (before 3, now {NUMERICS_VERSION})"
    assert "1 done run(s) were trained under an older numerics version" in r.stderr
    r = vivit("sweep", "attention-order", "--preset", "smoke", "--dry-run", "--results", str(results),
              env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert "done (older numerics version" in r.stdout and "1 done run(s)" in r.stderr
    cells = json.loads(vivit("sweep", "attention-order", "--preset", "smoke", "--dry-run", "--json", "--results",
                             str(results)).stdout)["cells"]
    assert {c["run_id"]: c["state"] for c in cells}[old.run_id] == "done"  # kept, not retrained


def test_the_seeds_of_a_cell_train_as_one_process_and_a_retry_only_the_seed_that_failed(tmp_path):
    from vivit_cli.sweep import runner, store as st

    results = tmp_path / "results"
    p = plan("attention-order", preset="smoke", seeds=3)
    dep, jobs = p.deps[0], p.cells
    cells_ = [jobs[i:i + 3] for i in range(0, len(jobs), 3)]  # each cell's seeds 0, 1, 2
    assert all(len({j.group for j in c}) == 1 for c in cells_) and len({c[0].group for c in cells_}) == len(cells_)
    _fake_run(results / "attention-order" / cells_[0][1].run_id, {"status": "done", "top1": 0.5})  # done before
    backend = ScriptedBackend({cells_[1][1].run_id: ["fail", "done"]})  # seed 1 of the second cell: NaN once
    res = runner.run(p, st.RunStore(results), backend, parallel=1, poll=0.01, live=False)
    assert res.ok and len(res.done) == len(p.jobs)
    ids = [[j.run_id for j in c] for c in cells_]
    assert backend.launches == [[dep.run_id], [ids[0][0], ids[0][2]], ids[1], [ids[1][1]]] + ids[2:]
    assert backend.lock_fds == [len(x) for x in backend.launches]  # the process holds every seed's lock
    group = backend.argvs[2]
    assert group[group.index("--seeds") + 1] == "0,1,2" and group[group.index("--workdir") + 1].endswith("-s{seed}")
    assert not any(a.startswith("train.seed=") for a in group)  # --seeds replaces it
    retry = backend.argvs[3]  # one seed: the single-run command, as without groups
    assert "--seeds" not in retry and "train.seed=1" in retry and retry[-1].endswith(ids[1][1])
    for k, job in enumerate(cells_[1]):
        d = results / "attention-order" / job.run_id
        assert json.loads((d / "cell.json").read_text())["seed"] == k
        record = json.loads((d / "sweep.json").read_text())
        assert (record["attempts"], record["failures"]) == ((2, 1) if k == 1 else (1, 0))
        assert record["command"][1:] == (retry if k == 1 else group)
    log = (results / "attention-order" / ids[1][2] / "train.log").read_text()
    assert f"trained together with {ids[1][0]}" in log  # where its (group's) log is
    # Every seed done: nothing starts again.
    backend = ScriptedBackend({})
    assert runner.run(p, st.RunStore(results), backend, poll=0.01, live=False).ok and backend.started == []


def test_parallel_counts_processes_not_seeds(tmp_path):
    from vivit_cli.sweep import runner, store as st

    p = plan("attention-order", preset="smoke", seeds=3)
    backend = ScriptedBackend({})
    assert runner.run(p, st.RunStore(tmp_path / "results"), backend, parallel=2, poll=0.01, live=False).ok
    assert backend.peak == 2 and [len(x) for x in backend.launches] == [1] + [3] * (len(p.cells) // 3)


def test_seeds_bad_input_and_the_dry_run_shows_the_group_command(tmp_path):
    for bad in ("0", "-1", "1.5", "x"):
        r = vivit("sweep", "attention-order", f"--seeds={bad}", "--dry-run", "--results", str(tmp_path / "r"))
        assert r.returncode == 2 and r.stderr.startswith("error: --seeds") and len(r.stderr.splitlines()) == 1, r.stderr
    r = vivit("reproduce", "--seeds", "0", "--results", str(tmp_path / "r"))
    assert r.returncode == 2 and r.stderr.startswith("error: --seeds") and len(r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / "r").exists()
    r = vivit("sweep", "attention-order", "--preset", "smoke", "--seeds", "2", "--dry-run", "--json", "--results",
              str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    rows = [c for c in json.loads(r.stdout)["cells"] if c["kind"] == "train"]
    for a, b in zip(rows[::2], rows[1::2]):  # a cell's two seeds: one command, both in it
        assert a["commands"] == b["commands"]
        argv = a["commands"][0]
        assert argv[argv.index("--seeds") + 1] == "0,1" and argv[argv.index("--workdir") + 1].endswith("-s{seed}")


def test_combined_grids_run_as_one_pool_sharing_their_vit_and_their_common_cell(tmp_path):
    from vivit_cli.sweep import runner, store as st

    ea, mv = plan("embed-ablation", preset="smoke", seeds=2), plan("model-variants", preset="smoke", seeds=2)
    both = cells.combine([ea, mv])
    assert both.grid.name == "embed-ablation + model-variants" and [d.run_id for d in both.deps] == [ea.deps[0].run_id]
    shared = {j.run_id for j in ea.cells} & {j.run_id for j in mv.cells}
    assert len(shared) == 2  # model 1 on appearance = central-frame init, both seeds
    backend = ScriptedBackend({})
    res = runner.run(both, st.RunStore(tmp_path), backend, parallel=2, poll=0.01, live=False)
    assert res.ok and len(res.done) == len(both.jobs) == 1 + 8 + 20 and backend.peak == 2
    assert sorted(backend.started) == sorted(set(backend.started))  # nothing trained twice
    assert len([r for launch in backend.launches for r in launch]) == 1 + 8 + 20 - len(shared)
    for run_id in shared:  # trained in embed-ablation, shared into model-variants by the store
        summary = json.loads((tmp_path / "model-variants" / run_id / "summary.json").read_text())
        assert summary["status"] == "done"
