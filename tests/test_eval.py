"""Evaluation core: metrics, batch rounding, view checks, eval.json merging, and multi-view testing on a
hand-built model whose centre crop is wrong by construction (1x1 fails where 4x3 succeeds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vivit_cli.errors import VivitError
from vivit_cli.eval import metrics
from vivit_cli.eval.checks import check_clips_array, distinct_views
from vivit_cli.eval.forward import round_batch
from vivit_cli.eval.results import eval_key, merge_eval_json
from vivit_cli.interop.tree import flatten


# ---------------------------------------------------------------------------------------------------------
# pure functions


def test_average_views_is_the_mean_of_raw_logits_not_of_softmax():
    view_logits = np.array([[[3.0, 0.0], [0.0, 1.0], [0.0, 1.0]]], np.float32)  # one confident view vs two weak
    avg = metrics.average_views(view_logits)
    np.testing.assert_allclose(avg, [[1.0, 2 / 3]], rtol=1e-6)
    assert np.argmax(avg[0]) == 0
    assert np.argmax(metrics.softmax(view_logits[0]).mean(0)) == 1  # averaging softmax scores would differ here
    with pytest.raises(ValueError):
        metrics.average_views(np.zeros((2, 3)))


def test_topk_hits_and_ties_follow_argmax():
    logits = np.array([[1, 3, 2, 0], [5, 5, 1, 0], [0, 1, 2, 3]], np.float32)
    labels = np.array([1, 1, 0])
    assert metrics.topk_hits(logits, labels, 1).tolist() == [True, False, False]  # tie 0/1 goes to class 0
    assert metrics.topk_hits(logits, labels, 2).tolist() == [True, True, False]
    assert metrics.topk_hits(logits, labels, 4).tolist() == [True, True, True]
    assert metrics.topk_hits(logits, labels, 5).tolist() == [True, True, True]  # k > classes: all of them


def test_confusion_and_mean_class_accuracy():
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 0, 2])
    cm = metrics.confusion_matrix(preds, labels, 4)
    assert cm.tolist() == [[3, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # recalls 3/4, 1/1, 1/2; class 3 never occurs and is left out
    assert metrics.mean_class_accuracy(cm) == pytest.approx((0.75 + 1 + 0.5) / 3)
    logits = np.eye(4, dtype=np.float32)[preds]
    s = metrics.summarise(logits, labels, 4)
    assert s["top1"] == pytest.approx(5 / 7)
    assert s["mean_class_accuracy"] == pytest.approx((0.75 + 1 + 0.5) / 3)


def test_top_k_probabilities():
    idx, probs = metrics.top_k(np.array([[0.0, 2.0, 1.0]]), 2)
    assert idx.tolist() == [[1, 2]]
    e = np.exp([0.0, 2.0, 1.0])
    np.testing.assert_allclose(probs[0], e[[1, 2]] / e.sum(), rtol=1e-6)


@pytest.mark.parametrize("requested,shards,procs,expected", [(5, 1, 1, 5), (5, 8, 1, 8), (9, 8, 1, 16),
                                                              (3, 4, 2, 4), (6, 2, 4, 8), (1, 1, 1, 1)])
def test_batch_is_rounded_up_to_the_devices_not_refused(requested, shards, procs, expected):
    assert round_batch(requested, shards, procs) == expected


def test_round_batch_refuses_non_positive():
    with pytest.raises(VivitError, match="batch-size"):
        round_batch(0, 1, 1)


def test_distinct_views_rules():
    from vivit_cli import config

    cfg = config.build(["data.crop=32"])  # frames resized to a short side of 37 before 32 x 32 crops
    assert distinct_views(12, 36, 36, 8, (1, 1), cfg) is None
    assert distinct_views(12, 36, 36, 8, (5, 1), cfg) is None  # 4 frames of room: starts 0, 1, 2, 3, 4
    assert "at least 13 frames" in distinct_views(12, 36, 36, 8, (6, 1), cfg)
    assert distinct_views(12, 36, 36, 8, (4, 3), cfg) is None  # square: 5 px of room along the resized width
    assert distinct_views(8, 240, 320, 8, (1, 3), cfg) is None
    tight = config.build(["data.crop=32", "data.eval_resize=33"])
    assert distinct_views(12, 36, 36, 8, (1, 2), tight) is None  # 1 px of room: two crops
    assert "33x33" in distinct_views(12, 36, 36, 8, (1, 3), tight)
    assert distinct_views(12, 32, 40, 8, (1, 3), tight) is None  # 33 x 41 resized


def test_clip_array_checks():
    from vivit_cli import config

    cfg = config.build(["data.frames=4", "data.crop=16"])
    check_clips_array(np.zeros((2, 4, 16, 16, 3), np.float32), cfg, "x")
    for bad, msg in [(np.zeros((4, 16, 16, 3), np.float32), "rank 4"),
                     (np.zeros((2, 5, 16, 16, 3), np.float32), "5 frames"),
                     (np.zeros((2, 4, 16, 32, 3), np.float32), "16x32x3"),
                     (np.zeros((2, 4, 16, 16, 3), np.uint8), "uint8"),
                     (np.zeros((0, 4, 16, 16, 3), np.float32), "no clips")]:
        with pytest.raises(VivitError, match=msg):
            check_clips_array(bad, cfg, "x")


def test_eval_key_and_merge_keep_other_entries(tmp_path):
    assert eval_key("test", (4, 3)) == "test@4x3"
    assert eval_key("test", (4, 3), "embedded:motion", "embedded:motion") == "test@4x3"
    other = eval_key("test", (4, 3), "folder:/x", "embedded:motion")
    assert other.startswith("test@4x3+") and ":" not in other
    merge_eval_json(tmp_path, "val@1x1", {"top1": 0.5})
    merge_eval_json(tmp_path, "test@4x3", {"top1": 0.7})
    merge_eval_json(tmp_path, "val@1x1", {"top1": 0.6})
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data == {"val@1x1": {"top1": 0.6}, "test@4x3": {"top1": 0.7}}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no lock or temp file left behind


# ---------------------------------------------------------------------------------------------------------
# a model built by hand so that the centre crop of each video is misleading


def _colour_model(folder, data_dir, num_classes=2):
    """A ViViT whose logits say "red" or "green" from the mean colour of its input (blocks are identity,
    GAP classifier), saved as a converted checkpoint: config.json + params.safetensors."""
    import jax
    from safetensors.numpy import save_file

    from vivit_cli import config, models

    cfg = config.build(["model.hidden=8", "model.layers=1", "model.heads=2", "model.mlp=8", "model.classifier=gap",
                        "model.tubelet=2x8x8", "data.frames=4", "data.crop=16", f"data.source=npy:{data_dir}",
                        "data.eval_split=test", "data.eval_views=1x1", f"data.num_classes={num_classes}"])
    params = jax.tree.map(lambda a: np.zeros(a.shape, np.float32), models.param_shapes(cfg, num_classes))
    k = params["embedding"]["kernel"]  # [t, h, w, 3, D]: a token's dims 0/1 = its mean red/green
    k[..., 0, 0] = k[..., 1, 1] = 1.0 / np.prod(k.shape[:3])
    params["Transformer"]["encoder_norm"]["scale"][:] = 1.0
    w = params["output_projection"]["kernel"]
    w[0, 0], w[1, 0], w[0, 1], w[1, 1] = 1.0, -1.0, -1.0, 1.0  # class 0 = red, class 1 = green

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(config.to_json(cfg))
    save_file(flatten(params), str(folder / "params.safetensors"))
    return cfg, params


def _striped_videos(folder):
    """Two videos 48 px wide in thirds: red|green|red (label red) and green|red|green (label green).
    The centre crop (1x1 views) shows the wrong colour; 3 crops out-vote it."""
    red, green = np.array([255, 0, 0], np.uint8), np.array([0, 255, 0], np.uint8)
    v = np.zeros((2, 12, 16, 48, 3), np.uint8)
    for i, (edge, centre) in enumerate([(red, green), (green, red)]):
        v[i, :, :, :16] = edge
        v[i, :, :, 16:32] = centre
        v[i, :, :, 32:] = edge
    np.save(folder / "test_video.npy", v)
    np.save(folder / "test_label.npy", np.array([0, 1], np.int32))
    (folder / "label_names.txt").write_text("red\ngreen\n")


@pytest.mark.slow
def test_one_view_wrong_1x1_fails_and_4x3_recovers(tmp_path, capsys):
    import orbax.checkpoint as ocp

    from vivit_cli.cli.app import main

    data_dir, ckpt = tmp_path / "data", tmp_path / "ckpt"
    data_dir.mkdir()
    _striped_videos(data_dir)
    _, params = _colour_model(ckpt, data_dir)

    def run(*args):
        capsys.readouterr()
        assert main(["eval", *map(str, args), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    single = run(ckpt, "--views", "1x1")
    multi = run(ckpt, "--views", "4x3", "--save-logits", tmp_path / "l.npz")
    temporal_only = run(ckpt, "--views", "4x1")
    assert single["top1"] == 0.0 and temporal_only["top1"] == 0.0  # the centre crop is wrong in every clip
    assert multi["top1"] == 1.0 and multi["mean_class_accuracy"] == 1.0
    assert (multi["videos"], multi["views_per_video"], multi["clips"]) == (2, 12, 24)
    saved = np.load(tmp_path / "l.npz", allow_pickle=False)
    view_logits = saved["view_logits"]  # [2 videos, 12 views, 2 classes]; views are t-major, then crops
    assert view_logits.shape == (2, 12, 2)
    # each view alone: edges say the true class, the centre crop the other one, for every temporal clip
    per_view = view_logits.argmax(-1).reshape(2, 4, 3)
    assert (per_view[0] == [0, 1, 0]).all() and (per_view[1] == [1, 0, 1]).all()
    np.testing.assert_allclose(saved["logits"], view_logits.mean(1), rtol=1e-6)
    evals = json.loads((ckpt / "eval.json").read_text())
    assert set(evals) == {"test@1x1", "test@4x3", "test@4x1"}  # each evaluation kept under its own key

    # The same weights as a params-only Orbax folder (config.json + params/) give the same logits.
    orbax_dir = tmp_path / "orbax"
    orbax_dir.mkdir()
    (orbax_dir / "config.json").write_text((ckpt / "config.json").read_text())
    with ocp.PyTreeCheckpointer() as c:
        c.save((orbax_dir / "params").absolute(), params)
    again = run(orbax_dir, "--views", "4x3", "--save-logits", tmp_path / "l2.npy")
    assert again["top1"] == 1.0
    np.testing.assert_array_equal(np.load(tmp_path / "l2.npy"), saved["logits"])
