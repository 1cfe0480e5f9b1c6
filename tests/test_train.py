"""Fast unit tests of the training pieces (no training run)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vivit_cli.train.logs import MetricsLog, itstime
from vivit_cli.train.tasks import ArrayIterator, eval_batch_count
from vivit_cli.train.wandb_log import wandb_run_id


def test_itstime_logs_checkpoints_and_always_the_last_step():
    assert [s for s in range(1, 11) if itstime(s, 4, 10)] == [4, 8, 10]
    assert [s for s in range(1, 11) if itstime(s, 0, 10)] == [10]
    assert [s for s in range(1, 7) if itstime(s, 3, 6)] == [3, 6]


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    from vivit_cli.train.optim import cosine_with_warmup

    lr = cosine_with_warmup(0.1, steps=100, warmup_steps=10)
    warm = [float(lr(s)) for s in range(10)]
    assert np.allclose(np.diff(warm), 0.01, atol=1e-7) and warm[-1] == pytest.approx(0.1)
    assert float(lr(10)) == pytest.approx(0.1)
    assert float(lr(55)) == pytest.approx(0.05, abs=1e-6)  # half way through the cosine
    assert float(lr(100)) == pytest.approx(0.0, abs=1e-9)
    no_warm = cosine_with_warmup(1.0, steps=10, warmup_steps=0)
    assert float(no_warm(0)) == pytest.approx(1.0)


def test_label_smoothing_and_cross_entropy():
    import jax.numpy as jnp

    from vivit_cli.train import losses

    t = losses.smoothed_onehot(jnp.array([0, 2]), 4, 0.2)
    assert np.allclose(t.sum(-1), 1.0)
    assert float(t[0, 0]) == pytest.approx(0.85) and float(t[0, 1]) == pytest.approx(0.05)
    logits = jnp.array([[10.0, 0, 0, 0], [0, 0, 10.0, 0]])
    hard = float(losses.softmax_xent(logits, losses.smoothed_onehot(jnp.array([0, 2]), 4, 0.0)))
    soft = float(losses.softmax_xent(logits, t))
    assert hard < 1e-3 < soft  # smoothing penalises over-confident logits
    assert float(losses.softmax_xent(jnp.zeros((2, 4)), t)) == pytest.approx(np.log(4), rel=1e-6)


def test_mixup_mixes_clips_and_targets_with_the_same_lambda():
    import jax
    import jax.numpy as jnp

    from vivit_cli.train import losses

    video = jnp.stack([jnp.full((2, 4, 4, 3), float(i)) for i in range(4)])
    targets = jax.nn.one_hot(jnp.arange(4), 4)
    mixed, mt, lam = losses.mixup(jax.random.PRNGKey(3), video, targets, 0.4)
    lam = float(lam)
    assert 0.5 <= lam <= 1.0
    assert np.allclose(mixed[0], lam * 0 + (1 - lam) * 3, atol=1e-6)
    assert np.allclose(mt[0], [lam, 0, 0, 1 - lam], atol=1e-6)
    again, _, lam2 = losses.mixup(jax.random.PRNGKey(3), video, targets, 0.4)
    assert float(lam2) == lam and np.array_equal(again, mixed)


def test_topk_correct_clips_k_to_class_count():
    import jax.numpy as jnp

    from vivit_cli.train.losses import topk_correct

    scores = jnp.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    assert topk_correct(scores, jnp.array([1, 2]), 1).tolist() == [1.0, 0.0]
    assert topk_correct(scores, jnp.array([2, 1]), 2).tolist() == [1.0, 1.0]
    assert topk_correct(scores, jnp.array([0, 2]), 5).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_skips_biases_and_position_embeddings(name):
    import jax
    import jax.numpy as jnp

    from vivit_cli import config
    from vivit_cli.train.optim import make_optimizer

    cfg = config.build([f"train.optimizer={name}", "train.weight_decay=0.5", "train.warmup_steps=0",
                        "train.lr=0.1"])
    tx, _ = make_optimizer(cfg.train)
    params = {"Dense": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}, "pos_embedding": jnp.ones((1, 4, 3))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    assert float(jnp.abs(updates["Dense"]["kernel"]).max()) > 0
    assert float(jnp.abs(updates["Dense"]["bias"]).max()) == 0
    assert float(jnp.abs(updates["pos_embedding"]).max()) == 0


def test_array_iterator_global_batch_is_independent_of_shard_count_and_resumes_exactly():
    x = np.arange(50, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 3), np.float32)
    y = np.arange(50, dtype=np.int32)
    one = ArrayIterator(x, y, batch_size=8, seed=5)
    two = [ArrayIterator(x, y, batch_size=4, shard_index=i, shard_count=2, seed=5) for i in range(2)]
    for _ in range(9):  # crosses epoch boundaries (50 examples, 8 per batch)
        a = next(one)["label"]
        b = np.concatenate([next(t)["label"] for t in two])
        assert np.array_equal(a, b)
    state = json.loads(json.dumps(one.get_state()))
    expected = [next(one)["label"] for _ in range(3)]
    fresh = ArrayIterator(x, y, batch_size=8, seed=5)
    fresh.set_state(state)
    assert all(np.array_equal(next(fresh)["label"], e) for e in expected)
    assert next(ArrayIterator(x, y, batch_size=8, seed=5))["video"].shape == (8, 1, 2, 2, 3)


def test_eval_batch_count_covers_the_largest_shard():
    assert eval_batch_count(40, 8, 1) == 5
    assert eval_batch_count(41, 8, 1) == 6
    assert eval_batch_count(41, 4, 2) == 6  # shards of 21 and 20 clips
    assert eval_batch_count(0, 8, 1) == 1


def test_wandb_run_id_is_stable_and_valid():
    a = wandb_run_id("3f74ccb974-s0")
    assert a == wandb_run_id("3f74ccb974-s0") and a != wandb_run_id("3f74ccb974-s1")
    weird = wandb_run_id("grid/with spaces:and:colons" * 4)
    assert len(weird) <= 64 and all(c.isalnum() or c in "-_" for c in weird)


def test_metrics_log_drops_lines_past_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (5, 10, 15)) + '{"step": 20, "lo')
    log = MetricsLog(path, resume_step=10)
    log.write({"step": 11, "loss": float("nan")})
    log.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 11]
    assert rows[-1]["loss"] is None  # NaN is written as null: metrics.jsonl stays strict JSON


def test_image_config_is_a_one_frame_vit_of_the_same_transformer():
    from vivit_cli import config
    from vivit_cli.config import image_config

    cfg = config.build(["model.variant=factorised_encoder", "model.tubelet=4x8x8", "model.init=filter_inflation"])
    img = image_config(cfg)
    assert (img.data.frames, img.model.tubelet, img.model.embedding) == (1, "1x8x8", "uniform_frame")
    assert img.model.variant == "spatio_temporal" and img.model.classifier == "token"
    assert (img.model.hidden, img.model.layers, img.model.heads) == (cfg.model.hidden, cfg.model.layers,
                                                                     cfg.model.heads)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    def vivit(*args):
        return subprocess.run([sys.executable, "-m", "vivit_cli.cli.app", *args], capture_output=True, text=True,
                              timeout=60)

    r = vivit("train", "--set", "train.batch_size=0", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2 and r.stderr.startswith("error: train.batch_size=0")
    r = vivit("train", "--config", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "missing.json" in r.stderr and "Traceback" not in r.stderr
    r = vivit("train", "--wandb", "sometimes", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2 and "run.wandb" in r.stderr
    # A split the source lacks is refused before the first step, not found at the final eval.
    r = vivit("train", "--preset", "smoke", "--set", "data.eval_split=holdout", "--workdir", str(tmp_path / "h"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "data.eval_split=holdout" in r.stderr and "train, val, test" in r.stderr
    assert not (tmp_path / "h" / "checkpoints").exists()


def test_commands_that_compute_nothing_do_not_import_jax():
    code = ("import sys; from vivit_cli.cli import app; import vivit_cli.train, vivit_cli.cli.train; "
            "print(any(m in sys.modules for m in ('jax', 'flax', 'optax', 'orbax')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_wandb_online_without_a_key_is_a_one_line_error(tmp_path, monkeypatch):
    from vivit_cli import config
    from vivit_cli.errors import VivitError
    from vivit_cli.train.wandb_log import WandbLogger

    import wandb

    wandb.teardown()  # wandb keeps the settings (an API key) of an earlier test's run in this process
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_SERVICE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from a previous `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    cfg = config.build(["run.wandb=online"])
    with pytest.raises(VivitError, match="run.wandb=online"):
        WandbLogger(cfg, tmp_path, "abc")
    assert WandbLogger(config.build([]), tmp_path, "abc").run is None  # disabled: nothing imported or written


def test_stopwatch_laps_pauses_and_training_time():
    from vivit_cli.runtime.timing import Stopwatch

    now = [100.0]
    clock = Stopwatch(clips_per_step=8, seconds=5.0, now=lambda: now[0])  # 5 s carried over from a checkpoint
    clock.start(step=10)
    now[0] += 3.0  # the first step, which compiles: training time, but in no interval
    assert clock.lap(11, timed=False) == 0.0
    now[0] += 2.0  # 4 steps in 2 s
    assert clock.lap(15) == 4 * 8 / 2.0
    with clock.pause():  # an eval: neither training time nor a step's
        now[0] += 7.0
    with clock.pause(training=True):  # a checkpoint save: the run's time, but no step's
        now[0] += 1.0
    now[0] += 0.5  # 1 step in 0.5 s
    assert clock.lap(16) == 8 / 0.5
    assert clock.lap(16) == 0.0  # an empty lap
    assert clock.intervals == [(4, 2.0), (1, 0.5)]
    assert clock.train_seconds == 5.0 + 3.0 + 2.0 + 1.0 + 0.5



def test_image_config_reads_out_as_a_gap_grid_asks():
    """`--set model.classifier=gap` (Table 2 with one readout in every row) pretrains a gap image ViT; the default
    grids keep the class-token ViT, whatever models 3 and 4 (always gap) resolve to."""
    from vivit_cli import config
    from vivit_cli.config import image_config

    assert image_config(config.build(["model.classifier=gap"])).model.classifier == "gap"
    assert image_config(config.build([])).model.classifier == "token"
    assert image_config(config.build(["model.variant=factorised_self_attention"])).model.classifier == "token"
    assert (config.config_hash(image_config(config.build(["model.classifier=gap"])))
            != config.config_hash(image_config(config.build([]))))


def test_image_steps_sets_the_image_vits_schedule_alone():
    from vivit_cli import config
    from vivit_cli.config import image_config
    from vivit_cli.errors import VivitError

    base = config.build([])
    img = image_config(config.build(["train.image_steps=1200"]))
    assert (img.train.steps, img.train.warmup_steps, img.train.image_steps) == (1200, 120, 0)  # warmup's 10% kept
    assert image_config(base).train.steps == base.train.steps
    # At its default the key is left out of the hash: every run id made before it existed stays.
    assert config.config_hash(base) == config.config_hash(config.build(["train.image_steps=0"]))
    assert config.config_hash(config.build(["train.image_steps=600"])) != config.config_hash(base)
    with pytest.raises(VivitError, match="train.image_steps=-1"):
        config.build(["train.image_steps=-1"])
