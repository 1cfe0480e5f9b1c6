"""Shared by the training tests: a tiny learnable synthetic video task (until/unless the embedded data is
wanted), a fast config, and a runner for subprocess tests (multi-device, multi-process, kill -9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# A config that compiles and trains in about a second on 2 cores.
FAST = ["model.hidden=32", "model.layers=1", "model.heads=2", "model.mlp=64", "data.frames=4", "data.crop=16",
        "model.tubelet=2x8x8", "train.batch_size=8", "train.steps=8", "train.warmup_steps=2", "train.lr=0.003",
        "run.log_every=1", "run.checkpoint_every=4"]


def synthetic_clips(n: int, frames: int, crop: int, seed: int, classes: int = 4):
    """A bright 4x4 square moving in one of `classes` directions on noise; label = direction."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    video = rng.uniform(-1, -0.6, (n, frames, crop, crop, 3)).astype(np.float32)
    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    for i in range(n):
        dy, dx = moves[labels[i] % 4]
        y, x = rng.integers(4, crop - 8, 2)
        for t in range(frames):
            yy, xx = (y + dy * t) % (crop - 4), (x + dx * t) % (crop - 4)
            video[i, t, yy:yy + 4, xx:xx + 4] = 1.0
    return video, labels


class SyntheticTask:
    """Satisfies the train loop's task interface (the same as `data.train_iterator`/`eval_iterator`)."""

    kind = "video"

    def __init__(self, cfg, n_train: int = 256, n_eval: int = 40):
        from vivit_cli.train.tasks import ArrayIterator

        self._ArrayIterator = ArrayIterator
        self.num_classes = 4
        held_out = synthetic_clips(n_eval, cfg.data.frames, cfg.data.crop, 1)
        # "test" as well as "val": whichever split the config evaluates on (data.eval_split's default moved
        # from val to test on 2026-12-01) is the same held-out clips.
        self.splits = {"train": synthetic_clips(n_train, cfg.data.frames, cfg.data.crop, 0), "val": held_out,
                       "test": held_out}

    def train_iterator(self, cfg, *, batch_size, shard_index, shard_count, seed):
        video, labels = self.splits["train"]
        it = self._ArrayIterator(video, labels, batch_size=batch_size, shard_index=shard_index,
                                 shard_count=shard_count, seed=seed)
        return _Unsqueezed(it)

    def eval_iterator(self, cfg, *, split, views, batch_size, shard_index, shard_count):
        video, labels = self.splits[split]
        v = views[0] * views[1]
        idx = np.arange(shard_index, len(labels), shard_count)
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            take = np.concatenate([chunk, np.zeros(batch_size - len(chunk), np.int64)])
            yield {"video": np.repeat(video[take][:, None], v, axis=1), "label": labels[take],
                   "index": take.astype(np.int32), "mask": np.arange(batch_size) < len(chunk)}

    def num_examples(self, split):
        return len(self.splits[split][1])


class _Unsqueezed:
    """ArrayIterator yields one-frame clips from images; here the arrays are already clips."""

    def __init__(self, it):
        self.it = it

    def __iter__(self):
        return self

    def __next__(self):
        b = next(self.it)
        return {"video": b["video"][:, 0], "label": b["label"]}

    def get_state(self):
        return self.it.get_state()

    def set_state(self, s):
        self.it.set_state(s)


class PoisonedTask(SyntheticTask):
    """Seed `seed`'s training clips turn to NaN from batch `after` on (counted in the stream, so a resume sees the
    same): its loss becomes NaN at step after + 1, the other seeds' never do."""

    def __init__(self, cfg, seed: int, after: int, **kwargs):
        super().__init__(cfg, **kwargs)
        self.seed, self.after = seed, after

    def train_iterator(self, cfg, *, seed, **kwargs):
        it = super().train_iterator(cfg, seed=seed, **kwargs)
        return _Poisoned(it.it, self.after) if seed == self.seed else it


class _Poisoned(_Unsqueezed):
    def __init__(self, it, after: int):
        super().__init__(it)
        self.after = after

    def __next__(self):
        late = self.it.get_state()["batch"] >= self.after
        b = super().__next__()
        return {"video": np.full_like(b["video"], np.nan), "label": b["label"]} if late else b


def build(extra=(), preset=None):
    from vivit_cli import config

    return config.build(list(FAST) + list(extra), preset=preset)


def run_synthetic(workdir, extra=()):
    """In-process training on the synthetic task, with summary.json's perf block as `vivit train` builds it."""
    from vivit_cli import train
    from vivit_cli.bench.perf import train_perf

    cfg = build(extra)
    return train.run(cfg, workdir, task=SyntheticTask(cfg), perf=train_perf)


def run_synthetic_group(workdirs, extra=(), task=None):
    """The seeds 0..K-1 of `build(extra)`, seed k in workdirs[k], as one group (`train.run_group`), in-process."""
    from vivit_cli import train
    from vivit_cli.bench.perf import train_perf

    cfgs = [build(list(extra) + [f"train.seed={k}"]) for k in range(len(workdirs))]
    return train.run_group(cfgs, list(workdirs), task=task or SyntheticTask(cfgs[0]), perf=train_perf)


RUNNER = """
import json, sys
sys.path.insert(0, {tests!r})
from vivit_cli.runtime.cpu import apply_xla_defaults
apply_xla_defaults()  # as the CLI entry does, before JAX starts
import train_helpers as h
from vivit_cli.train.loop import Preempted
for workdir, extra in json.loads(sys.argv[1]):
    try:  # a list of workdirs: the seeds 0..K-1 as one group
        summary = (h.run_synthetic_group if isinstance(workdir, list) else h.run_synthetic)(workdir, extra)
    except Preempted:
        sys.exit(143)
    print("SUMMARY", json.dumps(summary))
"""


def subprocess_run(workdir, extra=(), env=None, timeout=120, wait=True, more=()):
    """Runs `run_synthetic` in a fresh Python process (its own device count / distributed setup); `more` adds
    further (workdir, extra) runs to the same process, which saves the imports. A list of workdirs is a group
    (`run_synthetic_group`)."""
    e = dict(os.environ)
    e.update(env or {})
    e.setdefault("JAX_PLATFORMS", "cpu")
    def where(w):
        return [str(x) for x in w] if isinstance(w, (list, tuple)) else str(w)

    jobs = [[where(workdir), list(extra)]] + [[where(w), list(x)] for w, x in more]
    cmd = [PY, "-c", RUNNER.format(tests=str(ROOT / "tests")), json.dumps(jobs)]
    if not wait:
        return subprocess.Popen(cmd, env=e, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=e, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def losses(workdir) -> list[float]:
    rows = [json.loads(line) for line in Path(workdir, "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def two_processes(workdir, env=None, timeout=150) -> list[tuple[str, str]]:
    """`run_synthetic` on 2 processes over jax.distributed on localhost (process 0 logs); asserts both exit 0 and
    returns their (stdout, stderr)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    procs = [subprocess_run(workdir, env={**(env or {}), "VIVIT_COORDINATOR": f"localhost:{port}",
                                          "VIVIT_NUM_PROCESSES": "2", "VIVIT_PROCESS_ID": str(i),
                                          "VIVIT_INIT_TIMEOUT": "60"}, wait=False)
             for i in (0, 1)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    return outs
