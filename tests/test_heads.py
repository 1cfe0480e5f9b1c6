"""Multi-head models (Epic-Kitchens: verb and noun heads side by side in one output projection): the loss, the action
metric, the predictions file and the report, checked on hand-made logits with known answers; then a two-head
smoke run end to end through `vivit train`, `vivit eval` and `vivit report`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from vivit_cli.errors import VivitError

SIZES = (2, 3)  # verb 2 classes, noun 3: logits [B, 5] = verb's 2 then noun's 3
HEADS = (("verb", 2), ("noun", 3))

# Four clips. Best verb / best noun per clip: (0, 2), (1, 0), (0, 1), (1, 1).
# No two (verb, noun) pairs of a clip have the same logit sum, so the joint ranking has no ties.
LOGITS = np.array([[2.0, 0.5, 0.0, 1.0, 3.0],
                   [0.0, 1.0, 2.0, 0.0, 0.3],
                   [5.0, 1.0, 0.5, 4.0, 1.5],
                   [0.0, 3.0, 1.0, 2.0, 0.0]], np.float32)
# Clip 0: both right; clip 1: verb right, noun wrong; clip 2: verb wrong, noun right; clip 3: both right.
LABELS = np.array([[0, 2], [1, 1], [1, 1], [1, 1]], np.int32)


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    return z - z.max() - math.log(np.exp(z - z.max()).sum())


def _ce(z, label, n, smoothing=0.0):
    target = np.full(n, smoothing / n)
    target[label] += 1 - smoothing
    return float(-(target * _log_softmax(z)).sum())


def test_two_head_loss_is_the_mean_of_the_heads_smoothed_cross_entropies():
    import jax.numpy as jnp

    from vivit_cli.train import losses

    for smoothing in (0.0, 0.2):
        want = np.mean([np.mean([_ce(row[:2], lab[0], 2, smoothing) for row, lab in zip(LOGITS, LABELS)]),
                        np.mean([_ce(row[2:], lab[1], 3, smoothing) for row, lab in zip(LOGITS, LABELS)])])
        targets = losses.multi_head_targets(jnp.asarray(LABELS), SIZES, smoothing)
        # Each head's target sums to 1, smoothing spread over that head's classes only.
        np.testing.assert_allclose(np.asarray(targets)[:, :2].sum(1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(targets)[0], [1 - smoothing / 2, smoothing / 2, smoothing / 3,
                                                            smoothing / 3, 1 - 2 * smoothing / 3], rtol=1e-6)
        got = float(losses.multi_head_xent(jnp.asarray(LOGITS), targets, SIZES))
        assert got == pytest.approx(want, rel=1e-5)


def test_mixup_mixes_every_head_with_the_clips_lambda():
    import jax
    import jax.numpy as jnp

    from vivit_cli.train import losses

    targets = losses.multi_head_targets(jnp.asarray(LABELS), SIZES, 0.0)
    video = jnp.arange(4.0).reshape(4, 1)
    mixed_video, mixed, lam = losses.mixup(jax.random.key(3), video, targets, 0.1)
    lam = float(lam)
    np.testing.assert_allclose(np.asarray(mixed_video)[:, 0], lam * np.arange(4) + (1 - lam) * np.arange(4)[::-1],
                               rtol=1e-6)
    # Clip 0 is mixed with clip 3: verb 0 with verb 1, noun 2 with noun 1.
    np.testing.assert_allclose(np.asarray(mixed)[0], [lam, 1 - lam, 0, 1 - lam, lam], rtol=1e-6)
    loss = float(losses.multi_head_xent(jnp.asarray(LOGITS), mixed, SIZES))
    lp = [np.concatenate([_log_softmax(r[:2]), _log_softmax(r[2:])]) for r in LOGITS]
    want = np.mean([-(np.asarray(mixed)[i, :2] * lp[i][:2]).sum() for i in range(4)]) / 2 + \
        np.mean([-(np.asarray(mixed)[i, 2:] * lp[i][2:]).sum() for i in range(4)]) / 2
    assert loss == pytest.approx(want, rel=1e-5)


def _brute_joint_top5(logits):
    """Every (verb, noun) pair ranked by the product of the heads' softmax probabilities, coded verb * 3 + noun."""
    out = []
    for row in logits:
        pv, pn = np.exp(_log_softmax(row[:2])), np.exp(_log_softmax(row[2:]))
        joint = {v * 3 + n: pv[v] * pn[n] for v in range(2) for n in range(3)}
        out.append(sorted(joint, key=lambda c: (-joint[c], c))[:5])
    return np.array(out)


def test_action_metric_on_hand_made_logits():
    import jax.numpy as jnp

    from vivit_cli.eval import metrics
    from vivit_cli.train import losses

    np.testing.assert_array_equal(np.asarray(losses.action_correct(jnp.asarray(LOGITS), jnp.asarray(LABELS), SIZES)),
                                  [1, 0, 0, 1])
    np.testing.assert_array_equal(metrics.action_hits(LOGITS, LABELS, HEADS), [True, False, False, True])
    want = _brute_joint_top5(LOGITS)
    np.testing.assert_array_equal(metrics.joint_top_k(LOGITS, HEADS, 5), want)
    np.testing.assert_array_equal(np.asarray(losses.joint_topk(jnp.asarray(LOGITS), SIZES, 5)), want)
    np.testing.assert_array_equal(metrics.action_codes(LABELS, HEADS), [2, 4, 4, 4])

    s = metrics.summarise_heads(LOGITS, LABELS, HEADS)
    assert s["top1"] == s["action_top1"] == 0.5
    assert s["verb_top1"] == 0.75 and s["noun_top1"] == 0.75
    assert s["action_top5"] == np.mean([c in row for c, row in zip([2, 4, 4, 4], want)])
    # Mean class accuracy of the action: classes 2 (1 of 1 right) and 4 (1 of 3 right).
    assert s["action_mean_class_accuracy"] == pytest.approx((1 + 1 / 3) / 2)
    assert s["confusion"].shape == (2, 2)  # the first head's (the source's label_names are its names)


def test_eval_step_two_heads_counts_the_action():
    """The trainer's eval step on a model whose logits are LOGITS: action sums, per-head sums, best classes."""
    import jax.numpy as jnp

    from vivit_cli.train import step

    class Fixed:
        def apply(self, variables, video, train=False):
            return jnp.asarray(LOGITS)

    mask = np.array([True, True, True, False])  # the last clip is padding
    out = step.eval_step({}, {"video": np.zeros((4, 1, 1, 1, 1, 3), np.float32), "label": LABELS, "mask": mask,
                              "index": np.arange(4, dtype=np.int32)}, model=Fixed(), heads=SIZES)
    assert float(out["top1"]) == 1.0 and float(out["count"]) == 3.0
    np.testing.assert_array_equal(np.asarray(out["head_top1"]), [2.0, 2.0])
    np.testing.assert_array_equal(np.asarray(out["topk"])[0], [[0, 1], [2, 1]])
    np.testing.assert_array_equal(np.asarray(out["action_topk"]), _brute_joint_top5(LOGITS))


def test_heads_config(tmp_path):
    from vivit_cli import config

    assert config.parse_heads("verb:97,noun:300") == (("verb", 97), ("noun", 300))
    assert config.format_heads((("label", 5),)) == ""
    cfg = config.build(["data.heads=verb:97,noun:300", "data.num_classes=397"])
    assert config.head_sizes(cfg) == (97, 300)
    # A single-head config hashes as it did before heads existed (run ids of existing run stores stay).
    assert config.config_hash(config.build([])) == "7d72f82fac"
    for bad, match in (("verb:0,noun:3", "positive sizes"), ("verb:2", "one head"), ("a:2,a:3", "comes twice")):
        with pytest.raises(VivitError, match=match):
            config.build([f"data.heads={bad}"])
    with pytest.raises(VivitError, match="sum to 397, data.num_classes is 5"):
        config.build(["data.heads=verb:97,noun:300", "data.num_classes=5"])


def test_predictions_file_gives_the_action_hits_to_the_report(tmp_path):
    from vivit_cli.eval import metrics
    from vivit_cli.eval.results import write_predictions
    from vivit_cli.report.store import read_predictions

    top5 = np.stack([np.argsort(-part, axis=1, kind="stable")[:, :2] for part in metrics.split_heads(LOGITS, HEADS)],
                    axis=1)
    rel = write_predictions(tmp_path, "val@1x1", index=np.array([3, 0, 1, 2]), label=LABELS[[3, 0, 1, 2]],
                            top5=top5[[3, 0, 1, 2]], action_top5=_brute_joint_top5(LOGITS)[[3, 0, 1, 2]],
                            head_sizes=SIZES)
    pred = read_predictions(str(tmp_path), rel)
    np.testing.assert_array_equal(pred["index"], [0, 1, 2, 3])
    np.testing.assert_array_equal(pred["hit1"], [True, False, False, True])
    np.testing.assert_array_equal(pred["classes"], [2, 4, 4, 4])
    want5 = [c in row for c, row in zip([2, 4, 4, 4], _brute_joint_top5(LOGITS))]
    np.testing.assert_array_equal(pred["hit5"], want5)


def _two_head_npz(path: Path, seed: int = 0) -> Path:
    """Clips whose red level is the verb and green level the noun: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    arrays = {"head_names": np.array(["verb", "noun"]), "verb_label_names": np.array(["take", "put"]),
              "noun_label_names": np.array(["cup", "plate", "door"])}
    for split, n in (("train", 48), ("val", 12), ("test", 12)):
        labels = np.stack([rng.integers(0, 2, n), rng.integers(0, 3, n)], 1).astype(np.int32)
        video = rng.integers(0, 30, (n, 12, 32, 32, 3), dtype=np.uint8)  # 12 frames: room for 2 clips of 8
        video[..., 0] += (100 * labels[:, 0]).astype(np.uint8)[:, None, None, None]
        video[..., 1] += (80 * labels[:, 1]).astype(np.uint8)[:, None, None, None]
        arrays[f"{split}_video"], arrays[f"{split}_label"] = video, labels
    np.savez(path, **arrays)
    return path


def test_npy_source_refuses_bad_heads(tmp_path):
    from vivit_cli.data.sources import open_source

    src = open_source(f"npy:{_two_head_npz(tmp_path / 'ok.npz')}")
    assert [(n, len(names)) for n, names in src.heads] == [("verb", 2), ("noun", 3)]
    with np.load(tmp_path / "ok.npz") as z:
        arrays = dict(z)
    arrays["val_label"] = arrays["val_label"].copy()
    arrays["val_label"][0, 1] = 3
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(VivitError, match="split val has noun class 3, outside its 3 classes"):
        open_source(f"npy:{tmp_path / 'bad.npz'}")
    del arrays["head_names"]
    np.savez(tmp_path / "nameless.npz", **arrays)
    with pytest.raises(VivitError, match="need head_names"):
        open_source(f"npy:{tmp_path / 'nameless.npz'}")


@pytest.mark.slow
def test_two_head_run_end_to_end(tmp_path, cli):
    """`vivit train --preset smoke` on a two-head source: summary.json, the predictions file and `vivit eval`'s
    eval.json carry verb, noun and action figures that agree with each other; `vivit report` shows the action."""
    data = _two_head_npz(tmp_path / "ek.npz")
    run = tmp_path / "results" / "regularisation" / "r0"
    env = {"VIVIT_CACHE": str(tmp_path / "cache")}
    p = cli("train", "--preset", "smoke", "--set", f"data.source=npy:{data}", "--set", "train.label_smoothing=0.2",
            "--set", "train.mixup=0.1", "--workdir", str(run), env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["heads"] == "verb:2,noun:3" and summary["num_classes"] == 5
    assert json.loads((run / "config.json").read_text())["data"]["heads"] == "verb:2,noun:3"
    with np.load(run / summary["predictions"]) as z:
        pred = dict(z)
    assert pred["label"].shape == (12, 2) and pred["top5"].shape == (12, 2, 2) and pred["action_top5"].shape == (12, 5)
    verb_hit, noun_hit = (pred["top5"][:, h, 0] == pred["label"][:, h] for h in (0, 1))
    assert summary["verb_top1"] == pytest.approx(verb_hit.mean())
    assert summary["noun_top1"] == pytest.approx(noun_hit.mean())
    assert summary["top1"] == summary["action_top1"] == pytest.approx((verb_hit & noun_hit).mean())

    from vivit_cli.eval.run import evaluate_checkpoint

    evaluate_checkpoint(run, split="test", views="2x1")  # what `vivit eval RUN --views 2x1` runs, in this process
    entry = json.loads((run / "eval.json").read_text())["test@2x1"]
    assert {"verb_top1", "noun_top1", "action_top1", "action_top5", "verb_mean_class_accuracy"} <= set(entry)
    assert entry["top1"] == entry["action_top1"] and entry["heads"] == "verb:2,noun:3"
    with np.load(run / entry["predictions"]) as z:
        ev = dict(z)
    assert entry["action_top1"] == pytest.approx((ev["top5"][:, :, 0] == ev["label"]).all(1).mean())

    (run / "cell.json").write_text(json.dumps({"grid": "regularisation", "table": "regularisation", "row": "+ Mixup",
                                               "column": "motion", "seed": 0, "run_id": "r0"}))
    p = cli("report", "-t", "regularisation", "--results", str(tmp_path / "results"), "-f", "json")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "top-1 is the action's" in p.stdout
    rep = json.loads(p.stdout)
    cell = next(r for r in rep["rows"] if r["row"] == "+ Mixup")
    assert json.dumps(cell).count(str(round(100 * summary["action_top1"], 1))) >= 1
    p = cli("report", "-t", "regularisation", "-r", str(tmp_path / "results"), "-f", "json",  # -r as sweep's
            "--accuracy", "verb_top1")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.dumps(next(r for r in json.loads(p.stdout)["rows"] if r["row"] == "+ Mixup")).count(
        str(round(100 * summary["verb_top1"], 1))) >= 1


def test_predict_names_the_best_actions():
    from vivit_cli.eval.predict import _top_actions

    tops = _top_actions(LOGITS, HEADS, 2, ["take", "put", "cup", "plate", "door"])
    best = tops[0][0]
    assert best["index"] == [0, 4] and best["label"] == "take + door"
    assert best["classes"] == {"verb": 0, "noun": 2}  # the class ids within each head, as the annotations number them
    want = np.exp(_log_softmax(LOGITS[0, :2])[0] + _log_softmax(LOGITS[0, 2:])[2])
    assert best["probability"] == pytest.approx(want, rel=1e-5)
    assert [t["label"] for t in tops[2]] == ["take + plate", "take + door"]  # clip 2: codes 1, then 2
