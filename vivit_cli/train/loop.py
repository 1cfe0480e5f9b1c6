"""The train loop: `run(cfg, workdir) -> summary`. Read it top to bottom; each banner is one stage.

Where the initial state comes from, in this order (the order matters):
  1. the workdir's own newest readable checkpoint: a preempted, killed or crashed run resumes exactly
     (params, optimizer, step, rng and every process's data-iterator position);
  2. `model.init_from`: an image ViT inflated into the video model, or a video checkpoint to fine-tune;
  3. scratch (`models.init_params` from `train.seed`).

The workdir may be a gs:// URL (`vivit_cli.io` paths; Orbax writes there through tensorstore). A workdir
whose summary.json says "done" is left alone. A SIGTERM (or, on a multi-host slice, a preemption
notice on any host) saves a checkpoint at the next step all processes agree on and raises `Preempted`;
a NaN/inf loss raises `TrainingFailed` and the summary says "failed" with the reason.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Any

import numpy as np

from vivit_cli.errors import VivitError
from vivit_cli.io import as_path, read_json, write_json, write_text

from vivit_cli import runtime

from .logs import MetricsLog, Progress, itstime, note
from .tasks import VideoTask, eval_batch_count


class TrainingFailed(Exception):
    """The run cannot go on (a non-finite loss); the reason goes into summary.json."""


class Preempted(Exception):
    """SIGTERM or a slice preemption notice: a checkpoint was saved, the run should be restarted later."""

    exit_code = 143  # 128 + SIGTERM, what a scheduler expects from a terminated job


def run_id_for(cfg, workdir) -> str:
    """The sweep's run id (cell.json) when there is one, else the config hash."""
    from vivit_cli import config

    cell = read_json(workdir / "cell.json")
    if isinstance(cell, dict) and cell.get("run_id"):
        return str(cell["run_id"])
    return config.config_hash(cfg)


def run(cfg, workdir, *, task=None) -> dict[str, Any]:
    """Trains `cfg` in `workdir` (created if needed) and returns the summary written to summary.json."""
    runtime.setup()
    from vivit_cli import config

    workdir = as_path(workdir, absolute=True)
    main = runtime.is_main()

    # ---- Done already? ---------------------------------------------------------------------------------
    previous = read_json(workdir / "summary.json")
    if isinstance(previous, dict) and previous.get("status") == "done":
        note(f"{workdir}: already done (top1 {previous.get('top1')}); nothing to do", main)
        return previous

    # ---- Task and resolved config --------------------------------------------------------------------
    task = task or VideoTask(cfg)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, num_classes=task.num_classes))
    config.validate(cfg)
    saved = read_json(workdir / "config.json")
    from vivit_cli.runtime.checkpoint import has_checkpoints

    has_checkpoints = has_checkpoints(workdir)
    if isinstance(saved, dict) and has_checkpoints:
        saved_cfg = config.from_dict(saved)
        if config.config_hash(saved_cfg) != config.config_hash(cfg):
            raise VivitError(f"{workdir} holds a run with a different config ({config.config_hash(saved_cfg)}, this "
                             f"one is {config.config_hash(cfg)}): use a new --workdir")
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        write_text(workdir / "config.json", config.to_json(cfg) + "\n")
    run_id = run_id_for(cfg, workdir)

    try:
        summary = _train(cfg, workdir, task, run_id)
    except (Preempted, KeyboardInterrupt):
        raise
    except BaseException as e:
        reason = str(e) if isinstance(e, (TrainingFailed, VivitError)) else f"{type(e).__name__}: {e}"
        summary = _base_summary(cfg, run_id, task) | {"status": "failed", "error": reason.splitlines()[0][:500]}
        if main:
            write_json(workdir / "summary.json", summary)
        if isinstance(e, TrainingFailed):
            note(f"training failed: {reason}", main)
            return summary
        raise
    return summary


def _forward_ms_per_clip(eval_step, params, batch, views: int, repeats: int = 3) -> float | None:
    """Inference time per clip (the paper's runtime column): the compiled eval step on a device-resident
    batch, median of a few calls after the eval loop has warmed it up."""
    import jax

    if batch is None:
        return None
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(eval_step(params, batch))
        times.append(time.perf_counter() - t)
    clips = batch["video"].shape[0] * views
    return round(1000.0 * float(np.median(times)) / clips, 4)


def _base_summary(cfg, run_id: str, task) -> dict[str, Any]:
    from vivit_cli import config, models

    return {"run_id": run_id, "config_hash": config.config_hash(cfg), "num_classes": cfg.data.num_classes,
            "kind": getattr(task, "kind", "video"), "device": runtime.device_description(),
            "numerics": models.NUMERICS_VERSION}


class _StopFlag:
    """Turns SIGTERM into a flag the loop polls; on several processes JAX's preemption service spreads a
    notice to all hosts and picks a step they all reach, so every process saves the same step."""

    def __init__(self):
        self.requested = False
        self._previous = None
        if runtime.multi_process():
            return  # the coordination service installed its own SIGTERM handling
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def due(self, step: int) -> bool:
        if runtime.multi_process():
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _gather_json(value) -> list:
    """Every process's JSON-able `value`, in process order (only process 0 writes the checkpoint meta)."""
    import json

    import jax

    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    blob = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([blob.size], np.int32)).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:blob.size] = blob
    rows = multihost_utils.process_allgather(padded).reshape(len(sizes), -1)
    return [json.loads(bytes(rows[i, :sizes[i]]).decode()) for i in range(len(sizes))]


def _host_tree(tree):
    import jax

    return jax.tree.map(np.asarray, jax.device_get(tree))


def _train(cfg, workdir, task, run_id: str) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from vivit_cli import config, models
    from vivit_cli.bench import perf as bench_perf
    from vivit_cli.runtime import checkpoint, cpu, mesh as mesh_lib
    from vivit_cli.runtime.timing import compile_timed

    from . import init_from, state as state_lib, step as step_lib
    from .wandb_log import WandbLogger

    main = runtime.is_main()
    nc, total = cfg.data.num_classes, cfg.train.steps
    pid, pcount = jax.process_index(), jax.process_count()

    # ---- Mesh --------------------------------------------------------------------------------------
    mesh = mesh_lib.make_mesh(cfg.train.mesh_model)
    local_batch = mesh_lib.check_batch(mesh, cfg.train.batch_size)
    repl, bsh = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)

    # ---- Model and optimizer -----------------------------------------------------------------------
    model = models.build_model(cfg, nc)
    param_shapes = models.param_shapes(cfg, nc)
    layout = state_lib.layout_for(mesh, param_shapes, cfg.train)  # per tensor, or flat (train/state.py)
    tx, schedule = layout.tx, layout.schedule
    saved = layout.shardings(mesh, saved=True)  # checkpoints hold the per-tensor layout whatever the step holds
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), layout.saved_abstract(),
                            saved)
    shardings = layout.shardings(mesh)

    # ---- Initial state: own checkpoint, else init_from, else scratch ----------------------------------
    ckpt = checkpoint.Checkpointer(workdir / "checkpoints", keep=cfg.run.keep_checkpoints)
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    restored = ckpt.restore_latest(abstract)
    if restored is not None:
        state, meta = restored
        start = int(meta["step"])
        state["step"] = mesh_lib.put_global(np.int32(start), repl)
        state = layout.held_from_saved(state, mesh)
        train_rng = jnp.asarray(np.asarray(meta["rng"], np.uint32))
        origin = f"resumed from step {start}"
    else:
        meta, start = {}, 0
        params = _host_tree(models.init_params(cfg, nc, init_rng))
        origin = "from scratch"
        if cfg.model.init_from not in ("", "none"):
            params, origin = init_from.initial_params(cfg, params, cfg.model.init_from)
        state = layout.init(mesh_lib.put_global(params, saved["params"]), mesh)
    train_rng = mesh_lib.put_global(np.asarray(jax.device_get(train_rng)), repl)

    # ---- Input pipeline ----------------------------------------------------------------------------
    data_it = task.train_iterator(cfg, batch_size=local_batch, shard_index=pid, shard_count=pcount,
                                  seed=cfg.train.seed)
    if restored is not None:
        states = meta.get("data_states") or []
        if len(states) != pcount:
            raise VivitError(f"{workdir}: the checkpoint was written by {len(states)} processes, this run has "
                             f"{pcount}; resume with the same number of processes")
        data_it.set_state(states[pid])

    # ---- Compiled steps ----------------------------------------------------------------------------
    batch_sh = {"video": bsh, "label": bsh}
    train_step = step_lib.compile_train_step(cfg, model, tx, schedule, nc, shardings, batch_sh, repl,
                                             model_params=layout.model_params)
    # Over several CPU devices, each launch waits for the last (XLA's CPU runtime can deadlock otherwise).
    run_step = cpu.one_launch_at_a_time(train_step)
    eval_step = cpu.one_launch_at_a_time(
        step_lib.compile_eval_step(model, saved["params"], {"video": bsh, "label": bsh, "mask": bsh}, repl))

    def evaluate(held_params) -> dict[str, float]:
        params = layout.tree_params(held_params, mesh)
        views = (1, 1) if task.kind == "image" else config.parse_views(cfg.data.eval_views)
        split = cfg.data.eval_split
        n_batches = eval_batch_count(task.num_examples(split), local_batch, pcount)
        it = task.eval_iterator(cfg, split=split, views=views, batch_size=local_batch, shard_index=pid,
                                shard_count=pcount)
        frames = 1 if task.kind == "image" else cfg.data.frames
        shape = (local_batch, 1 if task.kind == "image" else views[0] * views[1], frames, cfg.data.crop,
                 cfg.data.crop, 3)
        sums, batch = [], None
        for _ in range(n_batches):
            b = next(it, None)
            if b is None:  # this process's shard is exhausted; the others may still have clips
                b = {"video": np.zeros(shape, np.float32), "label": np.zeros(local_batch, np.int32),
                     "mask": np.zeros(local_batch, bool)}
            batch = mesh_lib.global_batch({"video": b["video"], "label": b["label"], "mask": b["mask"]}, bsh)
            sums.append(eval_step(params, batch))
        totals = {k: float(sum(float(s[k]) for s in sums)) for k in ("top1", "top5", "count")}
        count = max(totals["count"], 1.0)
        return {"top1": totals["top1"] / count, "top5": totals["top5"] / count, "videos": int(totals["count"]),
                "forward_ms_per_clip": _forward_ms_per_clip(eval_step, params, batch, shape[1])}

    # ---- Logging -----------------------------------------------------------------------------------
    metrics_log = MetricsLog(workdir / "metrics.jsonl", resume_step=start, enabled=main)
    wandb = WandbLogger(cfg, workdir, run_id, enabled=main)
    title = f"{task.kind} {cfg.model.variant}" if task.kind == "video" else "image ViT"
    state_note = ""
    if cfg.train.mesh_model > 1:
        leaves = jax.tree.leaves(saved["params"])
        split = sum(1 for s in leaves if any(a is not None for a in s.spec))
        state_note = f", {split}/{len(leaves)} param tensors split over a model axis of {cfg.train.mesh_model}"
    elif layout.flat:
        state_note = ", params and optimizer state held flat"
    note(f"{workdir.name}: {title}, {models.count_params(param_shapes):,} params, {origin}, "
         f"{runtime.device_description()}, global batch {cfg.train.batch_size}{state_note}", main)
    progress = Progress(total, start, title, enabled=main)
    stop = _StopFlag()
    train_seconds = float(meta.get("train_seconds", 0.0))

    def save(step: int) -> None:
        m = {"step": step, "rng": np.asarray(jax.device_get(train_rng)).tolist(),
             "data_states": _gather_json(data_it.get_state()), "train_seconds": train_seconds,
             "config_hash": config.config_hash(cfg)}
        ckpt.save(step, layout.saved_from_held(state, mesh), m)
        metrics_log.flush()  # remote logs are written in batches: never let one lag behind a checkpoint

    # ---- Train loop --------------------------------------------------------------------------------
    pending: list[dict] = []
    compile_seconds, throughput = None, []
    compiled_step = (None, None, None)  # the train step's (executable, compile seconds, source): the perf record
    t_mark, steps_since = time.time(), 0
    try:
        for step in range(start + 1, total + 1):
            local = next(data_it)
            batch = mesh_lib.global_batch({"video": local["video"], "label": local["label"]}, bsh)
            t_step = time.time()
            if compile_seconds is None:  # compiled apart to time it alone; the call below reuses the executable
                compiled_step = compile_timed(train_step, state, batch, train_rng)
            state, metrics = run_step(state, batch, train_rng)
            pending.append(metrics)
            if compile_seconds is None:  # the first step compiles (or loads from the persistent cache)
                jax.block_until_ready(metrics)
                compile_seconds = time.time() - t_step
                train_seconds += time.time() - t_mark
                t_mark, steps_since = time.time(), 0
            else:
                steps_since += 1

            preempt = stop.due(step)
            log_now, ckpt_now = itstime(step, cfg.run.log_every, total), itstime(step, cfg.run.checkpoint_every, total)
            eval_now = cfg.train.eval_every > 0 and itstime(step, cfg.train.eval_every, total) and step < total
            if log_now or ckpt_now or eval_now or preempt:
                # One host transfer per interval: the metrics of every step since the last one, so no
                # non-finite loss slips past a checkpoint.
                fetched = jax.device_get(pending)
                pending = []
                losses = np.array([float(m["loss"]) for m in fetched])
                if not np.all(np.isfinite(losses)):
                    bad = int(np.argmax(~np.isfinite(losses)))
                    raise TrainingFailed(f"loss became {losses[bad]} at step {step - len(losses) + bad + 1}")
                now = time.time()
                train_seconds += now - t_mark
                clips_per_s = steps_since * cfg.train.batch_size / max(now - t_mark, 1e-9) if steps_since else 0.0
                if steps_since:
                    throughput.append((steps_since, now - t_mark))
                t_mark, steps_since = now, 0
                record = {"step": step, "loss": float(losses.mean()), "lr": float(fetched[-1]["lr"]),
                          "clips_per_s": round(clips_per_s, 2), "accuracy": float(fetched[-1]["accuracy"]),
                          "grad_norm": float(fetched[-1]["grad_norm"])}
                if eval_now:
                    record.update(top1=evaluate(state["params"])["top1"])
                    t_mark = time.time()  # eval time is not training time
                if log_now or eval_now:
                    metrics_log.write(record)
                    wandb.log(record, step)
                    progress.update(step, record)
                else:
                    progress.update(step)
                if ckpt_now or preempt:
                    save(step)
                if ckpt_now or eval_now:  # keep save/eval time out of the next interval's clips/s
                    now = time.time()
                    train_seconds += now - t_mark
                    t_mark = now
                if preempt:
                    ckpt.wait()
                    progress.message(f"preempted: checkpoint saved at step {step}")
                    raise Preempted(f"stopped at step {step} by SIGTERM; run the same command again to resume")
            else:
                progress.update(step)
        ckpt.wait()

        # ---- Final evaluation and summary ------------------------------------------------------------
        t_eval = time.time()
        ev = evaluate(state["params"])
        eval_seconds = time.time() - t_eval
        steps_timed = sum(n for n, _ in throughput)
        info = models.describe(cfg, nc)
        summary = _base_summary(cfg, run_id, task) | {
            "status": "done", "top1": ev["top1"], "top5": ev["top5"], "eval_split": cfg.data.eval_split,
            "eval_views": "1x1" if task.kind == "image" else cfg.data.eval_views, "eval_videos": ev["videos"],
            "params": int(info["params"]), "gflops": info["gflops"], "steps": total,
            "train_seconds": round(train_seconds, 3), "eval_seconds": round(eval_seconds, 3),
            "compile_seconds": None if compile_seconds is None else round(compile_seconds, 3),
            "clips_per_s": round(steps_timed * cfg.train.batch_size / max(sum(t for _, t in throughput), 1e-9), 2)
            if steps_timed else None,
            "final_loss": None, "forward_ms_per_clip": ev["forward_ms_per_clip"],
        }
        if main:  # after the final eval: the matmul peak it measures takes no time from training
            summary["perf"] = bench_perf.train_perf(
                cfg, nc, intervals=throughput, batch_size=cfg.train.batch_size, compiled=compiled_step[0],
                compile_seconds=compiled_step[1], compile_source=compiled_step[2])
        metrics_log.flush()
        last = _last_record(workdir / "metrics.jsonl") if main else None
        if last:
            summary["final_loss"] = last.get("loss")
        metrics_log.write({"step": total, "top1": ev["top1"], "top5": ev["top5"], "split": cfg.data.eval_split})
        wandb.log({"eval/top1": ev["top1"], "eval/top5": ev["top5"]}, total)
        wandb.finish(summary)
        if main:
            write_json(workdir / "summary.json", summary)  # last: its presence means "done"
        progress.message(f"done: top1 {ev['top1']:.4f}  top5 {ev['top5']:.4f}  ({ev['videos']} {cfg.data.eval_split} "
                         f"clips)  train {train_seconds:.1f}s")
        return summary
    except BaseException:
        wandb.finish(failed=True)
        raise
    finally:
        stop.restore()
        progress.close()
        metrics_log.close()
        try:
            ckpt.wait()
            ckpt.close()
        except Exception:  # noqa: BLE001 - never mask the original error with a shutdown one
            pass


def _last_record(path) -> dict | None:
    import json

    try:
        for line in reversed(path.read_text().splitlines()):
            rec = json.loads(line)
            if "loss" in rec:
                return rec
    except (OSError, json.JSONDecodeError):
        return None
    return None


# ---------------------------------------------------------------------------------------------------------
# image pretraining


def pretrain_image(cfg, workdir) -> dict[str, Any]:
    """Trains the image ViT of `cfg` on the still images of its data; `model.init_from=<workdir>` then
    initialises video models from it."""
    from vivit_cli.config import image_config

    from .tasks import ImageTask

    img_cfg = image_config(cfg)
    return run(img_cfg, workdir, task=ImageTask(img_cfg))


def exit_code(summary: dict[str, Any]) -> int:
    return 0 if summary.get("status") == "done" else 1
