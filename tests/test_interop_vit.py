"""Image ViTs in the vision_transformer / big_vision .npz layouts (and Scenic's ViT msgpack) -> our image model,
checked against an independent NumPy ViT that reads the source names, then used through model.init_from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vivit_cli.errors import VivitError

D, HEADS, MLP, P, SIDE, CLASSES = 16, 2, 32, 4, 3, 6  # 12x12 images, 3x3 patches of 4


def _rand_vit(layout: str, pool: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A flat .npz dict in the source's own names. layout: vit_jax | big_vision | scenic."""
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.normal(0, 0.3, s).astype(np.float32)  # noqa: E731
    names = {"vit_jax": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
             "big_vision": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
             "scenic": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")}[layout]
    token = pool == "token"
    flat = {"embedding/kernel": r(P, P, 3, D), "embedding/bias": r(D),
            "Transformer/encoder_norm/scale": 1 + r(D), "Transformer/encoder_norm/bias": r(D)}
    head = "output_projection" if layout == "scenic" else "head"
    flat[f"{head}/kernel"], flat[f"{head}/bias"] = r(D, CLASSES), r(CLASSES)
    if token:
        flat["cls"] = r(1, 1, D)
    if layout == "big_vision":  # added before the class token: no slot for it
        flat["pos_embedding"] = r(1, SIDE * SIDE, D)
    else:
        flat["Transformer/posembed_input/pos_embedding"] = r(1, SIDE * SIDE + token, D)
    for i in range(2):
        b = f"Transformer/encoderblock_{i}"
        ln0, attn, ln1, mlp = names
        for ln in (ln0, ln1):
            flat[f"{b}/{ln}/scale"], flat[f"{b}/{ln}/bias"] = 1 + r(D), r(D)
        for proj in ("query", "key", "value"):
            flat[f"{b}/{attn}/{proj}/kernel"] = r(D, HEADS, D // HEADS)
            flat[f"{b}/{attn}/{proj}/bias"] = r(HEADS, D // HEADS)
        flat[f"{b}/{attn}/out/kernel"], flat[f"{b}/{attn}/out/bias"] = r(HEADS, D // HEADS, D), r(D)
        flat[f"{b}/{mlp}/Dense_0/kernel"], flat[f"{b}/{mlp}/Dense_0/bias"] = r(D, MLP), r(MLP)
        flat[f"{b}/{mlp}/Dense_1/kernel"], flat[f"{b}/{mlp}/Dense_1/bias"] = r(MLP, D), r(D)
    return flat


def _reference_logits(flat: dict, layout: str, pool: str, images: np.ndarray) -> np.ndarray:
    """A plain NumPy ViT forward pass written from the source's semantics and names, not from our model."""
    ln0, attn, ln1, mlp = {"vit_jax": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
                           }.get(layout, ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"))
    g = lambda name: flat[name].astype(np.float64)  # noqa: E731

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * g(f"{name}/scale") + g(f"{name}/bias")

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    out = []
    for img in images.astype(np.float64):
        patches = img.reshape(SIDE, P, SIDE, P, 3).transpose(0, 2, 1, 3, 4).reshape(SIDE * SIDE, -1)
        x = patches @ g("embedding/kernel").reshape(-1, D) + g("embedding/bias")
        if layout == "big_vision":
            x = x + g("pos_embedding")[0]
        if pool == "token":
            x = np.concatenate([g("cls")[0], x])
        if layout != "big_vision":
            x = x + g("Transformer/posembed_input/pos_embedding")[0]
        for i in range(2):
            b = f"Transformer/encoderblock_{i}"
            y = norm(x, f"{b}/{ln0}")
            q, k, v = (np.einsum("nd,dhk->nhk", y, g(f"{b}/{attn}/{n}/kernel")) + g(f"{b}/{attn}/{n}/bias")
                       for n in ("query", "key", "value"))
            w = np.einsum("qhk,shk->hqs", q, k) / math.sqrt(D // HEADS)
            w = np.exp(w - w.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            y = np.einsum("hqs,shk->qhk", w, v)
            x = x + np.einsum("qhk,hkd->qd", y, g(f"{b}/{attn}/out/kernel")) + g(f"{b}/{attn}/out/bias")
            y = gelu(norm(x, f"{b}/{ln1}") @ g(f"{b}/{mlp}/Dense_0/kernel") + g(f"{b}/{mlp}/Dense_0/bias"))
            x = x + y @ g(f"{b}/{mlp}/Dense_1/kernel") + g(f"{b}/{mlp}/Dense_1/bias")
        x = norm(x, "Transformer/encoder_norm")
        pooled = x[0] if pool == "token" else x.mean(0)
        head = "output_projection" if layout == "scenic" else "head"
        out.append(pooled @ g(f"{head}/kernel") + g(f"{head}/bias"))
    return np.stack(out)


def _write(tmp_path, flat, layout):
    if layout == "scenic":
        from flax.serialization import msgpack_serialize

        from vivit_cli.interop.tree import unflatten

        path = tmp_path / "vit_checkpoint"
        path.write_bytes(msgpack_serialize({"optimizer": {"target": unflatten(flat)}}))
    else:
        path = tmp_path / "vit.npz"
        np.savez(path, **flat)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("layout,pool", [("vit_jax", "token"), ("big_vision", "token"), ("big_vision", "gap"),
                                         ("scenic", "token")])
def test_converted_vit_matches_a_reference_forward(layout, pool, tmp_path):
    from vivit_cli import interop, models
    from vivit_cli.runtime import checkpoint
    from vivit_cli.train import init_from

    flat = _rand_vit(layout, pool)
    summary = interop.convert_vit(_write(tmp_path, flat, layout), tmp_path / "vit")
    assert summary["input"] == "1x12x12" and summary["classifier"] == pool and summary["tubelet"] == "1x4x4"
    cfg, params = checkpoint.load(tmp_path / "vit")
    assert init_from.is_image_model(cfg)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 12, 12, 3)).astype(np.float32)
    got = np.asarray(models.build_model(cfg, CLASSES).apply({"params": params}, images[:, None]))
    np.testing.assert_allclose(got, _reference_logits(flat, layout, pool, images), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_init_from_a_converted_vit(tmp_path):
    """The paper's recipe: a video model initialised from the image ViT (kernel inflation, posemb tiling)."""
    import jax

    from vivit_cli import config, interop, models
    from vivit_cli.train import init_from

    flat = _rand_vit("vit_jax", "token")
    interop.convert_vit(_write(tmp_path, flat, "vit_jax"), tmp_path / "vit")
    cfg = config.build(["model.hidden=16", "model.layers=2", "model.heads=2", "model.mlp=32", "model.tubelet=2x4x4",
                        "model.init=central_frame", "data.frames=4", "data.crop=12", "data.num_classes=3",
                        f"model.init_from={tmp_path / 'vit'}"])
    fresh = models.init_params(cfg, 3, jax.random.key(0))
    params, what = init_from.initial_params(cfg, fresh, cfg.model.init_from)
    assert "image ViT" in what
    kernel = params["embedding"]["kernel"]
    np.testing.assert_array_equal(kernel[1], flat["embedding/kernel"])  # central frame of t=2
    assert not kernel[0].any()
    q = "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"
    np.testing.assert_array_equal(params["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_0"]["query"]
                                  ["kernel"], flat[q])
    pe = params["Transformer"]["posembed_input"]["pos_embedding"]
    src = flat["Transformer/posembed_input/pos_embedding"]
    assert pe.shape == (1, 1 + 2 * 9, D)
    np.testing.assert_array_equal(pe[0, 1:10], src[0, 1:])  # tiled over the 2 temporal positions
    np.testing.assert_array_equal(pe[0, 10:], src[0, 1:])
    assert params["output_projection"]["kernel"].shape == (D, 3)  # the head stays fresh


def test_vit_notes_and_bad_inputs(tmp_path):
    from vivit_cli import interop

    flat = _rand_vit("vit_jax", "token")
    flat["pre_logits/kernel"], flat["pre_logits/bias"] = np.zeros((D, D), np.float32), np.zeros(D, np.float32)
    summary = interop.convert_vit(_write(tmp_path, flat, "vit_jax"), tmp_path / "vit")
    assert any("pre_logits" in n and "zero" in n for n in summary["notes"])

    bad = dict(_rand_vit("vit_jax", "token"))
    bad["Transformer/encoderblock_0/Extra_0/kernel"] = np.zeros(2, np.float32)
    with pytest.raises(VivitError, match="encoderblock_0 has"):
        interop.convert_vit(_write(tmp_path, bad, "vit_jax"), tmp_path / "o")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(VivitError, match="not a Flax msgpack checkpoint"):
        interop.convert_vit(tmp_path / "junk.npz", tmp_path / "o")
    obj = tmp_path / "obj.npz"
    np.savez(obj, **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(VivitError, match="unreadable .npz"):  # allow_pickle=False: object arrays are refused
        interop.convert_vit(obj, tmp_path / "o")
    with pytest.raises(VivitError, match="data.frames=4 contradicts"):
        interop.convert_vit(_write(tmp_path, _rand_vit("vit_jax", "token"), "vit_jax"), tmp_path / "o",
                            ["data.frames=4"])
