"""Several CPU devices in one process (VIVIT_NUM_CPU_DEVICES, emulated slices): independent launches of a
program with collectives must not deadlock XLA's CPU runtime (see `runtime.cpu.one_launch_at_a_time`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from train_helpers import FAST, ROOT

# 400 launches of the eval step (independent) or of the train step (each feeding the next) over 2 CPU devices,
# then the result. Unguarded, jaxlib 0.10 on 2 cores hangs within a few launches; the collective timeouts are
# shortened so that a hang ends the process instead of the test run.
SCRIPT = """
import sys
import numpy as np
import jax
from vivit_cli import config, models
from vivit_cli.runtime import cpu, mesh as mesh_lib
from vivit_cli.train import step as step_lib
if sys.argv[1] == "unguarded":
    cpu.one_launch_at_a_time = lambda fn: fn
cfg = config.build(sys.argv[3:])
mesh = mesh_lib.make_mesh(1)
assert mesh.shape["data"] == 2, mesh.shape
model = models.build_model(cfg, 4)
params = models.init_params(cfg, 4, jax.random.key(0))
psh = mesh_lib.tree_shardings(mesh, params)
params = mesh_lib.put_global(jax.device_get(params), psh)
bsh = mesh_lib.batch_sharding(mesh)
repl = mesh_lib.replicated(mesh)
rng = np.random.default_rng(0)
video = rng.uniform(-1, 1, (2, 1, cfg.data.frames, cfg.data.crop, cfg.data.crop, 3)).astype(np.float32)
if sys.argv[2] == "eval":
    step = cpu.one_launch_at_a_time(step_lib.compile_eval_step(model, psh, {"video": bsh, "label": bsh,
                                                                                 "mask": bsh}, repl))
    batch = mesh_lib.global_batch({"video": video, "label": np.arange(2, dtype=np.int32), "mask": np.ones(2, bool)}, bsh)
    sums = [step(params, batch) for _ in range(400)]
    print("count", sum(float(s["count"]) for s in sums))
else:
    from vivit_cli.train import optim
    tx, schedule = optim.make_optimizer(cfg.train)
    state = {"step": mesh_lib.put_global(np.int32(0), repl), "params": params,
             "opt_state": jax.jit(tx.init, out_shardings=mesh_lib.tree_shardings(mesh, jax.eval_shape(tx.init, params)))(params)}
    shardings = jax.tree.map(lambda a: a.sharding, state)
    step = cpu.one_launch_at_a_time(step_lib.compile_train_step(cfg, model, tx, schedule, 4, shardings,
                                                                     {"video": bsh, "label": bsh}, repl))
    batch = mesh_lib.global_batch({"video": video[:, 0], "label": np.arange(2, dtype=np.int32)}, bsh)
    key = mesh_lib.put_global(np.asarray(jax.random.PRNGKey(0)), repl)
    for _ in range(400):
        state, metrics = step(state, batch, key)
    print("steps", int(state["step"]))
"""


def run(mode: str, what: str, timeout: float):
    flags = ("--xla_force_host_platform_device_count=2 --xla_cpu_collective_call_warn_stuck_timeout_seconds=5 "
             "--xla_cpu_collective_call_terminate_timeout_seconds=10")
    env = {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    import os

    return subprocess.run([sys.executable, "-c", SCRIPT, mode, what, *FAST], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env}, cwd=ROOT)


@pytest.mark.parametrize("what,expect", [("eval", "count 800.0"), ("train", "steps 400")])
def test_launches_over_two_cpu_devices_finish(what, expect):
    r = run("guarded", what, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert expect in r.stdout
