"""The train state's layout, measured: per tensor vs flat vs optax.flatten, interleaved in one process.

The flat layout (params and optimizer moments as two vectors where several CPU devices share a process) was
removed on 2026-12-01 on these figures (benchmarks/RESULTS.md, "One train-state layout"). This script is the
record of that measurement and runs against the last commit that had the flat layout:

    git worktree add /tmp/flat 5b40544 && cp benchmarks/bench_layout.py /tmp/flat/benchmarks/
    cd /tmp/flat && PYTHONPATH=/tmp/flat /path/to/.venv/bin/python benchmarks/bench_layout.py [--rounds 40]

For each CPU device count (a child process each: the count is fixed when JAX's backend starts), and for the
default preset and vs_pytorch.py's tiny config (16x32x32, batch 8, AdamW), it times the trainer's compiled step
under each layout, back to back within each round, and prints the median of the per-round speed-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# The default preset (SGD, batch 32), and vs_pytorch.py's tiny config (AdamW with clipping, batch 8), where the
# flat layout was first measured to pay.
CONFIGS = {"default": [], "tiny-bench": ["data.frames=16", "data.crop=32", "model.tubelet=2x8x8", "train.batch_size=8",
                                         "train.optimizer=adamw", "train.weight_decay=0.05", "train.grad_clip=1.0"]}


def child(rounds: int, configs: list[str]) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from vivit_cli import config, models
    from vivit_cli.bench import timing
    from vivit_cli.train import mesh as mesh_lib, optim, runtime, state as state_lib, step as step_lib

    runtime.setup()

    out = {}
    for name in configs:
        cfg = config.build(CONFIGS[name])
        nc = 8
        mesh = mesh_lib.make_mesh(1)
        repl, bsh = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
        b = cfg.train.batch_size
        rng = np.random.default_rng(0)
        video = rng.uniform(-1, 1, (b, cfg.data.frames, cfg.data.crop, cfg.data.crop, 3)).astype(np.float32)
        data = mesh_lib.global_batch({"video": video, "label": rng.integers(0, nc, b).astype(np.int32)}, bsh)
        model = models.build_model(cfg, nc)
        shapes = models.param_shapes(cfg, nc)
        params = jax.tree.map(np.asarray, models.init_params(cfg, nc, jax.random.PRNGKey(0)))
        key = mesh_lib.put_global(np.asarray(jax.random.PRNGKey(1)), repl)
        steps = {}
        # optax.flatten hands the inner chain one vector, so a per-tensor weight-decay mask cannot apply.
        names = ("per tensor", "flat") + (("optax.flatten",) if cfg.train.weight_decay == 0 else ())
        for layout_name in names:
            layout = state_lib.Layout(shapes, cfg.train, flat=layout_name == "flat")
            tx = layout.tx
            if layout_name == "optax.flatten":
                tx = optax.flatten(optim.make_optimizer(cfg.train)[0])
            held = layout.ravel(params) if layout.flat else params
            init = jax.jit(lambda p, tx=tx: {"step": jnp.int32(0), "params": p, "opt_state": tx.init(p)},
                           out_shardings=repl)
            fn = step_lib.compile_train_step(cfg, model, tx, layout.schedule, nc, repl, {"video": bsh, "label": bsh},
                                             repl, model_params=layout.model_params)
            st = init(jax.tree.map(jnp.asarray, held))
            run = mesh_lib.one_launch_at_a_time(fn)
            steps[layout_name] = (lambda s, run=run: run(s, data, key), st)
        # Each round times every layout back to back (a sample of 5 steps each, ~0.2-0.8 s), so a load that
        # changes slower than a round falls on all of them alike; the per-round ratio is the figure.
        for k, (step, st) in steps.items():
            t, st = timing.time_stateful(step, st, warmup=3, repeats=1, inner=5)
            steps[k] = (step, st)
        samples = {k: [] for k in steps}
        for _ in range(rounds):
            for k, (step, st) in steps.items():
                t, st = timing.time_stateful(step, st, warmup=0, repeats=1, inner=5)
                steps[k] = (step, st)
                samples[k].append(1e3 * t["median_s"])
        out[name] = samples
    return out


def main() -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import vivit_cli  # noqa: F401 - at that commit, importing the package applies the XLA CPU flags
    from vivit_cli.train import state

    if not hasattr(state, "Layout"):
        sys.exit("this measures the flat train-state layout, which this checkout no longer has: run it at commit "
                 "5b40544 (see the docstring)")
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--devices", default="1,2")
    ap.add_argument("--child", action="store_true")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.rounds, a.configs.split(","))))
        return
    import statistics

    for n in [int(x) for x in a.devices.split(",")]:
        env = dict(os.environ, VIVIT_NUM_CPU_DEVICES=str(n), VIVIT_COMPILE_CACHE="0")
        res = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(a.rounds), "--configs", a.configs], env=env, check=True,
                             capture_output=True, text=True)
        data = json.loads(res.stdout.strip().splitlines()[-1])
        for cfg_name, samples in data.items():
            base = samples["per tensor"]
            for k, v in samples.items():
                ratios = sorted(b / x for b, x in zip(base, v))
                q = len(ratios) // 4
                print(f"{n} device(s)  {cfg_name:10s}  {k:14s}  median {statistics.median(v):6.2f} ms  speed-up over "
                      f"per tensor: median of paired rounds {statistics.median(ratios):.3f}x "
                      f"(quartiles {ratios[q]:.3f}-{ratios[-1 - q]:.3f}, {len(ratios)} rounds)")


if __name__ == "__main__":
    main()
