"""The train loop: `run(cfg, workdir) -> summary`, and `run_group(cfgs, workdirs) -> summaries` for seeds of one
config trained together. `_train` reads top to bottom; each piece it calls is a plain function named for what it
does. A single run is a group of one seed, with no seed axis anywhere (train/seeds.py): its numbers are what they
were before groups existed, digit for digit.

Where the initial state comes from, in this order (the order matters):
  1. the workdir's own newest readable checkpoint: a preempted, killed or crashed run resumes exactly
     (params, optimizer, step, rng and every process's data-iterator position). A group resumes from the newest
     step that every seed's workdir holds readable: a kill can come between two seeds' saves, so they may be one
     save apart; a seed's newer steps are deleted and recomputed exactly (a group keeps at least 2 checkpoints and
     starts a save only when every seed's previous one is complete, so a common step always survives). Seeds
     with no common step (one has no checkpoint) all start over;
  2. `model.init_from`: an image ViT inflated into the video model, or a video checkpoint to fine-tune;
  3. scratch (`models.init_params` from `train.seed`: each seed its own init).

A group (`run_group`): K configs identical but for train.seed, trained as ONE compiled program with a leading seed
axis on the state, the rng and the batches (train/seeds.py). Each seed keeps its own init, data order and
augmentation (its own data iterator, from its own seed), dropout and mixup draws, and lands in its own workdir
with everything a single run writes (config.json, metrics.jsonl, checkpoints of its own slice, summary.json,
predictions/, W&B). Seeds already done are left alone: only the others train. A seed whose loss turns non-finite
fails alone: its summary says "failed" with the step, and from then on it is neither logged, saved nor evaluated;
the program keeps computing it (its rows cost what they cost, but the compiled program stays the one it is).

The workdir may be a gs:// URL (`vivit_cli.io` paths; Orbax writes there through tensorstore). A workdir
whose summary.json says "done" is left alone. A SIGTERM (or, on a multi-host slice, a preemption
notice on any host) saves a checkpoint at the next step all processes agree on and raises `Preempted`;
a NaN/inf loss ends the run (or the seed) with a summary that says "failed" and why.

The loop times its own steps (`runtime.timing.Stopwatch`) and hands what it measured (`StepTimes`) to `perf`, the
builder of summary.json's `perf` block that the caller passes (`vivit train` passes `bench.perf.train_perf`):
train/ never imports bench/. In a group each seed's clips/s are its own batch over the group's step time (the sum
over seeds is the group's), and the perf block, built once, is the group program's.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Any, Callable

import numpy as np

from vivit_cli import runtime
from vivit_cli.data.batches import masked_batch
from vivit_cli.errors import VivitError
from vivit_cli.eval.results import predictions_path, write_predictions
from vivit_cli.io import as_path, read_json, write_json, write_text
from vivit_cli.runtime.checkpoint import Checkpointer, has_checkpoints
from vivit_cli.runtime.timing import StepTimes, Stopwatch

from .logs import MetricsLog, Progress, itstime, note
from .tasks import VideoTask, eval_batch_count
from .wandb_log import WandbLogger


class Preempted(Exception):
    """SIGTERM or a slice preemption notice: a checkpoint was saved, the run should be restarted later."""

    exit_code = 143  # 128 + SIGTERM, what a scheduler expects from a terminated job


@dataclasses.dataclass
class Seed:
    """One seed of a group: its resolved config, workdir and run id, and what the loop keeps for it. `summary` is
    set once it is done or failed; from then on it is out of everything the run writes."""

    cfg: Any
    workdir: Any
    run_id: str = ""
    summary: dict | None = None
    ckpt: Any = None
    data: Any = None
    log: Any = None
    wandb: Any = None
    last_loss: float | None = None

    @property
    def live(self) -> bool:
        return self.summary is None


def live(seeds: list[Seed], items) -> list[tuple[Seed, Any]]:
    """(seed, item) for the seeds still training, of a list with one item per seed."""
    return [(s, x) for s, x in zip(seeds, items) if s.live]


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
    return run_group([cfg], [workdir], task=task, perf=perf)[0]


def run_group(cfgs, workdirs, *, task=None, perf: Callable | None = None) -> list[dict[str, Any]]:
    """Trains the seeds `cfgs` (one config but for train.seed), seed i in `workdirs[i]`, as one program; returns
    their summaries in that order (a seed done already: its summary as it was)."""
    runtime.setup()
    from . import seeds as seeds_lib

    if len(cfgs) != len(workdirs) or not cfgs:
        raise ValueError("run_group: one workdir per config")
    seeds_lib.same_but_seed(cfgs)
    seeds = [Seed(cfg, as_path(w, absolute=True)) for cfg, w in zip(cfgs, workdirs)]
    if len({str(s.workdir) for s in seeds}) < len(seeds):
        raise VivitError("two seeds of a group have the same workdir: give each seed its own (e.g. a {seed} in it)")
    main = runtime.is_main()

    # ---- Done already? ---------------------------------------------------------------------------------
    for s in seeds:
        previous = read_json(s.workdir / "summary.json")
        if isinstance(previous, dict) and previous.get("status") == "done":
            note(f"{s.workdir}: already done (top1 {previous.get('top1')}); nothing to do", main)
            s.summary = previous
    todo = [s for s in seeds if s.live]
    if not todo:
        return [s.summary for s in seeds]

    # ---- Task and resolved configs -------------------------------------------------------------------
    task = task or VideoTask(todo[0].cfg)
    for s in todo:
        s.cfg = resolve_config(s.cfg, s.workdir, task, main)
        s.run_id = run_id_for(s.cfg, s.workdir)

    try:
        _train(todo, task, perf)
    except (Preempted, KeyboardInterrupt):
        raise
    except BaseException as e:
        reason = str(e) if isinstance(e, VivitError) else f"{type(e).__name__}: {e}"
        for s in todo:
            if s.live:
                fail(s, reason, task, main)
        raise
    return [s.summary for s in seeds]


def resolve_config(cfg, workdir, task, main: bool):
    """The config with the task's class count, validated, refused if the workdir holds another config's run,
    and written to config.json."""
    from vivit_cli import config

    cfg = cfg.replace(data=dataclasses.replace(cfg.data, num_classes=task.num_classes,
                                               heads=config.format_heads(getattr(task, "heads", ()))))
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
    return cfg


def fail(s: Seed, reason: str, task, main: bool) -> None:
    """Seed `s` failed: its summary says so and why; it trains no further."""
    s.summary = _base_summary(s.cfg, s.run_id, task) | {"status": "failed", "error": reason.splitlines()[0][:500]}
    if s.wandb is not None:
        s.wandb.finish(failed=True)
    if main:
        write_json(s.workdir / "summary.json", s.summary)


def _train(seeds: list[Seed], task, perf) -> None:
    cfg, main, total, k = seeds[0].cfg, runtime.is_main(), seeds[0].cfg.train.steps, len(seeds)

    # ---- Mesh, model, optimizer, the compiled steps ---------------------------------------------------
    c = compile_steps(cfg, k)

    # ---- Initial state (the order of the module docstring) and the input pipelines --------------------
    for s in seeds:
        s.ckpt = Checkpointer(s.workdir / "checkpoints", keep=keep_checkpoints(cfg, k))
    state, rng, metas, origin = restore_or_init(seeds, c)
    start = int(metas[0].get("step", 0))
    for s, meta in zip(seeds, metas):
        s.data = train_iterator(s.cfg, task, c, meta, s.workdir)

    # ---- Logging -----------------------------------------------------------------------------------
    for s in seeds:
        s.log = MetricsLog(s.workdir / "metrics.jsonl", resume_step=start, enabled=main)
        s.wandb = WandbLogger(s.cfg, s.workdir, s.run_id, enabled=main, alongside=k > 1)
    title = (f"{task.kind} {cfg.model.variant}" if task.kind == "video" else "image ViT") + \
        (f", seeds {'/'.join(str(s.cfg.train.seed) for s in seeds)}" if k > 1 else "")
    note(start_note(seeds, title, origin, c), main)
    progress = Progress(total, start, title, enabled=main)
    stop = _StopFlag()
    clock = Stopwatch(cfg.train.batch_size, seconds=metas[0].get("train_seconds", 0.0))
    compiled, pending = None, []

    # ---- Train loop --------------------------------------------------------------------------------
    try:
        clock.start(start)
        for step in range(start + 1, total + 1):
            batch = c.put_batch([next(s.data) for s in seeds])  # a failed seed's too: the program stays the same
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
            records, pending = log_interval(pending, step, clock, c.seeds), []
            for s, record in live(seeds, records):
                if "error" in record:  # a non-finite loss: this seed fails, before any checkpoint of it
                    fail(s, record["error"], task, main)
                    progress.message(f"{prefix(s, k)}training failed: {record['error']}")
            if not any(s.live for s in seeds):
                return
            if eval_now:
                with clock.pause():  # eval time is not training time
                    for record, ev in zip(records, evaluate(cfg, task, c, state["params"], split=cfg.data.val_split)):
                        record["top1"] = ev["top1"]
            if log_now or eval_now:
                for s, record in live(seeds, records):
                    s.log.write(record)
                    s.wandb.log(record, step)
                    s.last_loss = record["loss"]
            progress.update(step, shown(seeds, records) if log_now or eval_now else None)
            if ckpt_now or preempt:
                with clock.pause(training=True):  # the run's time, but no step's
                    save(seeds, c, step, state, rng=rng, train_seconds=clock.train_seconds)
            if preempt:
                for s in seeds:
                    s.ckpt.wait()
                progress.message(f"preempted: checkpoint saved at step {step}")
                raise Preempted(f"stopped at step {step} by SIGTERM; run the same command again to resume")
        for s in seeds:
            s.ckpt.wait()

        # ---- Final evaluation and summaries ---------------------------------------------------------
        finals = final_summaries(seeds, task, c, state["params"], clock, compiled, perf)
        for s, (summary, predictions) in live(seeds, finals):
            s.log.write({"step": total, "top1": summary["top1"], "top5": summary["top5"],
                         "split": summary["eval_split"]})
            s.wandb.log({"eval/top1": summary["top1"], "eval/top5": summary["top5"],
                         **{f"eval/{k}": v for k, v in summary.items() if k.startswith(head_metric_prefixes(s.cfg))}},
                        total)
            s.wandb.finish(summary)
            if main:
                write_predictions(s.workdir, predictions_key(summary), **predictions)
                write_json(s.workdir / "summary.json", summary)  # last: its presence means "done"
            s.summary = summary
            progress.message(f"{prefix(s, k)}done: top1 {summary['top1']:.4f}  top5 {summary['top5']:.4f}  "
                             f"({summary['eval_videos']} {summary['eval_split']} clips)  "
                             f"train {clock.train_seconds:.1f}s")
    except BaseException:
        for s in seeds:
            s.wandb.finish(failed=True)  # no-op for a seed finished already
        raise
    finally:
        shut_down(stop, progress, seeds)


# ---------------------------------------------------------------------------------------------------------
# the pieces `_train` calls, in the order it calls them


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The mesh, the train state's build (`train.state.TrainState`: a seed's, `one`, and the group's, `state`, the
    same object for one seed), where a batch lives, and the jitted steps. `train` is compiled apart (to time the
    compile); `run_train` and `eval` are what the loop calls."""

    mesh: Any
    local_batch: int  # this process's rows of the global batch
    batch_sharding: Any  # a seed's batch (the eval batch, which every seed of a group shares)
    replicated: Any
    seeds: Any  # train.seeds.SeedAxis
    one: Any  # TrainState of one seed: what a checkpoint holds and restores into
    state: Any  # TrainState of the group: optimizer, shardings, abstract state, init (one seed: `one`)
    stack: Callable  # [K seeds' states] -> the group's
    take: Callable  # (the group's state, i) -> seed i's
    train: Any
    run_train: Callable
    eval: Callable
    batch_keys: tuple[str, ...] = ("video", "label")

    def put_batch(self, local: list[dict]) -> dict:
        """Each seed's rows of this process's batch -> the global batch, split over the mesh's "data" axis
        (behind the seed axis of a group)."""
        from vivit_cli.runtime import mesh as mesh_lib

        rows = self.seeds.stack_host([{k: b[k] for k in self.batch_keys} for b in local])
        return mesh_lib.global_batch(rows, self.seeds.sharding(self.batch_sharding))


def compile_steps(cfg, k: int = 1) -> Compiled:
    from vivit_cli import models
    from vivit_cli.data.pipeline import train_batch_keys
    from vivit_cli.runtime import cpu, mesh as mesh_lib

    from . import seeds as seeds_lib, state as state_lib, step as step_lib

    nc = cfg.data.num_classes
    mesh = mesh_lib.make_mesh(cfg.train.mesh_model)
    local_batch = mesh_lib.check_batch(mesh, cfg.train.batch_size)
    repl, bsh = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
    model = models.build_model(cfg, nc)
    axis = seeds_lib.SeedAxis(k)
    one = state_lib.build_state(cfg, nc, mesh)
    group = axis.group_state(one)
    tsh = axis.sharding(bsh)
    keys = train_batch_keys(cfg)
    train = step_lib.compile_train_step(cfg, model, group.tx, group.schedule, nc, group.shardings,
                                        dict.fromkeys(keys, tsh), repl, seeds=k)
    eval_step = step_lib.compile_eval_step(model, group.shardings["params"],
                                           {"video": bsh, "label": bsh, "index": bsh, "mask": bsh}, repl, seeds=k,
                                           heads=multi_heads(cfg))
    # Over several CPU devices, each launch waits for the last (XLA's CPU runtime can deadlock otherwise).
    return Compiled(mesh=mesh, local_batch=local_batch, batch_sharding=bsh, replicated=repl, seeds=axis, one=one,
                    state=group, stack=axis.stacker(one, group), take=axis.taker(one), train=train,
                    run_train=cpu.one_launch_at_a_time(train), eval=cpu.one_launch_at_a_time(eval_step),
                    batch_keys=keys)


def multi_heads(cfg) -> tuple[int, ...]:
    """The heads' class counts of a multi-head config, () for a single head."""
    from vivit_cli import config

    return config.head_sizes(cfg) if cfg.data.heads else ()


def keep_checkpoints(cfg, k: int) -> int:
    """A group keeps at least 2: a kill between two seeds' saves of one step must leave a step all seeds hold."""
    return cfg.run.keep_checkpoints if k == 1 else max(cfg.run.keep_checkpoints, 2)


def restore_or_init(seeds: list[Seed], c: Compiled):
    """(state, rng, metas, origin) in the module docstring's order; metas are the checkpoints' ({} when none)."""
    import jax

    from vivit_cli import models
    from vivit_cli.runtime import mesh as mesh_lib

    from . import init_from

    keys = [jax.random.split(jax.random.PRNGKey(s.cfg.train.seed)) for s in seeds]  # (init, base rng) per seed
    restored = restore_group([s.ckpt for s in seeds], c.one.abstract)
    if restored is not None:
        for state, meta in restored:
            state["step"] = mesh_lib.put_global(np.int32(meta["step"]), c.replicated)
        state, metas = c.stack([st for st, _ in restored]), [meta for _, meta in restored]
        rngs = [np.asarray(meta["rng"], np.uint32) for meta in metas]
        origin = f"resumed from step {metas[0]['step']}"
    else:
        metas, params = [{} for _ in seeds], []
        for s, (init_rng, _) in zip(seeds, keys):
            p = _host_tree(models.init_params(s.cfg, s.cfg.data.num_classes, init_rng))
            origin = "from scratch"
            if s.cfg.model.init_from not in ("", "none"):
                p, origin = init_from.initial_params(s.cfg, p, s.cfg.model.init_from)
            params.append(p)
        state = c.state.init(mesh_lib.put_global(c.seeds.stack_host(params), c.state.shardings["params"]))
        rngs = [np.asarray(jax.device_get(rng)) for _, rng in keys]
    return state, mesh_lib.put_global(c.seeds.stack_host(rngs), c.replicated), metas, origin


def restore_group(ckpts: list, abstract) -> list[tuple[dict, dict]] | None:
    """Every seed's (state, meta) at the newest step all of them hold readable, or None (start from scratch).
    Unreadable steps are skipped (and deleted, `Checkpointer.restore_latest`); a seed's steps newer than the one
    chosen are deleted, as they would shadow the steps it writes next. One seed: its newest readable step."""
    upto = None
    while True:
        common = set.intersection(*(set(ck.steps()) for ck in ckpts))
        common = {s for s in common if upto is None or s <= upto}
        if not common:
            break
        got = [ck.restore_latest(abstract, upto=max(common)) for ck in ckpts]
        steps = {None if g is None else int(g[1]["step"]) for g in got}
        if None in steps:  # a seed has no readable step left at or below the common one
            break
        if len(steps) == 1:
            chosen = steps.pop()
            for ck in ckpts:
                ck.drop_after(chosen)
            return got
        upto = min(steps)  # a seed fell back past the others: meet it there
    for ck in ckpts:
        ck.drop_after(0)
    return None


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


def start_note(seeds: list[Seed], title: str, origin: str, c: Compiled) -> str:
    """The one line a run starts with: what trains, from where, on what."""
    import jax

    from vivit_cli import models

    cfg = seeds[0].cfg
    split = ""
    if cfg.train.mesh_model > 1:
        leaves = jax.tree.leaves(c.one.shardings["params"])
        n = sum(1 for s in leaves if any(a is not None for a in s.spec))
        split = f", {n}/{len(leaves)} param tensors split over a model axis of {cfg.train.mesh_model}"
    group = f", {len(seeds)} seeds as one program" if len(seeds) > 1 else ""
    return (f"{', '.join(s.workdir.name for s in seeds)}: {title}, "
            f"{models.count_params(c.one.abstract['params']):,} params, {origin}, "
            f"{runtime.device_description()}, global batch {cfg.train.batch_size}{split}{group}")


def prefix(s: Seed, k: int) -> str:
    """What a group's message starts with: whose it is (nothing for a single run)."""
    return f"{s.workdir.name}: " if k > 1 else ""


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


def log_interval(pending: list, step: int, clock, axis) -> list[dict[str, Any]]:
    """Each seed's record of the steps since the last one (their mean loss, the last one's other metrics), or
    {"error": ...} for a seed whose loss turned non-finite: one host transfer of every step's metrics, so that no
    non-finite loss slips past a checkpoint. Ends the clock's lap."""
    import jax

    fetched = [axis.split_host(m) for m in jax.device_get(pending)]  # [step][seed] -> that seed's metrics
    clips_per_s = clock.lap(step)
    records = []
    for seed_steps in zip(*fetched):
        losses = np.array([float(m["loss"]) for m in seed_steps])
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmax(~np.isfinite(losses)))
            records.append({"error": f"loss became {losses[bad]} at step {step - len(losses) + bad + 1}"})
            continue
        last = seed_steps[-1]
        records.append({"step": step, "loss": float(losses.mean()), "lr": float(last["lr"]),
                        "clips_per_s": round(clips_per_s, 2), "accuracy": float(last["accuracy"]),
                        "grad_norm": float(last["grad_norm"])})
    return records


def evaluate(cfg, task, c: Compiled, params, split: str | None = None) -> list[dict[str, Any]]:
    """Per seed: top1/top5 over `split` (default the eval split; train.eval_every's evaluations use the val split) (every process its shard, padded to the same number of batches;
    a group's seeds all on the same batches, in one vmapped program), every clip's best classes (`predictions`:
    index, label, top5, sorted by index; the same on every process), and the compiled eval step's time per clip
    and model on the last batch (the paper's runtime column)."""
    import jax

    from vivit_cli import config
    from vivit_cli.eval.results import predictions_arrays
    from vivit_cli.runtime import mesh as mesh_lib
    from vivit_cli.runtime.timing import time_calls

    pid, pcount, b = jax.process_index(), jax.process_count(), c.local_batch
    views = (1, 1) if task.kind == "image" else config.parse_views(cfg.data.eval_views)
    split = split or cfg.data.eval_split
    it = task.eval_iterator(cfg, split=split, views=views, batch_size=b, shard_index=pid, shard_count=pcount)
    frames = 1 if task.kind == "image" else cfg.data.frames
    shape = (b, 1 if task.kind == "image" else views[0] * views[1], frames, cfg.data.crop, cfg.data.crop, 3)
    keys = ("video", "label", "index", "mask")
    heads = multi_heads(cfg) if task.kind == "video" else ()
    outs, batch = [], None
    for _ in range(eval_batch_count(task.num_examples(split), b, pcount)):
        local = next(it, None)
        if local is None:  # this process's shard is exhausted; the others may still have clips
            local = masked_batch(b, shape[1:], label_shape=(len(heads),) if heads else ())
        batch = mesh_lib.global_batch({k: local[k] for k in keys}, c.batch_sharding)
        outs.append(c.eval(params, batch))
    per_seed = zip(*(c.seeds.split_host(o) for o in jax.device_get(outs)))  # [seed][batch] -> its outputs
    forward_ms = None
    if batch is not None:  # the eval loop above warmed the step up
        seconds = time_calls(lambda: c.eval(params, batch), warmup=0, repeats=3)["median_s"]
        forward_ms = round(1000.0 * seconds / (batch["video"].shape[0] * shape[1] * c.seeds.k), 4)
    results = []
    for seed_outs in per_seed:
        totals = {k: float(sum(float(o[k]) for o in seed_outs)) for k in ("top1", "top5", "count")}
        count = max(totals["count"], 1.0)
        keep = [o["mask"].astype(bool) for o in seed_outs]
        rows = {k: np.concatenate([o[k][m] for o, m in zip(seed_outs, keep)])
                for k in ("index", "label", "topk", *(("action_topk",) if heads else ()))}
        predictions = predictions_arrays(rows["index"], rows["label"], rows["topk"],
                                         action_top5=rows.get("action_topk"), head_sizes=heads or None)
        result = {"top1": totals["top1"] / count, "top5": totals["top5"] / count, "videos": int(totals["count"]),
                  "forward_ms_per_clip": forward_ms, "predictions": predictions}
        if heads:  # the action is top1/top5; each head's own figures beside it, by name
            names = [n for n, _ in config.parse_heads(cfg.data.heads)]
            for metric in ("top1", "top5"):
                hits = np.sum([np.asarray(o[f"head_{metric}"]) for o in seed_outs], axis=0)
                result |= {f"{n}_{metric}": float(h) / count for n, h in zip(names, hits)}
                result[f"action_{metric}"] = result[metric]
        results.append(result)
    return results


def save(seeds: list[Seed], c: Compiled, step: int, state, *, rng, train_seconds: float) -> None:
    """Starts writing checkpoint `step` of every seed still training: its slice of the state, and beside it what a
    resume needs (its rng, every process's data position, the training time so far). Every seed's previous save
    is complete before any seed's next one starts, so a kill leaves the seeds at most one save apart."""
    import jax

    from vivit_cli import config

    for s in seeds:
        s.ckpt.wait()
    rngs = c.seeds.split_host(np.asarray(jax.device_get(rng)))
    for i, s in enumerate(seeds):
        if not s.live:
            continue
        meta = {"step": step, "rng": rngs[i].tolist(), "data_states": _gather_json(s.data.get_state()),
                "train_seconds": train_seconds, "config_hash": config.config_hash(s.cfg)}
        s.ckpt.save(step, c.take(state, i), meta)
        if runtime.multi_process():  # Orbax's multi-host barriers are keyed per process, not per checkpointer:
            s.ckpt.wait()  # two seeds' saves in flight at once collide ("barrier is already ongoing")
        s.log.flush()  # remote logs are written in batches: never let one lag behind a checkpoint


def shown(seeds: list[Seed], records: list[dict]) -> dict[str, Any]:
    """What the progress line shows: a single run's record; for a group, the live seeds' losses (and top-1s) side
    by side and the group's clips/s."""
    if len(records) == 1:
        return records[0]
    rows = [r for _, r in live(seeds, records)]
    out = {"loss": [r["loss"] for r in rows], "lr": rows[0]["lr"], "clips_per_s": sum(r["clips_per_s"] for r in rows)}
    if "top1" in rows[0]:
        out["top1"] = [r["top1"] for r in rows]
    return out


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


def final_summaries(seeds: list[Seed], task, c: Compiled, params, clock, compiled, perf) -> list[tuple[dict, dict]]:
    """Per seed: (summary.json of a finished run, with the final eval; its per-clip predictions). `perf` (process 0)
    builds the perf block from the steps' times, once (a group's is its program's), after the eval so that the
    matmul peak it measures takes no time from training."""
    from vivit_cli import models

    cfg = seeds[0].cfg
    t_eval = time.time()
    evs = evaluate(cfg, task, c, params)
    eval_seconds = time.time() - t_eval
    info = models.describe(cfg, cfg.data.num_classes)
    block = None
    if perf is not None and runtime.is_main():
        executable, seconds, source = compiled[:3] if compiled else (None, None, None)
        block = perf(cfg, cfg.data.num_classes, StepTimes(
            intervals=tuple(clock.intervals), batch_size=cfg.train.batch_size, compiled=executable,
            compile_seconds=seconds, compile_source=source))
    out = []
    for s, ev in zip(seeds, evs):
        summary = _base_summary(s.cfg, s.run_id, task) | {
            "status": "done", "top1": ev["top1"], "top5": ev["top5"], "eval_split": cfg.data.eval_split,
            "eval_views": "1x1" if task.kind == "image" else cfg.data.eval_views, "eval_videos": ev["videos"],
            "params": int(info["params"]), "gflops": info["gflops"], "steps": cfg.train.steps,
            "train_seconds": round(clock.train_seconds, 3), "eval_seconds": round(eval_seconds, 3),
            "compile_seconds": None if compiled is None else round(compiled[3], 3),
            "final_loss": s.last_loss, "forward_ms_per_clip": ev["forward_ms_per_clip"],
        }
        if cfg.data.heads:  # top1/top5 are the action's (every head right), as the paper's EK figures are
            summary["heads"] = cfg.data.heads
            summary |= {k: v for k, v in ev.items() if k.startswith(head_metric_prefixes(cfg))}
        summary["predictions"] = predictions_path(predictions_key(summary))
        if block is not None:
            summary["perf"] = block
        if len(seeds) > 1:  # who trained alongside (the run store needs nothing of it)
            summary["group"] = [t.run_id for t in seeds]
        out.append((summary, ev["predictions"]))
    return out


def head_metric_prefixes(cfg) -> tuple[str, ...]:
    from vivit_cli import config

    return tuple(f"{n}_" for n, _ in config.parse_heads(cfg.data.heads)) + ("action_",)


def predictions_key(summary: dict) -> str:
    """The eval key of a summary's final evaluation, "<split>@<T>x<S>", as `vivit eval` names its entries."""
    return f"{summary['eval_split']}@{summary['eval_views']}"


def shut_down(stop, progress, seeds: list[Seed]) -> None:
    """Whatever ended the run: the SIGTERM handler back, the display and the logs closed, pending saves done."""
    stop.restore()
    progress.close()
    for s in seeds:
        s.log.close()
        try:
            s.ckpt.wait()
            s.ckpt.close()
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
