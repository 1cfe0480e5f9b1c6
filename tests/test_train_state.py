"""The train state's two layouts (`train.state`): per tensor, and flat (two vectors) where several CPU devices
share a process. Both must train identically and save the same checkpoints, so a run resumes across them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train_helpers import FAST


def _setup(optimizer: str, flat: bool, sets=()):
    from vivit_cli import config, models
    from vivit_cli.bench import core
    from vivit_cli.runtime import mesh as mesh_lib
    from vivit_cli.train import state as state_lib, step as step_lib

    cfg = config.build(FAST + [f"train.optimizer={optimizer}", "train.weight_decay=0.3", "train.grad_clip=0.5",
                               "train.lr=0.01", *sets])
    prep = core.prepare(cfg, batch_size=4, num_classes=4)
    layout = state_lib.Layout(models.param_shapes(cfg, 4), cfg.train, flat=flat)
    repl, bsh = mesh_lib.replicated(prep.mesh), mesh_lib.batch_sharding(prep.mesh)
    step = step_lib.compile_train_step(cfg, prep.model, layout.tx, layout.schedule, 4, layout.shardings(prep.mesh),
                                       {"video": bsh, "label": bsh}, repl, model_params=layout.model_params)
    rng = jax.random.PRNGKey(1)
    state = layout.init(jax.tree.map(jnp.copy, prep.params), prep.mesh)
    return layout, prep, (lambda s: step(s, prep.data, rng)), state


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_flat_layout_trains_exactly_like_the_per_tensor_one(optimizer):
    runs = {}
    for flat in (False, True):
        layout, prep, step, state = _setup(optimizer, flat)
        assert layout.flat is flat
        if flat:
            assert sorted(state["params"]) == ["decayed", "other"] and state["params"]["decayed"].ndim == 1
        losses = []
        for _ in range(6):
            state, m = step(state)
            losses.append(float(m["loss"]))
        runs[flat] = (losses, layout.saved_from_held(state, prep.mesh))
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-5)
    assert runs[True][0][-1] < runs[True][0][0]  # it trains
    flat_saved, tree_saved = runs[True][1], runs[False][1]
    # The same tree, leaf for leaf (params, every optimizer moment): checkpoints cannot tell the layouts apart.
    assert jax.tree.structure(flat_saved) == jax.tree.structure(tree_saved)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(flat_saved), jax.tree.leaves(tree_saved)):
        assert a.shape == b.shape
        if "['key']['bias']" in jax.tree_util.keystr(path) and optimizer == "adamw":
            # Its true gradient is 0 (a key bias adds the same q.b to every logit of a row, which the softmax
            # ignores), so what it gets is rounding noise, which Adam scales up to full-size steps either way.
            continue
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))


def test_flat_weight_decay_masks_the_same_tensors():
    """With zero gradients AdamW's update is the decay alone: the flat layout's, unravelled, is the per-tensor
    layout's, zero for biases, LayerNorm and position embeddings."""
    updates = {}
    for flat in (False, True):
        layout, _, _, state = _setup("adamw", flat, ["train.grad_clip=0"])
        zeros = jax.tree.map(jnp.zeros_like, state["params"])
        u, _ = layout.tx.update(zeros, state["opt_state"], state["params"])
        updates[flat] = layout.model_params(u)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(updates[True]), jax.tree.leaves(updates[False])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
    assert float(jnp.abs(updates[True]["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]).max()) > 0
    assert float(jnp.abs(updates[True]["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["bias"]).max()) == 0


def test_a_checkpoint_saved_flat_resumes_per_tensor_and_back(tmp_path):
    from vivit_cli.runtime.checkpoint import Checkpointer

    layout_f, prep, step_f, state = _setup("adamw", True)
    for _ in range(3):
        state, _ = step_f(state)
    ck = Checkpointer(tmp_path / "ck", keep=3, async_save=False)
    ck.save(3, layout_f.saved_from_held(state, prep.mesh), {"step": 3})
    expected = []
    for _ in range(3):
        state, m = step_f(state)
        expected.append(float(m["loss"]))

    layout_t, prep_t, step_t, _ = _setup("adamw", False)
    sh = layout_t.shardings(prep_t.mesh, saved=True)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            layout_t.saved_abstract(), sh)
    restored, meta = Checkpointer(tmp_path / "ck", keep=3).restore_latest(abstract)
    assert meta["step"] == 3
    restored["step"] = jnp.int32(3)
    state_t = layout_t.held_from_saved(restored, prep_t.mesh)
    got = []
    for _ in range(3):
        state_t, m = step_t(state_t)
        got.append(float(m["loss"]))
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    # ... and back: the per-tensor state into the flat layout continues the same way.
    state_f2 = layout_f.held_from_saved(layout_t.saved_from_held(state_t, prep_t.mesh), prep.mesh)
    for a, b in zip(jax.tree.leaves(layout_f.to_saved(state_f2)), jax.tree.leaves(state_t)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_one_cpu_device_keeps_the_per_tensor_layout_and_several_take_the_flat_one():
    from vivit_cli import config, models
    from vivit_cli.runtime import mesh as mesh_lib, state as state_lib

    cfg = config.build(FAST)
    layout = state_lib.layout_for(mesh_lib.make_mesh(1), models.param_shapes(cfg, 4), cfg.train)
    assert layout.flat is (jax.local_device_count() > 1)
