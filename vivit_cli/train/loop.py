"""The train loop: `run(cfg, workdir) -> summary`. `_train` reads top to bottom; each piece it calls is a plain
function named for what it does.

Where the initial state comes from, in this order (the order matters):
  1. the workdir's own newest readable checkpoint: a preempted, killed or crashed run resumes exactly
     (params, optimizer, step, rng and every process's data-iterator position);
  2. `model.init_from`: an image ViT inflated into the video model, or a video checkpoint to fine-tune;
  3. scratch (`models.init_params` from `train.seed`).

The workdir may be a gs:// URL (`vivit_cli.io` paths; Orbax writes there through tensorstore). A workdir
whose summary.json says "done" is left alone. A SIGTERM (or, on a multi-host slice, a preemption
notice on any host) saves a checkpoint at the next step all processes agree on and raises `Preempted`;
a NaN/inf loss raises `TrainingFailed` and the summary says "failed" with the reason.

The loop times its own steps (`runtime.timing.Stopwatch`) and hands what it measured (`StepTimes`) to `perf`, the
builder of summary.json's `perf` block that the caller passes (`vivit train` passes `bench.perf.train_perf`):
train/ never imports bench/.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Any, Callable

import numpy as np

from vivit_cli import runtime
from vivit_cli.errors import VivitError
from vivit_cli.eval.results import write_predictions
from vivit_cli.io import as_path, read_json, write_json, write_text
from vivit_cli.runtime.checkpoint import Checkpointer, has_checkpoints
from vivit_cli.runtime.timing import StepTimes, Stopwatch

from .logs import MetricsLog, Progress, itstime, note
from .tasks import VideoTask, eval_batch_count
from .wandb_log import WandbLogger


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


def run(cfg, workdir, *, task=None, perf: Callable | None = None) -> dict[str, Any]:
    """Trains `cfg` in `workdir` (created if needed) and returns the summary written to summary.json.
    `perf(cfg, num_classes, runtime.timing.StepTimes) -> dict`, when given, is summary.json's `perf` block."""
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
    if isinstance(saved, dict) and has_checkpoints(workdir):
        saved_cfg = config.from_dict(saved)
        if config.config_hash(saved_cfg) != config.config_hash(cfg):
            raise VivitError(f"{workdir} holds a run with a different config ({config.config_hash(saved_cfg)}, this "
                             f"one is {config.config_hash(cfg)}): use a new --workdir")
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        write_text(workdir / "config.json", config.to_json(cfg) + "\n")
    run_id = run_id_for(cfg, workdir)

    try:
        summary = _train(cfg, workdir, task, run_id, perf)
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


def _train(cfg, workdir, task, run_id: str, perf) -> dict[str, Any]:
    main, total = runtime.is_main(), cfg.train.steps

    # ---- Mesh, model, optimizer, the compiled steps ---------------------------------------------------
    c = compile_steps(cfg)

    # ---- Initial state (the order of the module docstring) and the input pipeline ---------------------
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.run.keep_checkpoints)
    state, rng, meta, origin = restore_or_init(cfg, ckpt, c)
    start = int(meta.get("step", 0))
    data_it = train_iterator(cfg, task, c, meta, workdir)

    # ---- Logging -----------------------------------------------------------------------------------
    metrics_log = MetricsLog(workdir / "metrics.jsonl", resume_step=start, enabled=main)
    wandb = WandbLogger(cfg, workdir, run_id, enabled=main)
    title = f"{task.kind} {cfg.model.variant}" if task.kind == "video" else "image ViT"
    note(start_note(cfg, workdir, title, origin, c), main)
    progress = Progress(total, start, title, enabled=main)
    stop = _StopFlag()
    clock = Stopwatch(cfg.train.batch_size, seconds=meta.get("train_seconds", 0.0))
    compiled, last_loss, pending = None, None, []

    # ---- Train loop --------------------------------------------------------------------------------
    try:
        clock.start(start)
        for step in range(start + 1, total + 1):
            batch = c.put_batch(next(data_it))
            if compiled is None:  # the first step compiles (or loads from the persistent cache): timed apart
                state, metrics, compiled = first_step(c, state, batch, rng)
                clock.lap(step, timed=False)
            else:
                state, metrics = c.run_train(state, batch, rng)
            pending.append(metrics)

            preempt = stop.due(step)
            log_now, ckpt_now = itstime(step, cfg.run.log_every, total), itstime(step, cfg.run.checkpoint_every, total)
            eval_now = cfg.train.eval_every > 0 and itstime(step, cfg.train.eval_every, total) and step < total
            if not (log_now or ckpt_now or eval_now or preempt):
                progress.update(step)
                continue
            record, pending = log_interval(pending, step, clock), []
            if eval_now:
                with clock.pause():  # eval time is not training time
                    record["top1"] = evaluate(cfg, task, c, state["params"])["top1"]
            if log_now or eval_now:
                metrics_log.write(record)
                wandb.log(record, step)
                last_loss = record["loss"]
            progress.update(step, record if log_now or eval_now else None)
            if ckpt_now or preempt:
                with clock.pause(training=True):  # the run's time, but no step's
                    save(ckpt, step, state, rng=rng, data_it=data_it, train_seconds=clock.train_seconds, cfg=cfg,
                         metrics_log=metrics_log)
            if preempt:
                ckpt.wait()
                progress.message(f"preempted: checkpoint saved at step {step}")
                raise Preempted(f"stopped at step {step} by SIGTERM; run the same command again to resume")
        ckpt.wait()

        # ---- Final evaluation and summary ------------------------------------------------------------
        s, predictions = final_summary(cfg, run_id, task, c, state["params"], clock, compiled, last_loss, perf)
        metrics_log.write({"step": total, "top1": s["top1"], "top5": s["top5"], "split": cfg.data.eval_split})
        wandb.log({"eval/top1": s["top1"], "eval/top5": s["top5"]}, total)
        wandb.finish(s)
        if main:
            write_predictions(workdir, predictions_key(s), **predictions)
            write_json(workdir / "summary.json", s)  # last: its presence means "done"
        progress.message(f"done: top1 {s['top1']:.4f}  top5 {s['top5']:.4f}  ({s['eval_videos']} {s['eval_split']} "
                         f"clips)  train {clock.train_seconds:.1f}s")
        return s
    except BaseException:
        wandb.finish(failed=True)
        raise
    finally:
        shut_down(stop, progress, metrics_log, ckpt)


# ---------------------------------------------------------------------------------------------------------
# the pieces `_train` calls, in the order it calls them


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The mesh, the train state's build (`train.state.TrainState`), where a batch lives, and the jitted steps.
    `train` is compiled apart (to time the compile); `run_train` and `eval` are what the loop calls."""

    mesh: Any
    local_batch: int  # this process's rows of the global batch
    batch_sharding: Any
    replicated: Any
    state: Any  # TrainState: optimizer, shardings, abstract state (what a checkpoint restores into), init
    train: Any
    run_train: Callable
    eval: Callable

    def put_batch(self, local: dict) -> dict:
        """This process's rows of a batch -> the global batch, split over the mesh's "data" axis."""
        from vivit_cli.runtime import mesh as mesh_lib

        return mesh_lib.global_batch({"video": local["video"], "label": local["label"]}, self.batch_sharding)


def compile_steps(cfg) -> Compiled:
    from vivit_cli import models
    from vivit_cli.runtime import cpu, mesh as mesh_lib

    from . import state as state_lib, step as step_lib

    nc = cfg.data.num_classes
    mesh = mesh_lib.make_mesh(cfg.train.mesh_model)
    local_batch = mesh_lib.check_batch(mesh, cfg.train.batch_size)
    repl, bsh = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
    model = models.build_model(cfg, nc)
    ts = state_lib.build_state(cfg, nc, mesh)
    train = step_lib.compile_train_step(cfg, model, ts.tx, ts.schedule, nc, ts.shardings, {"video": bsh, "label": bsh},
                                        repl)
    eval_step = step_lib.compile_eval_step(model, ts.shardings["params"],
                                           {"video": bsh, "label": bsh, "index": bsh, "mask": bsh}, repl)
    # Over several CPU devices, each launch waits for the last (XLA's CPU runtime can deadlock otherwise).
    return Compiled(mesh=mesh, local_batch=local_batch, batch_sharding=bsh, replicated=repl, state=ts, train=train,
                    run_train=cpu.one_launch_at_a_time(train), eval=cpu.one_launch_at_a_time(eval_step))


def restore_or_init(cfg, ckpt, c: Compiled):
    """(state, rng, meta, origin) in the module docstring's order; meta is the checkpoint's ({} when none)."""
    import jax
    import jax.numpy as jnp

    from vivit_cli import models
    from vivit_cli.runtime import mesh as mesh_lib

    from . import init_from

    init_rng, rng = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    restored = ckpt.restore_latest(c.state.abstract)
    if restored is not None:
        state, meta = restored
        state["step"] = mesh_lib.put_global(np.int32(meta["step"]), c.replicated)
        rng = jnp.asarray(np.asarray(meta["rng"], np.uint32))
        origin = f"resumed from step {meta['step']}"
    else:
        meta = {}
        params = _host_tree(models.init_params(cfg, cfg.data.num_classes, init_rng))
        origin = "from scratch"
        if cfg.model.init_from not in ("", "none"):
            params, origin = init_from.initial_params(cfg, params, cfg.model.init_from)
        state = c.state.init(mesh_lib.put_global(params, c.state.shardings["params"]))
    return state, mesh_lib.put_global(np.asarray(jax.device_get(rng)), c.replicated), meta, origin


def _host_tree(tree):
    import jax

    return jax.tree.map(np.asarray, jax.device_get(tree))


def train_iterator(cfg, task, c: Compiled, meta: dict, workdir):
    """This process's shard of the training stream; at the checkpoint's position when resuming."""
    import jax

    pid, pcount = jax.process_index(), jax.process_count()
    it = task.train_iterator(cfg, batch_size=c.local_batch, shard_index=pid, shard_count=pcount, seed=cfg.train.seed)
    if meta:
        states = meta.get("data_states") or []
        if len(states) != pcount:
            raise VivitError(f"{workdir}: the checkpoint was written by {len(states)} processes, this run has "
                             f"{pcount}; resume with the same number of processes")
        it.set_state(states[pid])
    return it


def start_note(cfg, workdir, title: str, origin: str, c: Compiled) -> str:
    """The one line a run starts with: what trains, from where, on what."""
    import jax

    from vivit_cli import models

    split = ""
    if cfg.train.mesh_model > 1:
        leaves = jax.tree.leaves(c.state.shardings["params"])
        n = sum(1 for s in leaves if any(a is not None for a in s.spec))
        split = f", {n}/{len(leaves)} param tensors split over a model axis of {cfg.train.mesh_model}"
    return (f"{workdir.name}: {title}, {models.count_params(c.state.abstract['params']):,} params, {origin}, "
            f"{runtime.device_description()}, global batch {cfg.train.batch_size}{split}")


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


def first_step(c: Compiled, state, batch, rng):
    """(state, metrics, compiled): the first step, its compile timed apart (the call then reuses the executable)
    and waited for. compiled = (executable, compile seconds, compile source, seconds to the first result)."""
    import jax

    from vivit_cli.runtime.timing import compile_timed

    t = time.time()
    executable, seconds, source = compile_timed(c.train, state, batch, rng)
    state, metrics = c.run_train(state, batch, rng)
    jax.block_until_ready(metrics)
    return state, metrics, (executable, seconds, source, time.time() - t)


def log_interval(pending: list, step: int, clock) -> dict[str, Any]:
    """The record of the steps since the last one (their mean loss, the last one's other metrics): one host
    transfer of every step's metrics, so that no non-finite loss slips past a checkpoint. Ends the clock's lap."""
    import jax

    fetched = jax.device_get(pending)
    losses = np.array([float(m["loss"]) for m in fetched])
    if not np.all(np.isfinite(losses)):
        bad = int(np.argmax(~np.isfinite(losses)))
        raise TrainingFailed(f"loss became {losses[bad]} at step {step - len(losses) + bad + 1}")
    clips_per_s = clock.lap(step)
    last = fetched[-1]
    return {"step": step, "loss": float(losses.mean()), "lr": float(last["lr"]), "clips_per_s": round(clips_per_s, 2),
            "accuracy": float(last["accuracy"]), "grad_norm": float(last["grad_norm"])}


def evaluate(cfg, task, c: Compiled, params) -> dict[str, Any]:
    """top1/top5 over the eval split (every process its shard, padded to the same number of batches), every
    clip's best classes (`predictions`: index, label, top5, sorted by index; the same on every process), and the
    compiled eval step's time per clip on the last batch (the paper's runtime column)."""
    import jax

    from vivit_cli import config
    from vivit_cli.eval.results import predictions_arrays
    from vivit_cli.runtime import mesh as mesh_lib
    from vivit_cli.runtime.timing import time_calls

    pid, pcount, b = jax.process_index(), jax.process_count(), c.local_batch
    views = (1, 1) if task.kind == "image" else config.parse_views(cfg.data.eval_views)
    split = cfg.data.eval_split
    it = task.eval_iterator(cfg, split=split, views=views, batch_size=b, shard_index=pid, shard_count=pcount)
    frames = 1 if task.kind == "image" else cfg.data.frames
    shape = (b, 1 if task.kind == "image" else views[0] * views[1], frames, cfg.data.crop, cfg.data.crop, 3)
    keys = ("video", "label", "index", "mask")
    outs, batch = [], None
    for _ in range(eval_batch_count(task.num_examples(split), b, pcount)):
        local = next(it, None)
        if local is None:  # this process's shard is exhausted; the others may still have clips
            local = {"video": np.zeros(shape, np.float32), "label": np.zeros(b, np.int32),
                     "index": np.full(b, -1, np.int32), "mask": np.zeros(b, bool)}
        batch = mesh_lib.global_batch({k: local[k] for k in keys}, c.batch_sharding)
        outs.append(c.eval(params, batch))
    outs = jax.device_get(outs)
    totals = {k: float(sum(float(s[k]) for s in outs)) for k in ("top1", "top5", "count")}
    count = max(totals["count"], 1.0)
    keep = [o["mask"].astype(bool) for o in outs]
    predictions = predictions_arrays(*(np.concatenate([o[k][m] for o, m in zip(outs, keep)])
                                       for k in ("index", "label", "topk")))
    forward_ms = None
    if batch is not None:  # the eval loop above warmed the step up
        seconds = time_calls(lambda: c.eval(params, batch), warmup=0, repeats=3)["median_s"]
        forward_ms = round(1000.0 * seconds / (batch["video"].shape[0] * shape[1]), 4)
    return {"top1": totals["top1"] / count, "top5": totals["top5"] / count, "videos": int(totals["count"]),
            "forward_ms_per_clip": forward_ms, "predictions": predictions}


def save(ckpt, step: int, state, *, rng, data_it, train_seconds: float, cfg, metrics_log) -> None:
    """Starts writing checkpoint `step`: the state, and beside it what a resume needs (the rng, every process's
    data position, the training time so far)."""
    import jax

    from vivit_cli import config

    meta = {"step": step, "rng": np.asarray(jax.device_get(rng)).tolist(),
            "data_states": _gather_json(data_it.get_state()), "train_seconds": train_seconds,
            "config_hash": config.config_hash(cfg)}
    ckpt.save(step, state, meta)
    metrics_log.flush()  # remote logs are written in batches: never let one lag behind a checkpoint


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


def final_summary(cfg, run_id: str, task, c: Compiled, params, clock, compiled, last_loss, perf):
    """(summary.json of a finished run, with the final eval; its per-clip predictions). `perf` (process 0) builds
    its perf block from the steps' times, after the eval so that the matmul peak it measures takes no time from
    training."""
    from vivit_cli import models
    from vivit_cli.eval.results import predictions_path

    t_eval = time.time()
    ev = evaluate(cfg, task, c, params)
    eval_seconds = time.time() - t_eval
    info = models.describe(cfg, cfg.data.num_classes)
    summary = _base_summary(cfg, run_id, task) | {
        "status": "done", "top1": ev["top1"], "top5": ev["top5"], "eval_split": cfg.data.eval_split,
        "eval_views": "1x1" if task.kind == "image" else cfg.data.eval_views, "eval_videos": ev["videos"],
        "params": int(info["params"]), "gflops": info["gflops"], "steps": cfg.train.steps,
        "train_seconds": round(clock.train_seconds, 3), "eval_seconds": round(eval_seconds, 3),
        "compile_seconds": None if compiled is None else round(compiled[3], 3),
        "final_loss": last_loss, "forward_ms_per_clip": ev["forward_ms_per_clip"],
    }
    summary["predictions"] = predictions_path(predictions_key(summary))
    if perf is not None and runtime.is_main():
        executable, seconds, source = compiled[:3] if compiled else (None, None, None)
        summary["perf"] = perf(cfg, cfg.data.num_classes, StepTimes(
            intervals=tuple(clock.intervals), batch_size=cfg.train.batch_size, compiled=executable,
            compile_seconds=seconds, compile_source=source))
    return summary, ev["predictions"]


def predictions_key(summary: dict) -> str:
    """The eval key of a summary's final evaluation, "<split>@<T>x<S>", as `vivit eval` names its entries."""
    return f"{summary['eval_split']}@{summary['eval_views']}"


def shut_down(stop, progress, metrics_log, ckpt) -> None:
    """Whatever ended the run: the SIGTERM handler back, the display and the log closed, pending saves done."""
    stop.restore()
    progress.close()
    metrics_log.close()
    try:
        ckpt.wait()
        ckpt.close()
    except Exception:  # noqa: BLE001 - never mask the original error with a shutdown one
        pass


def _base_summary(cfg, run_id: str, task) -> dict[str, Any]:
    from vivit_cli import config, models

    return {"run_id": run_id, "config_hash": config.config_hash(cfg), "num_classes": cfg.data.num_classes,
            "kind": getattr(task, "kind", "video"), "device": runtime.device_description(),
            "numerics": models.NUMERICS_VERSION}


# ---------------------------------------------------------------------------------------------------------
# image pretraining


def pretrain_image(cfg, workdir, *, perf: Callable | None = None) -> dict[str, Any]:
    """Trains the image ViT of `cfg` on the still images of its data; `model.init_from=<workdir>` then
    initialises video models from it."""
    from vivit_cli.config import image_config

    from .tasks import ImageTask

    img_cfg = image_config(cfg)
    return run(img_cfg, workdir, task=ImageTask(img_cfg), perf=perf)
