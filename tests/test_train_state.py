"""The train state (`train.state.build_state`): weight decay reaches the right tensors of the real model, and a
checkpoint of the state resumes training exactly where it stopped."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from train_helpers import FAST


def _setup(optimizer: str, sets=()):
    from vivit_cli import config
    from vivit_cli.bench import core
    from vivit_cli.runtime import mesh as mesh_lib
    from vivit_cli.train import state as state_lib, step as step_lib

    cfg = config.build(FAST + [f"train.optimizer={optimizer}", "train.weight_decay=0.3", "train.grad_clip=0.5",
                               "train.lr=0.01", *sets])
    prep = core.prepare(cfg, batch_size=4, num_classes=4)
    ts = state_lib.build_state(cfg, 4, prep.mesh)
    repl, bsh = mesh_lib.replicated(prep.mesh), mesh_lib.batch_sharding(prep.mesh)
    step = step_lib.compile_train_step(cfg, prep.model, ts.tx, ts.schedule, 4, ts.shardings,
                                       {"video": bsh, "label": bsh}, repl)
    rng = jax.random.PRNGKey(1)
    state = ts.init(jax.tree.map(jnp.copy, prep.params))
    return ts, (lambda s: step(s, prep.data, rng)), state


def test_weight_decay_masks_biases_of_the_real_model():
    """With zero gradients AdamW's update is the decay alone: non-zero for kernels, zero for biases."""
    ts, _, state = _setup("adamw", ["train.grad_clip=0"])
    zeros = jax.tree.map(jnp.zeros_like, state["params"])
    u, _ = ts.tx.update(zeros, state["opt_state"], state["params"])
    assert float(jnp.abs(u["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]).max()) > 0
    assert float(jnp.abs(u["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["bias"]).max()) == 0


def test_a_saved_state_resumes_the_same_steps(tmp_path):
    from vivit_cli.runtime.checkpoint import Checkpointer

    ts, step, state = _setup("adamw")
    for _ in range(3):
        state, _ = step(state)
    ck = Checkpointer(tmp_path / "ck", keep=3, async_save=False)
    ck.save(3, state, {"step": 3})
    expected = []
    for _ in range(3):
        state, m = step(state)
        expected.append(float(m["loss"]))

    restored, meta = Checkpointer(tmp_path / "ck", keep=3).restore_latest(ts.abstract)
    assert meta["step"] == 3
    restored["step"] = jnp.int32(3)
    got = []
    for _ in range(3):
        restored, m = step(restored)
        got.append(float(m["loss"]))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
