import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_cli import config, models
from vivit_cli.models import attention as A
from vivit_cli.models import init as minit
from vivit_cli.models import layers as L
from vivit_cli.runtime import cpu

SMALL = ["model.hidden=32", "model.layers=2", "model.heads=4", "model.mlp=64", "model.temporal_layers=1",
         "data.frames=8", "data.crop=16", "model.tubelet=2x4x4"]
VARIANTS = [
    ["model.variant=spatio_temporal"],
    ["model.variant=spatio_temporal", "model.classifier=gap"],
    ["model.variant=spatio_temporal", "model.embedding=uniform_frame", "model.sampled_frames=4"],
    ["model.variant=factorised_encoder"],
    ["model.variant=factorised_encoder", "model.temporal_layers=0"],
    ["model.variant=factorised_self_attention"],
    ["model.variant=factorised_self_attention", "model.attention_order=time_space"],
    ["model.variant=factorised_dot_product"],
]


def _perturb(params, key, scale=0.05):
    """The head is zero-initialised (every logit is 0 at init); perturb every leaf so outputs differ."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


@pytest.mark.parametrize("sets", VARIANTS, ids=lambda s: "-".join(x.split("=")[1] for x in s))
def test_forward_train_eval_jit(sets):
    cfg = config.build(SMALL + sets + ["model.dropout=0.1", "model.stochastic_depth=0.2"])
    model = models.build_model(cfg, 5)
    params = _perturb(models.init_params(cfg, 5, jax.random.key(0)), jax.random.key(1))
    x = jax.random.uniform(jax.random.key(2), (2, 8, 16, 16, 3), minval=-1, maxval=1)
    eval_out = model.apply({"params": params}, x, train=False)
    assert eval_out.shape == (2, 5) and eval_out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(eval_out)))
    jitted = jax.jit(lambda p, v: model.apply({"params": p}, v, train=False))(params, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eval_out), atol=1e-5)
    train_out = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(3)})
    assert train_out.shape == (2, 5)
    assert not np.allclose(np.asarray(train_out), np.asarray(eval_out)), "dropout had no effect in train mode"
    # Different clips give different logits (the model looks at its input).
    other = model.apply({"params": params}, x[::-1], train=False)
    assert not np.allclose(np.asarray(other), np.asarray(eval_out))


def test_bfloat16_compute_keeps_float32_params():
    cfg = config.build(SMALL + ["train.precision=bfloat16"])
    params = models.init_params(cfg, 5, jax.random.key(0))
    assert {p.dtype for p in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
    out = models.build_model(cfg, 5).apply({"params": _perturb(params, jax.random.key(1))},
                                            jnp.zeros((1, 8, 16, 16, 3)), train=False)
    assert out.dtype == jnp.float32


def _influence(fn, x, index):
    """Which output tokens change when input token `index` is perturbed."""
    base = fn(x)
    # A non-constant bump: LayerNorm would erase a constant shift of all features.
    bump = jnp.linspace(-1.0, 1.0, x.shape[-1])
    bumped = fn(x.at[(slice(None),) + index].add(bump))
    return np.asarray(jnp.abs(bumped - base).max(axis=(0, -1)) > 1e-6)


def test_factorised_dot_product_attention_restricts_heads():
    t, s, d = 4, 6, 16
    attn = L.MultiHeadAttention(num_heads=4, factorised=(t, s))
    x = jax.random.normal(jax.random.key(0), (1, t * s, d))
    params = attn.init(jax.random.key(1), x, train=False)
    changed = _influence(lambda v: attn.apply(params, v, train=False), x, (1 * s + 2,))  # token (t=1, s=2)
    expected = np.zeros((t, s), bool)
    expected[1, :] = True  # the space heads see frame 1
    expected[:, 2] = True  # the time heads see position 2 in every frame
    np.testing.assert_array_equal(changed.reshape(t, s), expected)


@pytest.mark.parametrize("order", ["space_time", "time_space"])
def test_factorised_self_attention_first_attention_restricts(order):
    t, s, d = 4, 6, 16
    block = L.FactorisedSelfAttentionBlock(num_heads=4, mlp_dim=32, grid=(t, s), order=order,
                                           temporal_zero_init=False)
    x = jax.random.normal(jax.random.key(0), (1, t * s, d))
    params = block.init(jax.random.key(1), x, train=False)
    first = order.split("_")[0]
    sub = L.MultiHeadAttention(num_heads=4)
    sub_params = {"params": params["params"][f"MultiHeadDotProductAttention_{first}"]}

    def first_attention(v):  # the block's first sub-layer, applied along its axis
        y = v.reshape(1, t, s, d)
        if first == "time":
            y = y.transpose(0, 2, 1, 3)
        out = sub.apply(sub_params, y, train=False)
        return (out.transpose(0, 2, 1, 3) if first == "time" else out).reshape(1, t * s, d)

    changed = _influence(first_attention, x, (1 * s + 2,)).reshape(t, s)
    expected = np.zeros((t, s), bool)
    if first == "space":
        expected[1, :] = True
    else:
        expected[:, 2] = True
    np.testing.assert_array_equal(changed, expected)
    # The whole block (both attentions + MLP) mixes everything reachable in two hops: all tokens.
    full = _influence(lambda v: block.apply(params, v, train=False), x, (1 * s + 2,))
    assert full.all()


def test_factorised_encoder_spatial_stage_is_per_frame():
    cfg = config.build(SMALL + ["model.variant=factorised_encoder", "model.classifier=gap"])
    model = models.build_model(cfg, 5)
    params = _perturb(models.init_params(cfg, 5, jax.random.key(0)), jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (1, 8, 16, 16, 3))

    def spatial_out(v):
        _, state = model.apply({"params": params}, v, train=False, capture_intermediates=True,
                               mutable=["intermediates"])
        return state["intermediates"]["SpatialTransformer"]["__call__"][0]  # [B*nt, s, D]

    base = spatial_out(x)
    bumped = spatial_out(x.at[:, 2:4, 0:4, 0:4].add(1.0))  # pixels of temporal token 1 only
    changed = np.asarray(jnp.abs(bumped - base).max(axis=(1, 2)) > 1e-6)
    np.testing.assert_array_equal(changed, [False, True, False, False])


def test_model4_params_equal_model1_params():
    shapes = lambda v: jax.tree_util.tree_map(lambda a: a.shape, models.param_shapes(  # noqa: E731
        config.build(SMALL + [f"model.variant={v}", "model.classifier=gap"]), 7))
    assert shapes("spatio_temporal") == shapes("factorised_dot_product")


def test_scratch_kernel_inits():
    def kernel(method):
        cfg = config.build(SMALL + [f"model.init={method}", "model.tubelet=4x4x4"])
        return np.asarray(models.init_params(cfg, 5, jax.random.key(0))["embedding"]["kernel"])

    central = kernel("central_frame")  # [t, h, w, C, D]
    nonzero_t = [bool(np.any(central[i])) for i in range(4)]
    assert nonzero_t == [False, False, True, False]
    # Every width column of the central slice is used (the reference zeroes width columns instead).
    assert all(np.any(central[2][:, j]) for j in range(4))
    inflated = kernel("filter_inflation")
    for i in range(1, 4):
        np.testing.assert_allclose(inflated[i], inflated[0])
    rand = kernel("random")
    assert not np.allclose(rand[0], rand[1])


def test_inflate_kernel_from_2d():
    k2d = np.random.default_rng(0).normal(size=(4, 4, 3, 8)).astype(np.float32)
    fi = minit.inflate_kernel(k2d, 4, "filter_inflation")
    np.testing.assert_allclose(fi.sum(axis=0), k2d, rtol=1e-6)  # a static video embeds as the image did
    np.testing.assert_allclose(fi[3], k2d / 4)
    cf = minit.inflate_kernel(k2d, 3, "central_frame")
    np.testing.assert_array_equal(cf[1], k2d)
    assert not cf[0].any() and not cf[2].any()
    assert minit.inflate_kernel(k2d, 2, "random").shape == (2, 4, 4, 3, 8)


def test_resized_posemb_keeps_original_grid_points():
    rng = np.random.default_rng(0)
    pe = rng.normal(size=(1, 1 + 4 * 3 * 3, 8)).astype(np.float32)
    out = minit.resize_posemb(pe, (4, 3, 3), (7, 5, 5), has_cls=True)
    assert out.shape == (1, 1 + 7 * 5 * 5, 8)
    np.testing.assert_array_equal(out[:, 0], pe[:, 0])
    old = pe[0, 1:].reshape(4, 3, 3, 8)
    new = out[0, 1:].reshape(7, 5, 5, 8)
    np.testing.assert_allclose(new[::2, ::2, ::2], old, rtol=1e-6)
    # Time and space are resized separately: a time-only resize leaves every frame's table intact.
    t_only = minit.resize_posemb(pe, (4, 3, 3), (2, 3, 3), has_cls=True)[0, 1:].reshape(2, 3, 3, 8)
    np.testing.assert_allclose(t_only[0], old[0])
    np.testing.assert_allclose(t_only[1], old[3])
    tiled = minit.resize_posemb(pe[:, :10], (1, 3, 3), (3, 3, 3), has_cls=True, time="tile")
    np.testing.assert_allclose(tiled[0, 1:].reshape(3, 9, 8)[2], pe[0, 1:10])


@pytest.mark.parametrize("variant", ["spatio_temporal", "factorised_encoder", "factorised_self_attention",
                                     "factorised_dot_product"])
def test_inflate_from_image_vit(variant):
    image_cfg = config.build(["model.hidden=32", "model.layers=2", "model.heads=4", "model.mlp=64",
                              "model.embedding=uniform_frame", "model.tubelet=1x4x4", "data.frames=1",
                              "data.crop=12"])
    image = _perturb(models.init_params(image_cfg, 3, jax.random.key(0)), jax.random.key(1))
    cfg = config.build(SMALL + [f"model.variant={variant}", "model.init=filter_inflation"])
    video = models.init_params(cfg, 5, jax.random.key(2))
    out = minit.inflate_from_image(video, image, cfg)
    shapes = lambda t: jax.tree_util.tree_map(np.shape, t)  # noqa: E731
    assert shapes(out) == shapes(video)
    enc = "SpatialTransformer" if variant == "factorised_encoder" else "Transformer"
    src = image["Transformer"]["encoderblock_1"]
    dst = out[enc]["encoderblock_1"]
    if variant == "factorised_self_attention":
        np.testing.assert_array_equal(dst["MultiHeadDotProductAttention_space"]["query"]["kernel"],
                                      src["MultiHeadDotProductAttention_0"]["query"]["kernel"])
        np.testing.assert_array_equal(dst["MultiHeadDotProductAttention_time"]["key"]["kernel"],
                                      src["MultiHeadDotProductAttention_0"]["key"]["kernel"])
        assert not np.any(dst["MultiHeadDotProductAttention_time"]["out"]["kernel"])
        np.testing.assert_array_equal(dst["MlpBlock"]["Dense_0"]["kernel"], src["MlpBlock_0"]["Dense_0"]["kernel"])
    else:
        np.testing.assert_array_equal(dst["MlpBlock_0"]["Dense_1"]["kernel"], src["MlpBlock_0"]["Dense_1"]["kernel"])
    np.testing.assert_allclose(out["embedding"]["kernel"].sum(axis=0), image["embedding"]["kernel"], rtol=1e-5)
    # The output still runs.
    logits = models.build_model(cfg, 5).apply({"params": out}, jnp.zeros((1, 8, 16, 16, 3)), train=False)
    assert logits.shape == (1, 5)


PAPER_TABLE2 = [  # variant overrides, params (M), GFLOPs
    (["model.variant=spatio_temporal"], 88.9, 455.2),
    (["model.variant=factorised_encoder"], 115.1, 284.4),
    (["model.variant=factorised_self_attention"], 117.3, 372.3),
    (["model.variant=factorised_dot_product"], 88.9, 277.1),
    (["model.variant=factorised_encoder", "model.temporal_layers=0"], 86.7, 283.9),
]


@pytest.mark.parametrize("sets,params_m,gflops", PAPER_TABLE2)
def test_paper_table2_params_and_gflops(sets, params_m, gflops):
    cfg = config.build(["model.size=B", "data.frames=32", "data.crop=224", "model.tubelet=2x16x16",
                        "model.temporal_layers=4"] + sets)
    info = models.describe(cfg, 400)
    assert abs(info["params"] / 1e6 - params_m) / params_m < 0.01
    assert abs(info["gflops"] - gflops) / gflops < 0.03
    assert info["tokens"] == 16 * 14 * 14


def test_measured_gflops_agree_with_analytic():
    cfg = config.build(SMALL + ["model.variant=factorised_encoder"])
    analytic = models.describe(cfg, 5)["gflops_executed"]
    measured = models.measure_gflops(cfg, 5)
    assert abs(measured - analytic) / analytic < 0.1


@pytest.mark.parametrize("sets", [["model.variant=spatio_temporal"], ["model.variant=factorised_encoder"],
                                  ["model.variant=factorised_encoder", "model.temporal_layers=0"],
                                  ["model.variant=spatio_temporal", "train.precision=bfloat16"],
                                  ["model.variant=spatio_temporal", "model.attention_dropout=0.1"]],
                         ids=["model1", "model2", "avgpool", "model1-cpu-bf16", "model1-attention-dropout"])
def test_class_token_readout_computes_only_its_row_with_the_same_result(sets):
    """The last block under a class-token readout runs token 0's row alone: logits and gradients equal those of
    every token through every block (the reference's computation), and XLA counts the saving."""
    cfg = config.build(SMALL + ["model.layers=3"] + sets)
    x = jax.random.normal(jax.random.key(2), (2, 8, 16, 16, 3))
    params = _perturb(models.init_params(cfg, 5, jax.random.key(0)), jax.random.key(1))
    ours = models.build_model(cfg, 5)
    full = ours.clone(last_block_all_tokens=True)
    measure = len(sets) == 1  # XLA's count (a compile each): models 1 and 2 suffice
    if "model.attention_dropout=0.1" in sets:  # the one-query attention's dropout, in train mode
        y = ours.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(4)})
        assert y.shape == (2, 5) and bool(jnp.isfinite(y).all())
    outs, grads = [], []
    for model in (ours, full):
        loss = lambda p, m=model: m.apply({"params": p}, x, train=False).sum()  # noqa: E731
        outs.append(np.asarray(jax.jit(lambda p, m=model: m.apply({"params": p}, x))(params)))
        grads.append(jax.jit(jax.grad(loss))(params))
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-5 if "bfloat16" in str(sets) else 1e-6)
    assert np.abs(outs[0]).max() > 1e-3  # the perturbed head makes non-trivial logits
    a, b = (np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]) for g in grads)
    if "bfloat16" in str(sets):  # bf16 products round the one query's backward differently from the
        # hand-written attention backward: equal to bf16's precision over the whole gradient
        assert np.linalg.norm(a - b) <= 1e-2 * np.linalg.norm(b)
    else:
        np.testing.assert_allclose(a, b, atol=1e-5)
    if measure:
        info = models.describe(cfg, 5)
        assert info["gflops_executed"] < info["gflops"]
        # The compiled program does the smaller amount of work (XLA also counts softmax, LayerNorm and the like).
        measured = models.measure_gflops(cfg, 5)
        assert abs(measured - info["gflops_executed"]) < abs(measured - info["gflops"])


def test_pooled_models_count_every_token():
    for variant in ("factorised_self_attention", "factorised_dot_product"):
        info = models.describe(config.build(SMALL + [f"model.variant={variant}"]), 5)
        assert info["gflops_executed"] == info["gflops"]


def test_describe_cli_json(cli):
    r = cli("describe", "--set", "model.size=B", "--set", "model.variant=factorised_encoder", "--set",
            "data.frames=32", "--set", "data.crop=224", "--set", "model.tubelet=2x16x16", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["variant"] == "factorised_encoder" and info["tokens"] == 3136
    assert isinstance(info["params"], int) and abs(info["params"] / 1e6 - 115.1) < 1.0
    assert isinstance(info["gflops"], float)


@pytest.mark.parametrize("variant", ["spatio_temporal", "factorised_self_attention"])
def test_remat_gives_the_same_gradients(variant):
    sets = SMALL + [f"model.variant={variant}", "model.stochastic_depth=0.1"]
    x = jax.random.normal(jax.random.key(2), (2, 8, 16, 16, 3))
    grads = []
    for remat in ("false", "true"):
        cfg = config.build(sets + [f"model.remat={remat}"])
        model = models.build_model(cfg, 5)
        params = _perturb(models.init_params(cfg, 5, jax.random.key(0)), jax.random.key(1))
        loss = lambda p: model.apply({"params": p}, x, train=True,  # noqa: E731
                                     rngs={"dropout": jax.random.key(3)}).sum()
        grads.append(jax.jit(jax.grad(loss))(params))
    for a, b in zip(jax.tree_util.tree_leaves(grads[0]), jax.tree_util.tree_leaves(grads[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.parametrize("n", [3137, 197, 9])
def test_padded_attention_equals_unpadded_forward_and_backward(n):
    # The GPU path pads odd token counts (model 1's class token) for cuDNN; the padding must change nothing.
    # Checked through XLA's implementation, which honours the same sequence-length mask.
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(kk, (2, n, 2, 8), jnp.float32) for kk in keys)
    # Jitted: op by op (each primitive compiled for its shape) the three cases took 51.8 s, jitted 17.5 s (2026-12-03).
    plain = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=1.0))
    padded = jax.jit(lambda q, k, v: A.padded_attention(q, k, v, implementation=None))
    np.testing.assert_allclose(padded(q, k, v), plain(q, k, v), atol=2e-6)
    w = jax.random.normal(jax.random.key(1), (2, n, 2, 8))
    grads = [jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * w), argnums=(0, 1, 2)))(q, k, v) for f in (plain, padded)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, atol=2e-5)


def test_cudnn_refusal_is_recorded_not_silent(monkeypatch):
    # Where cuDNN refuses (here: a GPU backend's name on a machine without cuDNN), the model is built with XLA
    # attention, but says so (the GPU check and `vivit bench` show it); VIVIT_ATTENTION=cudnn makes it an error.
    monkeypatch.delenv("VIVIT_ATTENTION", raising=False)
    cfg = config.build(SMALL + ["train.precision=bfloat16"])
    with pytest.warns(UserWarning, match="cuDNN attention refused"):
        choice = models.attention_choice(cfg, "gpu")
    assert choice.path == "xla" and choice.refused.startswith("(1, 8, 4, 8) bfloat16: ")
    with monkeypatch.context() as patch:
        patch.setattr(A, "cudnn_refusal", lambda heads, dh, dtype: None)  # where cuDNN accepts
        assert models.attention_choice(cfg, "gpu") == A.Attention("cudnn")
        assert A.attention_choice(cfg, "gpu", {"VIVIT_ATTENTION": "xla"}) == A.Attention("xla")
    with pytest.raises(RuntimeError, match="cuDNN attention refused"):
        A.attention_choice(cfg, "gpu", {"VIVIT_ATTENTION": "cudnn"})


def test_attention_is_chosen_when_the_model_is_built(monkeypatch):
    # One path per model, from the config and the backend, held as a field of every attention layer.
    monkeypatch.delenv("VIVIT_ATTENTION", raising=False)
    cfg32, cfg16 = config.build(SMALL), config.build(SMALL + ["train.precision=bfloat16"])
    assert models.attention_choice(cfg32, "cpu") == A.Attention("xla")
    assert models.attention_choice(cfg16, "cpu") == A.Attention("cpu_bf16")
    assert models.attention_choice(cfg32, "gpu") == A.Attention("xla")  # cuDNN's kernel wants bf16/fp16
    assert models.build_model(cfg16, 5).attention == "cpu_bf16" and models.build_model(cfg32, 5).attention == "xla"


def test_every_config_variant_is_registered():
    from vivit_cli.config.schema import VARIANTS
    from vivit_cli.models.flops import ENCODER_GMACS
    from vivit_cli.models.vivit import VARIANTS as REGISTERED

    assert set(REGISTERED) == set(VARIANTS) == set(ENCODER_GMACS)


def test_cpu_bfloat16_mode_is_bf16_matmuls_with_f32_activations():
    # On a CPU, precision=bfloat16 means bf16 x bf16 -> f32 products (AVX512-BF16 runs them at ~2x f32) with f32
    # activations; the forward and the gradients must stay close to the f32 model's.
    cfg32 = config.build(SMALL)
    cfg16 = config.build(SMALL + ["train.precision=bfloat16"])
    assert models.compute_dtypes(cfg16, "cpu") == (jnp.float32, jnp.bfloat16)
    assert models.compute_dtypes(cfg16, "gpu") == (jnp.bfloat16, None)
    assert models.compute_dtypes(cfg32, "cpu") == (jnp.float32, None)
    params = _perturb(models.init_params(cfg32, 5, jax.random.key(0)), jax.random.key(1))
    video = jax.random.uniform(jax.random.key(2), (2, 8, 16, 16, 3), minval=-1, maxval=1)

    def loss(cfg):
        model = models.build_model(cfg, 5)
        return lambda p: jnp.sum(model.apply({"params": p}, video, train=False) ** 2)

    l32, g32 = jax.value_and_grad(loss(cfg32))(params)
    l16, g16 = jax.value_and_grad(loss(cfg16))(params)
    assert abs(float(l16) - float(l32)) <= 0.03 * abs(float(l32)) + 1e-3
    assert {b.dtype for b in jax.tree_util.tree_leaves(g16)} == {jnp.dtype("float32")}
    # Over the whole gradient (single leaves whose f32 gradient is ~0, e.g. biases a LayerNorm cancels, only
    # show bf16 rounding noise).
    flat32, flat16 = (jnp.concatenate([a.ravel() for a in jax.tree_util.tree_leaves(g)]) for g in (g32, g16))
    assert float(jnp.linalg.norm(flat16 - flat32)) <= 0.05 * float(jnp.linalg.norm(flat32))
    # Every product of the forward and backward pass is bf16 x bf16 -> f32, none f32 x f32.
    import re

    hlo = jax.jit(jax.grad(loss(cfg16))).lower(params).as_text()
    dots = re.findall(r"stablehlo.dot_general.*?: \((tensor<[^>]*>), (tensor<[^>]*>)\) -> (tensor<[^>]*>)", hlo)
    assert dots and all(a.endswith("xbf16>") and b.endswith("xbf16>") and o.endswith("xf32>") for a, b, o in dots), dots


def test_bf16_matmul_and_attention_gradients_match_their_definition():
    x = jax.random.normal(jax.random.key(0), (3, 5, 12))
    w = jax.random.normal(jax.random.key(1), (12, 2, 4))
    g = jax.random.normal(jax.random.key(2), (3, 5, 2, 4))

    def ref(x, w):  # the same products, differentiated by JAX in f32 on bf16-rounded operands
        r = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731
        return jnp.einsum("abk,kcd->abcd", r(x), r(w))

    got = jax.vjp(lambda x, w: L.matmul(x, w, jnp.float32, jnp.bfloat16), x, w)
    want = jax.vjp(ref, x, w)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(got[1](g), want[1](g)):
        np.testing.assert_allclose(a, b, rtol=0.02, atol=0.05)
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 7, 2, 8)) * 0.5 for i in range(3))
    w = jax.random.normal(jax.random.key(9), (2, 7, 2, 8))
    fwd32 = lambda q, k, v: jnp.sum(jax.nn.dot_product_attention(q, k, v, scale=1.0) * w)  # noqa: E731
    fwd16 = lambda q, k, v: jnp.sum(cpu.bf16_kernels().attention(q, k, v) * w)  # noqa: E731
    np.testing.assert_allclose(fwd16(q, k, v), fwd32(q, k, v), rtol=0.02, atol=0.05)
    for a, b in zip(jax.grad(fwd16, (0, 1, 2))(q, k, v), jax.grad(fwd32, (0, 1, 2))(q, k, v)):
        assert float(jnp.linalg.norm(a - b)) <= 0.03 * float(jnp.linalg.norm(b)) + 1e-3


@pytest.mark.parametrize("temporal_init", ["zero_out", "copy"])
def test_model3_temporal_init_from_image_vit(temporal_init):
    """model.temporal_init: the temporal attention's out projection is zero (`zero_out`) or the image
    attention's (`copy`, Scenic's); its q/k/v are the image's and its LayerNorm is fresh under both."""
    image_cfg = config.build(["model.hidden=32", "model.layers=2", "model.heads=4", "model.mlp=64",
                              "model.embedding=uniform_frame", "model.tubelet=1x4x4", "data.frames=1",
                              "data.crop=12"])
    image = _perturb(models.init_params(image_cfg, 3, jax.random.key(0)), jax.random.key(1))
    cfg = config.build(SMALL + ["model.variant=factorised_self_attention", f"model.temporal_init={temporal_init}"])
    video = models.init_params(cfg, 5, jax.random.key(2))
    out = minit.inflate_from_image(video, image, cfg)
    for i in range(2):
        src = image["Transformer"][f"encoderblock_{i}"]
        dst = out["Transformer"][f"encoderblock_{i}"]
        src_attn, time = src["MultiHeadDotProductAttention_0"], dst["MultiHeadDotProductAttention_time"]
        for name in ("query", "key", "value"):
            np.testing.assert_array_equal(time[name]["kernel"], src_attn[name]["kernel"])
        for leaf in ("kernel", "bias"):
            if temporal_init == "copy":
                np.testing.assert_array_equal(time["out"][leaf], src_attn["out"][leaf])
            else:
                assert not np.any(time["out"][leaf])
        fresh = video["Transformer"][f"encoderblock_{i}"]["LayerNorm_time"]
        np.testing.assert_array_equal(dst["LayerNorm_time"]["scale"], np.ones_like(fresh["scale"]))
        np.testing.assert_array_equal(dst["LayerNorm_time"]["bias"], np.zeros_like(fresh["bias"]))
        np.testing.assert_array_equal(dst["LayerNorm_space"]["scale"], src["LayerNorm_0"]["scale"])


def test_model3_temporal_init_rejects_unknown_values():
    from vivit_cli.errors import VivitError

    with pytest.raises(VivitError, match="temporal_init"):
        config.build(["model.variant=factorised_self_attention", "model.temporal_init=random"])


def test_projections_are_flax_dense_params_and_bias_gradients_are_the_row_sums():
    """`layers.Dense` declares flax's Dense/DenseGeneral params (names, shapes, initial values), and
    `add_bias`'s gradient for the bias (a ones-row product) is the plain sum over rows."""
    import flax.linen as nn

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 6))
    key = jax.random.PRNGKey(1)
    for ours, theirs, sample in (
            (L.Dense(7, bias_init=nn.initializers.normal(1.0)), nn.Dense(7, bias_init=nn.initializers.normal(1.0)), x),
            (L.Dense(3, contract=2, kernel_init=nn.initializers.xavier_uniform()),
             nn.DenseGeneral(3, axis=(-2, -1), kernel_init=nn.initializers.xavier_uniform()), x)):
        p, q = ours.init(key, sample)["params"], theirs.init(key, sample)["params"]
        assert jax.tree.map(jnp.shape, p) == jax.tree.map(jnp.shape, q)
        np.testing.assert_array_equal(p["kernel"], q["kernel"])
        np.testing.assert_array_equal(p["bias"], q["bias"])
        np.testing.assert_allclose(ours.apply({"params": p}, sample), theirs.apply({"params": q}, sample),
                                   rtol=1e-5, atol=1e-5)
    y, b = jax.random.normal(key, (40, 9)), jax.random.normal(key, (9,))
    w = jax.random.normal(jax.random.PRNGKey(2), (40, 9))
    loss = lambda f: lambda y, b: (w * jnp.tanh(f(y, b))).sum()  # noqa: E731
    ours, plain = jax.grad(loss(L.add_bias), (0, 1))(y, b), jax.grad(loss(jnp.add), (0, 1))(y, b)
    np.testing.assert_allclose(ours[0], plain[0], rtol=1e-6)
    np.testing.assert_allclose(ours[1], plain[1], rtol=1e-5)
    # and under vmap, as a seed group runs it
    ours = jax.vmap(jax.grad(loss(L.add_bias), 1))(jnp.stack([y, 2 * y]), jnp.stack([b, b]))
    np.testing.assert_allclose(ours[1], jax.grad(loss(jnp.add), 1)(2 * y, b), rtol=1e-5)
