"""Seeds trained together (`train.run_group`, `vivit train --seeds`): the seed axis, the group's resume order,
bad input; and (slow) real groups: each seed as if trained alone, on several devices and processes, a NaN in one
seed, kill -9 and the same command again."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import train_helpers as h
from vivit_cli.errors import VivitError
from vivit_cli.io import read_json

# ---- the seed axis ----------------------------------------------------------------------------------------


def test_a_seed_axis_of_one_is_no_axis_at_all():
    """One seed is the single run's program: nothing stacked, nothing vmapped, the same shardings."""
    import jax

    from vivit_cli.runtime import mesh as mesh_lib
    from vivit_cli.train.seeds import SeedAxis

    one = SeedAxis(1)
    tree = {"a": np.arange(3), "b": {"c": np.ones((2, 2))}}
    assert one.stack_host([tree]) is tree and one.split_host(tree) == [tree]

    def fn(x):
        return x

    assert one.map(fn) is fn
    s = mesh_lib.batch_sharding(mesh_lib.make_mesh(1))
    assert one.sharding(s) is s

    three = SeedAxis(3)
    trees = [jax.tree.map(lambda x, k=k: x + k, tree) for k in range(3)]
    stacked = three.stack_host(trees)
    assert stacked["b"]["c"].shape == (3, 2, 2)
    back = three.split_host(stacked)
    pairs = [(x, y) for t, u in zip(trees, back) for x, y in zip(jax.tree.leaves(t), jax.tree.leaves(u))]
    assert all(np.array_equal(x, y) for x, y in pairs)
    assert tuple(three.sharding(s).spec) == (None, "data")  # the seed axis in front, split over no device


def test_the_cpus_seeds_in_turn_compute_what_vmap_computes():
    """runtime.cpu.seeds_in_turn, the CPU's map over the seed axis: each seed's slice through the loop's body, a
    shared argument (in_axes None, as the eval step's batch) given whole, every output stacked back in seed order."""
    import jax
    import jax.numpy as jnp

    from vivit_cli.runtime import cpu

    def fn(state, batch):
        return {"w": state["w"] @ batch, "n": jnp.sum(state["w"]) + state["b"]}

    rng = np.random.default_rng(0)
    state = {"w": rng.normal(size=(3, 4, 5)).astype(np.float32), "b": np.arange(3, dtype=np.float32)}
    batch = rng.normal(size=(5, 2)).astype(np.float32)
    ours = jax.jit(cpu.seeds_in_turn(fn, in_axes=(0, None)))(state, batch)
    ref = jax.vmap(fn, in_axes=(0, None))(state, batch)
    assert ours["w"].shape == (3, 4, 2) and ours["n"].shape == (3,)
    for k in ("w", "n"):
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-6)
    np.testing.assert_allclose(ours["w"][2], state["w"][2] @ batch, rtol=1e-6)  # seed 2 is seed 2's, in order
    batches = rng.normal(size=(3, 5, 2)).astype(np.float32)  # in_axes 0 for both: each seed its own batch
    both = jax.jit(cpu.seeds_in_turn(fn))(state, batches)
    np.testing.assert_allclose(both["w"][1], state["w"][1] @ batches[1], rtol=1e-6)


class FakeCheckpointer:
    """The part of `runtime.checkpoint.Checkpointer` a group's resume uses: steps, restore_latest, drop_after."""

    def __init__(self, steps, unreadable=()):
        self.all, self.unreadable = set(steps), set(unreadable)

    def steps(self):
        return sorted(self.all)

    def restore_latest(self, abstract, upto=None):
        for step in sorted((s for s in self.all if upto is None or s <= upto), reverse=True):
            if step in self.unreadable:
                self.all.discard(step)  # as the real one: an unreadable step is deleted once an older one restores
                continue
            return {"step": None}, {"step": step}
        return None

    def drop_after(self, step):
        self.all = {s for s in self.all if s <= step}


@pytest.mark.parametrize("steps, unreadable, resumed, left", [
    pytest.param([{4, 8}, {4, 8}, {4, 8}], [(), (), ()], 8, [{4, 8}] * 3, id="all at one step"),
    pytest.param([{4, 8}, {4}, {4, 8}], [(), (), ()], 4, [{4}] * 3, id="killed between two seeds' saves"),
    pytest.param([{4, 8}, {4, 8}], [(), (8,)], 4, [{4}, {4}], id="one seed's newest unreadable"),
    pytest.param([{2, 4, 8}, {2, 4}], [(), (4,)], 2, [{2}, {2}], id="a fallback below the common step"),
    pytest.param([{4, 8}, set()], [(), ()], None, [set(), set()], id="a seed without checkpoint: all start over"),
    pytest.param([{4, 8}], [(8,)], 4, [{4}], id="one seed: its newest readable step"),
    pytest.param([set()], [()], None, [set()], id="one seed, nothing yet"),
])
def test_a_group_resumes_from_the_newest_step_every_seed_holds(steps, unreadable, resumed, left):
    from vivit_cli.train.loop import restore_group

    ckpts = [FakeCheckpointer(s, u) for s, u in zip(steps, unreadable)]
    got = restore_group(ckpts, abstract=None)
    assert (None if got is None else {m["step"] for _, m in got}) == (None if resumed is None else {resumed})
    assert [c.all for c in ckpts] == left  # no seed keeps a step that would shadow the ones it writes next


def test_a_group_is_one_config_but_for_the_seed():
    from vivit_cli.train.seeds import same_but_seed

    same_but_seed([h.build([f"train.seed={k}"]) for k in range(3)])
    with pytest.raises(VivitError, match="one config but for train.seed"):
        same_but_seed([h.build(["train.seed=0"]), h.build(["train.seed=1", "train.lr=0.1"])])
    with pytest.raises(VivitError, match="comes twice"):
        same_but_seed([h.build(["train.seed=1"]), h.build(["train.seed=1"])])


def _main(capsys, *args):
    from vivit_cli.cli.app import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0,x"], "non-negative integers"),
    (["--seeds", "-1"], "non-negative integers"),
    (["--seeds", "1.5"], "non-negative integers"),
    (["--seeds", ""], "non-negative integers"),
    (["--seeds", "0,0"], "comes twice"),
    (["--seeds", "0,1", "--workdir", "w"], "{seed}"),
])
def test_train_seeds_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    rc, out, err = _main(capsys, "train", *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: --") and needle in lines[0], err


def test_seeds_with_a_seed_pattern_name_each_workdir():
    from vivit_cli import config
    from vivit_cli.cli.train import _seed_configs

    cfg = h.build()
    cfgs, dirs = _seed_configs(cfg, "2,0", "results/x-s{seed}")
    assert [c.train.seed for c in cfgs] == [2, 0] and dirs == ["results/x-s2", "results/x-s0"]
    cfgs, dirs = _seed_configs(cfg, "0,1", None)  # the default: what `vivit train --set train.seed=k` would use
    assert dirs == [f"results/train/{config.config_hash(h.build([f'train.seed={k}']))}" for k in (0, 1)]


# ---- real groups --------------------------------------------------------------------------------------------

# On the embedded data (its random crops, flips and the per-seed order), with mixup and dropout drawing from the
# rng: everything a seed's own randomness reaches.
EMBEDDED = ["data.source=embedded:motion", "data.crop=16", "data.frames=4", "model.tubelet=2x8x8", "train.steps=30",
            "run.log_every=1", "run.checkpoint_every=10", "train.mixup=0.2", "model.dropout=0.1"]

# A group is not a seed's own program: on the CPU the seeds run in turn in a loop compiled apart from a single run's
# program (runtime.cpu.seeds_in_turn), and on accelerators vmap batches the matmuls, so XLA may reduce in another
# order: a seed's float32 loss can differ from its run alone by rounding, which training then carries along.
# Measured on the 2-core CPU, a group of 3 against each seed alone: with vmap (2026-12-01) max relative difference of
# the loss curve 2.3e-7 over these 30 steps (smoke preset), 2.2e-7 over 40 steps of the default preset; in turn
# (2026-12-08) 0 over these 30 steps (bit for bit) and 2.1e-7 over the default's 40 (36-40 of the 40 steps
# bit-equal); top-1 equal on all 2500 clips each time: a few float32 ulps. 1e-4 leaves a margin of 400x for other
# CPUs, accelerators and longer drifts, and still fails on any real difference (another seed's data order, rng or
# init moves the loss by 1e-2).
LOSS_RTOL = 1e-4


def _losses(workdir) -> np.ndarray:
    return np.array(h.losses(workdir))


@pytest.mark.slow
def test_each_seed_of_a_group_trains_as_it_would_alone(tmp_path):
    from vivit_cli import config, train

    cfgs = [config.build(EMBEDDED + [f"train.seed={k}"], preset="smoke") for k in range(3)]
    group = train.run_group(cfgs, [tmp_path / f"g{k}" for k in range(3)])
    for k, cfg in enumerate(cfgs):
        alone = train.run(cfg, tmp_path / f"a{k}")
        g, a = _losses(tmp_path / f"g{k}"), _losses(tmp_path / f"a{k}")
        assert len(g) == len(a) == 30
        assert np.allclose(g, a, rtol=LOSS_RTOL, atol=0), (k, np.abs(g - a).max())
        assert abs(group[k]["top1"] - alone["top1"]) <= 1 / alone["eval_videos"] + 1e-12  # at most one clip
        assert group[k]["status"] == "done" and group[k]["run_id"] == alone["run_id"]
        assert group[k]["group"] == [s["run_id"] for s in group] and "group" not in alone
        # Each seed's own folder, as a single run leaves it.
        assert read_json(tmp_path / f"g{k}" / "config.json") == read_json(tmp_path / f"a{k}" / "config.json")
        assert sorted(p.name for p in (tmp_path / f"g{k}" / "checkpoints").iterdir() if p.name.isdigit()) == \
            sorted(p.name for p in (tmp_path / f"a{k}" / "checkpoints").iterdir() if p.name.isdigit())
        assert (tmp_path / f"g{k}" / group[k]["predictions"]).is_file()
    curves = [_losses(tmp_path / f"g{k}") for k in range(3)]
    assert not np.allclose(curves[0], curves[1], rtol=1e-3)  # seeds differ: their own data order and rng
    # Running the group again finds every seed done.
    again = train.run_group(cfgs, [tmp_path / f"g{k}" for k in range(3)])
    assert again == group


@pytest.mark.slow
def test_a_group_on_2_devices_and_on_2_processes_matches_one_device(tmp_path):
    one = [tmp_path / f"one{k}" for k in range(3)]
    h.run_synthetic_group(one)
    two = [tmp_path / f"d2-{k}" for k in range(3)]
    r = h.subprocess_run(two, env={"VIVIT_NUM_CPU_DEVICES": "2"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1x2 cpu" in r.stderr and "3 seeds as one program" in r.stderr
    mp = [tmp_path / f"mp{k}" for k in range(2)]  # two seeds: two processes on 2 cores are slow enough
    outs = h.two_processes(mp, timeout=400)
    assert "2x1 cpu" in outs[0][1]
    for k in range(3):
        ref = _losses(one[k])
        assert np.allclose(_losses(two[k]), ref, atol=1e-5)
        if k < len(mp):
            assert np.allclose(_losses(mp[k]), ref, atol=1e-5)
            meta = json.loads((mp[k] / "checkpoints" / "8" / "meta" / "metadata").read_text())
            assert len(meta["data_states"]) == 2  # each process's position in this seed's stream
        for wd in [two[k]] + mp[k:k + 1]:  # every clip once in the predictions, each seed its own
            s = read_json(wd / "summary.json")
            with np.load(wd / s["predictions"]) as z:
                assert np.array_equal(z["index"], np.arange(40))
                assert (z["top5"][:, 0] == z["label"]).mean() == s["top1"]


@pytest.mark.slow
def test_a_seed_whose_loss_turns_nan_fails_alone_and_a_retry_trains_only_it(tmp_path):
    clean = [tmp_path / f"clean{k}" for k in range(3)]
    h.run_synthetic_group(clean)
    dirs = [tmp_path / f"g{k}" for k in range(3)]
    cfg = h.build()
    out = h.run_synthetic_group(dirs, task=h.PoisonedTask(cfg, seed=1, after=5))  # NaN clips from step 6 on
    assert [s["status"] for s in out] == ["done", "failed", "done"]
    assert out[1]["error"] == "loss became nan at step 6" and read_json(dirs[1] / "summary.json") == out[1]
    assert sorted(int(p.name) for p in (dirs[1] / "checkpoints").iterdir() if p.name.isdigit()) == [4]  # none of NaN
    assert [r["step"] for r in map(json.loads, (dirs[1] / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3, 4, 5]
    for k in (0, 2):  # the others never saw it: the same program, their own rows, digit for digit
        assert h.losses(dirs[k]) == h.losses(clean[k])
        assert read_json(dirs[k] / "summary.json")["top1"] == read_json(clean[k] / "summary.json")["top1"]
    done = {k: (dirs[k] / "summary.json").stat().st_mtime_ns for k in (0, 2)}
    retry = h.run_synthetic_group(dirs)  # the same group again, the data fixed: only seed 1 trains
    assert [s["status"] for s in retry] == ["done"] * 3
    assert {k: (dirs[k] / "summary.json").stat().st_mtime_ns for k in (0, 2)} == done
    assert retry[1]["steps"] == 8 and "group" not in retry[1]  # trained alone: a group of one
    assert np.allclose(h.losses(dirs[1]), h.losses(clean[1]), rtol=LOSS_RTOL, atol=0)


@pytest.mark.slow
def test_a_group_logs_to_wandb_one_run_per_seed(tmp_path):
    from vivit_cli.train.wandb_log import read_offline_run

    dirs = [tmp_path / f"wb{k}" for k in range(2)]
    # In a process of its own: wandb's service would outlive the test here (and its env var reach later
    # subprocesses, which then share it).
    r = h.subprocess_run(dirs, ["run.wandb=offline", "train.steps=4", "run.checkpoint_every=4"])
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("SUMMARY "))[8:])
    ids = set()
    for wd, s in zip(dirs, out):
        runs = sorted((wd / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
        ids.add(runs[0].name.rsplit("-", 1)[-1])
        record = read_offline_run(runs[0])
        assert record["summary"]["top1"] == pytest.approx(s["top1"])
        local = {r["step"]: r["loss"] for r in map(json.loads, (wd / "metrics.jsonl").read_text().splitlines())
                 if "loss" in r}
        assert {r["_step"]: r["loss"] for r in record["history"] if "loss" in r} == pytest.approx(local)
    assert len(ids) == 2


def _cli(*args):
    sets = [a for item in EMBEDDED[:4] for a in ("--set", item)]  # the embedded data, tiny clips
    return [sys.executable, "-m", "vivit_cli.cli.app", "train", "--preset", "smoke", *sets, *args]


@pytest.mark.slow
def test_kill_9_during_a_group_then_the_same_command_finishes_every_seed_once(tmp_path):
    sets = ["--set", "train.steps=40", "--set", "run.checkpoint_every=2", "--set", "run.log_every=1"]
    straight = subprocess.run(_cli(*sets, "--seeds", "0,1,2", "--workdir", str(tmp_path / "straight-s{seed}"),
                                   "--json"), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    reference = json.loads(straight.stdout)
    assert [s["status"] for s in reference] == ["done"] * 3

    command = _cli(*sets, "--seeds", "0,1,2", "--workdir", str(tmp_path / "run-s{seed}"), "--json")
    dirs = [tmp_path / f"run-s{k}" for k in range(3)]

    def newest(wd):
        return max([int(p.name) for p in (wd / "checkpoints").glob("*") if p.name.isdigit()], default=0)

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and min(newest(wd) for wd in dirs) < 6:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not any((wd / "summary.json").exists() for wd in dirs)
    # A kill between two seeds' saves leaves one seed a save behind: make it so, whatever the kill hit.
    shutil.rmtree(dirs[2] / "checkpoints" / str(newest(dirs[2])))
    common = newest(dirs[2])
    assert 0 < common < newest(dirs[0])

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from step {common}" in again.stderr  # the newest step every seed holds
    summaries = json.loads(again.stdout)
    for k, wd in enumerate(dirs):
        assert summaries[k]["status"] == "done" and read_json(wd / "summary.json") == summaries[k]
        rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss" in r] == list(range(1, 41))  # one run, no step twice
        assert sum("top1" in r and "loss" not in r for r in rows) == 1  # exactly one final evaluation
        assert np.allclose(_losses(wd), _losses(tmp_path / f"straight-s{k}"), atol=1e-6)
        assert summaries[k]["top1"] == pytest.approx(reference[k]["top1"])
