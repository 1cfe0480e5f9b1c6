"""Scenic ViViT checkpoints: no package is published, so the trees here are written by hand from the documented
layout (shared/reference/anchors.md 1.4: names, shapes and the param counts of its tiny config: D=32, 4 heads,
mlp 64, 8x16x16 clips, tubelet 2x4x4, 5 classes) and serialised as `flax.training.checkpoints` does.

The bar: a random tree round-tripped through the converter gives exactly the logits our model gives on the
tree itself, for all four variants, both embeddings, token and gap.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vivit_cli.errors import VivitError

D, HEADS, MLP, CLASSES = 32, 4, 64, 5


def _ln(rng):
    return {"scale": 1 + 0.1 * rng.normal(size=D), "bias": 0.1 * rng.normal(size=D)}


def _attn(rng):
    qkv = lambda: {"kernel": rng.normal(0, D ** -0.5, (D, HEADS, D // HEADS)),  # noqa: E731
                   "bias": 0.1 * rng.normal(size=(HEADS, D // HEADS))}
    return {"query": qkv(), "key": qkv(), "value": qkv(),
            "out": {"kernel": rng.normal(0, D ** -0.5, (HEADS, D // HEADS, D)), "bias": 0.1 * rng.normal(size=D)}}


def _mlp(rng):
    return {"Dense_0": {"kernel": rng.normal(0, D ** -0.5, (D, MLP)), "bias": 0.1 * rng.normal(size=MLP)},
            "Dense_1": {"kernel": rng.normal(0, MLP ** -0.5, (MLP, D)), "bias": 0.1 * rng.normal(size=D)}}


def _encoder(rng, layers, tokens, block="joint"):
    enc = {"posembed_input": {"pos_embedding": 0.1 * rng.normal(size=(1, tokens, D))}, "encoder_norm": _ln(rng)}
    for i in range(layers):
        if block == "fsa":  # model 3: note MlpBlock without the _0 suffix
            enc[f"encoderblock_{i}"] = {"LayerNorm_time": _ln(rng), "MultiHeadDotProductAttention_time": _attn(rng),
                                        "LayerNorm_space": _ln(rng), "MultiHeadDotProductAttention_space": _attn(rng),
                                        "LayerNorm_mlp": _ln(rng), "MlpBlock": _mlp(rng)}
        else:
            enc[f"encoderblock_{i}"] = {"LayerNorm_0": _ln(rng), "MultiHeadDotProductAttention_0": _attn(rng),
                                        "LayerNorm_1": _ln(rng), "MlpBlock_0": _mlp(rng)}
    return enc


def scenic_tree(kind: str, classifier: str, embedding: str = "3d_conv", classes: int = CLASSES, seed: int = 0,
                temporal_layers: int = 1) -> dict:
    """A Scenic param tree: kind = spacetime | factorized_encoder | factorized_self_attention_block |
    factorized_dot_product_attention, for 8x16x16 clips (4x4 spatial patches; tubelet t=2 or frame sampling)."""
    rng = np.random.default_rng(seed)
    token = classifier == "token"
    if embedding == "3d_conv":
        kernel, nt = rng.normal(0, 0.1, (2, 4, 4, 3, D)), 4  # (ft, fh, fw, C, D) for patches.size (4, 4, 2)
    else:  # temporal_sampling of 4 frames: a 2-D kernel
        kernel, nt = rng.normal(0, 0.1, (4, 4, 3, D)), 4
    tree = {"embedding": {"kernel": kernel, "bias": 0.1 * rng.normal(size=D)},
            "output_projection": {"kernel": rng.normal(0, 0.3, (D, classes)), "bias": 0.1 * rng.normal(size=classes)}}
    if kind == "factorized_encoder":
        tree["SpatialTransformer"] = _encoder(rng, 2, 16 + token)
        if temporal_layers:
            tree["TemporalTransformer"] = _encoder(rng, temporal_layers, nt + token)
        if token:
            tree["cls_SpatialTransformer"] = 0.1 * rng.normal(size=(1, 1, D))
            if temporal_layers:
                tree["cls_TemporalTransformer"] = 0.1 * rng.normal(size=(1, 1, D))
    else:
        block = "fsa" if kind == "factorized_self_attention_block" else "joint"
        tree["Transformer"] = _encoder(rng, 2, nt * 16 + token, block)
        if token:
            tree["cls"] = 0.1 * rng.normal(size=(1, 1, D))
    return _f32(tree)


def _f32(tree):
    return {k: _f32(v) if isinstance(v, dict) else np.asarray(v, np.float32) for k, v in tree.items()}


def _count(tree):
    return sum(_count(v) if isinstance(v, dict) else v.size for v in tree.values())


def write_checkpoint(path, params, layout="old"):
    """As `flax.training.checkpoints.save_checkpoint` writes a train state: msgpack of its state dict."""
    from flax.serialization import msgpack_serialize

    if layout == "old":  # flax.optim era: TrainState(optimizer=Optimizer(target=params, state=...), ...)
        state = {"optimizer": {"target": params, "state": {"step": np.int32(7), "param_states": {}}},
                 "model_state": {}, "global_step": np.int32(7), "rng": np.zeros(2, np.uint32),
                 "accum_train_time": 12.5}
    else:
        state = {"params": params, "opt_state": {}, "global_step": np.int32(7)}
    path.write_bytes(msgpack_serialize(state))
    return path


# (Scenic kind, classifier, embedding, --set, our config, documented param count or None)
CASES = {
    "model1-token": ("spacetime", "token", "3d_conv", ["data.crop=16"],
                     ["model.variant=spatio_temporal", "model.classifier=token"], 22533),
    "model1-frames-gap": ("spacetime", "gap", "temporal_sampling", ["data.frames=4"],
                          ["model.variant=spatio_temporal", "model.classifier=gap", "model.embedding=uniform_frame",
                           "model.tubelet=1x4x4", "data.frames=4"], None),
    "model2-token": ("factorized_encoder", "token", "3d_conv", [],
                     ["model.variant=factorised_encoder", "model.classifier=token", "model.temporal_layers=1"], 29797),
    "model2-gap": ("factorized_encoder", "gap", "3d_conv", [],
                   ["model.variant=factorised_encoder", "model.classifier=gap", "model.temporal_layers=1"], None),
    "model3": ("factorized_self_attention_block", "gap", "3d_conv", ["data.frames=8"],
               ["model.variant=factorised_self_attention", "model.attention_order=time_space"], 31045),
    "model4": ("factorized_dot_product_attention", "gap", "3d_conv", ["data.crop=16", "model.variant=4"],
               ["model.variant=factorised_dot_product"], 22469),
}
BASE = ["model.hidden=32", "model.layers=2", "model.heads=4", "model.mlp=64", "model.tubelet=2x4x4",
        "data.frames=8", "data.crop=16"]


def _logits(cfg, params, x):
    from vivit_cli import models

    return np.asarray(models.build_model(cfg, cfg.data.num_classes or CLASSES).apply({"params": params}, x))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_reproduces_our_logits(name, tmp_path):
    from vivit_cli import config, interop
    from vivit_cli.runtime import checkpoint

    kind, classifier, embedding, sets, ours, count = CASES[name]
    tree = scenic_tree(kind, classifier, embedding, seed=len(name))
    if count is not None:
        assert _count(tree) == count  # the hand-written tree is the documented one
    layout = "old" if name.endswith(("token", "3")) else "new"
    ck = write_checkpoint(tmp_path / "checkpoint_7", tree, layout)
    summary = interop.convert_scenic(tmp_path, tmp_path / "out", sets)  # the folder: newest checkpoint_<step>
    cfg_conv, params_conv = checkpoint.load(tmp_path / "out")

    want_cfg = config.build(BASE + ours + [f"data.num_classes={CLASSES}"])
    for section, key in [("model", k) for k in ("variant", "classifier", "embedding", "tubelet", "hidden", "layers",
                                               "heads", "mlp", "temporal_layers", "attention_order")] + \
                        [("data", "frames"), ("data", "crop"), ("data", "num_classes")]:
        assert getattr(getattr(cfg_conv, section), key) == getattr(getattr(want_cfg, section), key), key
    x = np.random.default_rng(5).uniform(-1, 1, (2, want_cfg.data.frames, 16, 16, 3)).astype(np.float32)
    want = _logits(want_cfg, tree, x)  # our model straight on the Scenic tree
    got = _logits(cfg_conv, params_conv, x)
    assert np.abs(want).max() > 0.1  # not a zero head
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    prov = json.loads((tmp_path / "out" / "interop.json").read_text())
    assert prov["params_at"] == ("optimizer/target" if layout == "old" else "params")
    assert prov["file"] == str(ck)
    assert summary["config_hash"] == config.config_hash(cfg_conv)


@pytest.mark.slow
def test_average_pool_baseline_needs_frames(tmp_path):
    from vivit_cli import interop
    from vivit_cli.runtime import checkpoint

    write_checkpoint(tmp_path / "ck", scenic_tree("factorized_encoder", "gap", temporal_layers=0))
    with pytest.raises(VivitError, match="data.frames: cannot be inferred"):
        interop.convert_scenic(tmp_path / "ck", tmp_path / "out")
    interop.convert_scenic(tmp_path / "ck", tmp_path / "out", ["data.frames=8"])
    cfg, _ = checkpoint.load(tmp_path / "out")
    assert (cfg.model.variant, cfg.model.temporal_layers, cfg.data.frames) == ("factorised_encoder", 0, 8)


def test_epic_kitchens_heads(tmp_path):
    """One output_projection of 300 noun + 97 verb logits: a two-head model (verb then noun), or one group."""
    from vivit_cli import interop
    from vivit_cli.runtime import checkpoint

    tree = scenic_tree("factorized_encoder", "token", classes=397)
    write_checkpoint(tmp_path / "ck", tree)
    interop.convert_scenic(tmp_path / "ck", tmp_path / "both")
    labels = (tmp_path / "both" / "labels.txt").read_text().split()
    # Both heads, moved to the epic: source's order: verbs, then nouns.
    assert len(labels) == 397 and labels[0] == "verb/0" and labels[97] == "noun/0" and labels[-1] == "noun/299"
    cfg, params = checkpoint.load(tmp_path / "both")
    assert cfg.data.heads == "verb:97,noun:300" and cfg.data.num_classes == 397
    kernel = tree["output_projection"]["kernel"]
    np.testing.assert_array_equal(params["output_projection"]["kernel"], np.concatenate([kernel[:, 300:],
                                                                                         kernel[:, :300]], axis=1))
    interop.convert_scenic(tmp_path / "ck", tmp_path / "verb", head="verb")
    cfg, params = checkpoint.load(tmp_path / "verb")
    assert cfg.data.num_classes == 97
    np.testing.assert_array_equal(params["output_projection"]["kernel"], tree["output_projection"]["kernel"][:, 300:])
    assert (tmp_path / "verb" / "labels.txt").read_text().split()[0] == "verb/0"
    with pytest.raises(VivitError, match="--head action: the checkpoint's heads are noun, verb"):
        interop.convert_scenic(tmp_path / "ck", tmp_path / "x", head="action")
    with pytest.raises(VivitError, match="sum to the head's 397"):
        interop.convert_scenic(tmp_path / "ck", tmp_path / "x", class_splits=[300, 90])


def test_bad_files_are_one_line_errors(tmp_path):
    from flax.serialization import msgpack_serialize

    from vivit_cli import interop

    good = msgpack_serialize({"optimizer": {"target": scenic_tree("spacetime", "token")}})
    cases = {
        "truncated": (good[: len(good) // 2], "truncated"),
        "text": (b"this is not a checkpoint\n", "not a Flax msgpack checkpoint"),
        "zip": (b"PK\x03\x04" + b"\0" * 40, "zip archive"),
        "list": (msgpack_serialize([1, 2, 3]), "not a Flax checkpoint"),
        "empty": (b"", "empty file"),
        "other": (msgpack_serialize({"params": {"conv1": {"kernel": np.zeros((3, 3), np.float32)}}}),
                  "unknown param layout: no embedding under optimizer/target or params"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VivitError, match=message) as e:
            interop.convert_scenic(tmp_path / name, tmp_path / "out", ["data.crop=16"])
        assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_contradictions_and_ambiguity_name_the_key(tmp_path):
    from vivit_cli import interop

    tree = scenic_tree("spacetime", "token")
    write_checkpoint(tmp_path / "ck", tree)
    with pytest.raises(VivitError, match=r"data.frames, data.crop: .*pos_embedding holds 64 tokens.*8/16"):
        interop.convert_scenic(tmp_path / "ck", tmp_path / "out")
    with pytest.raises(VivitError, match=r"--set data.frames=16 contradicts Transformer/posembed_input/pos_embedding"):
        interop.convert_scenic(tmp_path / "ck", tmp_path / "out", ["data.frames=16", "data.crop=16"])
    with pytest.raises(VivitError, match=r"--set model.hidden=64 contradicts the checkpoint: embedding/kernel"):
        interop.convert_scenic(tmp_path / "ck", tmp_path / "out", ["data.crop=16", "model.hidden=64"])
    with pytest.raises(VivitError, match=r"--set model.variant=factorised_encoder contradicts the checkpoint"):
        interop.convert_scenic(tmp_path / "ck", tmp_path / "out", ["data.crop=16", "model.variant=2"])
    with pytest.raises(VivitError, match=r"model.size=L contradicts"):
        interop.convert_scenic(tmp_path / "ck", tmp_path / "out", ["data.crop=16", "model.size=L"])
    del tree["Transformer"]["encoderblock_1"]["LayerNorm_1"]
    write_checkpoint(tmp_path / "ck2", tree)
    with pytest.raises(VivitError, match=r"the checkpoint has no Transformer/encoderblock_1/LayerNorm_1/bias"):
        interop.convert_scenic(tmp_path / "ck2", tmp_path / "out", ["data.crop=16"])
    tree = scenic_tree("spacetime", "token")
    tree["pre_logits"] = {"kernel": np.zeros((D, D), np.float32), "bias": np.zeros(D, np.float32)}
    write_checkpoint(tmp_path / "ck3", tree)
    with pytest.raises(VivitError, match="pre_logits"):
        interop.convert_scenic(tmp_path / "ck3", tmp_path / "out", ["data.crop=16"])


@pytest.mark.slow
def test_cli_convert_scenic_then_predict(tmp_path, cli):
    """vivit convert scenic + vivit predict --array reproduce our model's logits on the Scenic tree."""
    from vivit_cli import config

    tree = scenic_tree("factorized_encoder", "token", seed=11)
    write_checkpoint(tmp_path / "ck", tree)
    r = cli("convert", "scenic", str(tmp_path / "ck"), "--out", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["input"] == "8x16x16" and summary["num_classes"] == CLASSES
    x = np.random.default_rng(2).uniform(-1, 1, (3, 8, 16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli("predict", str(tmp_path / "out"), "--array", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"))
    assert r.returncode == 0, r.stderr
    want = _logits(config.build(BASE + CASES["model2-token"][4] + [f"data.num_classes={CLASSES}"]), tree, x)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, atol=1e-5, rtol=0)
    (tmp_path / "bad").write_bytes((tmp_path / "ck").read_bytes()[:500])
    r = cli("convert", "scenic", str(tmp_path / "bad"), "--out", str(tmp_path / "out2"))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "truncated" in r.stderr and r.stderr.count("\n") == 1


def test_convert_help_does_not_import_jax():
    import subprocess
    import sys

    code = ("import sys; from vivit_cli.cli.app import main; rc = main(['convert', '--help']); "
            "bad = [m for m in ('jax', 'flax', 'optax', 'orbax', 'tensorflow', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad or rc else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_epic_kitchens_checkpoint_evaluates_as_two_heads(tmp_path):
    """The converted 397-way checkpoint scores a two-head (verb, noun) source: its verb, noun and action top-1 are
    what the Scenic tree's own logits give with Scenic's split (nouns = columns 0-299, verbs = 300-396)."""
    from vivit_cli import config, interop
    from vivit_cli.eval.run import evaluate_checkpoint

    tree = scenic_tree("factorized_encoder", "token", classes=397)
    write_checkpoint(tmp_path / "ck", tree)
    interop.convert_scenic(tmp_path / "ck", tmp_path / "ek", ["data.frames=8", "data.crop=16"])
    # Clips of one colour each: any resize or crop gives the same pixels, so the expected logits are exact.
    colours = np.random.default_rng(1).integers(0, 256, (6, 3))
    video = np.broadcast_to(colours[:, None, None, None, :], (6, 8, 16, 16, 3)).astype(np.uint8)
    cfg = config.build(BASE + ["model.variant=factorised_encoder", "model.classifier=token",
                               "model.temporal_layers=1", "data.num_classes=397"])
    logits = _logits(cfg, tree, video.astype(np.float32) / 127.5 - 1)
    verb, noun = logits[:, 300:].argmax(1), logits[:, :300].argmax(1)
    verb_ok, noun_ok = np.arange(6) % 2 == 0, np.arange(6) % 3 != 0
    labels = np.stack([np.where(verb_ok, verb, (verb + 1) % 97), np.where(noun_ok, noun, (noun + 1) % 300)], 1)
    np.savez(tmp_path / "ek.npz", test_video=video, test_label=labels.astype(np.int32),
             head_names=np.array(["verb", "noun"]), head_sizes=np.array([97, 300]))
    run = evaluate_checkpoint(tmp_path / "ek", data=f"npy:{tmp_path / 'ek.npz'}", split="test", views="1x1")
    e = run.entry
    assert (e["verb_top1"], e["noun_top1"]) == (0.5, pytest.approx(4 / 6))
    assert e["top1"] == e["action_top1"] == pytest.approx(2 / 6)  # clips 2 and 4: both heads right
    with pytest.raises(VivitError, match="has one head, the model has verb:97,noun:300"):
        np.savez(tmp_path / "one.npz", test_video=video, test_label=labels[:, 0].astype(np.int32))
        evaluate_checkpoint(tmp_path / "ek", data=f"npy:{tmp_path / 'one.npz'}", split="test", views="1x1")
