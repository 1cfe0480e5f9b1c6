"""Intervals and paired comparisons for a table column: a hierarchical bootstrap over seeds and clips.

A cell is the mean over seeds of one run's accuracy on a finite set of evaluation clips, so two things would
change if the experiment were repeated: the seeds (init, data order, augmentation) and the sample of clips it is
scored on. Each bootstrap resample draws both (Bouthillier et al., MLSys 2021: vary seeds and data sampling,
compare paired; Agarwal et al., NeurIPS 2021: interval estimates, not bare means):
- the clips with replacement, ONCE per resample for the whole column: every run of the column is scored on the
  same resampled clips, so the difference of two rows is a paired difference (most clips are easy or hard for
  every model alike; pairing removes that shared part of the noise);
- then each row's seeds with replacement, the cell being the mean of the drawn seeds.
The 95% interval is the resamples' 2.5 and 97.5 percentiles. With one seed it covers clip sampling only. With
few seeds the seed part is crude (3 seeds resample into 10 distinct sets), and the seed variance is
underestimated by a factor (k-1)/k: a reason to read the marks as "resolved at this size", not as proof.

numpy only and vectorised: a resample of the clips is a vector of counts (how often each clip was drawn), so
every run's accuracy on every resample is one integer-valued matmul [resamples, clips] @ [clips, runs], exact in
float32, hence the same digits on any machine. scipy.stats.bootstrap resamples one level and cannot share the
clip draws between cells, and `import scipy.stats` takes about a second (the report answers in well under one);
the tests check the one-level case against it.

Runs without per-clip predictions (trained before runs wrote them) draw their clip noise as a binomial of their
clip count: an interval of the right width, but not paired with the other rows, so their comparisons are
conservative (wider). A run with neither has no clip noise to draw: its cell shows the seed part alone, or the
bare mean with one seed.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

RESAMPLES = 2000
SEED = 0  # fixed: a report is reproducible digit for digit
LEVEL = 0.95

# How a cell's interval was drawn; the footnotes name them.
CLIPS_AND_SEEDS, CLIPS, BINOMIAL, SEEDS, NONE = "clips+seeds", "clips", "binomial", "seeds", "none"
# A cell's mark in its column.
BEST, TIED, BELOW = "best", "tied", "below"


@dataclass(frozen=True)
class Evaluation:
    """One run (one seed) on its evaluation clips."""

    value: float  # the reported accuracy, a fraction (summary.json's or eval.json's figure)
    index: np.ndarray | None = None  # int [N]: clip indices in the split, sorted, unique (None: no predictions)
    correct: np.ndarray | None = None  # bool [N]: the clip counts as a hit
    groups: np.ndarray | None = None  # int [N]: class labels, for mean class accuracy (mean of per-class hits)
    clips: int | None = None  # clip count when there are no predictions (summary's eval_videos)

    @property
    def paired(self) -> bool:
        return self.index is not None


@dataclass
class Interval:
    mean: float  # percent (points for a difference)
    lo: float
    hi: float

    @property
    def contains_zero(self) -> bool:
        return self.lo <= 0.0 <= self.hi


@dataclass
class Column:
    """The statistics of one column: per row its interval and method, the best row, and the differences."""

    cells: dict[str, Interval] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    best: str | None = None
    marks: dict[str, str] = field(default_factory=dict)  # row -> best | tied | below (rows with a result)
    vs_best: dict[str, Interval] = field(default_factory=dict)  # row - best, in points
    vs_reference: dict[str, Interval] = field(default_factory=dict)  # row - reference, in points
    clips: list[int] = field(default_factory=list)  # distinct clip counts of the column's runs


def accuracy_of(correct: np.ndarray, groups: np.ndarray | None = None) -> float:
    """The statistic a run reports on its clips: the hit rate, or with `groups` the mean per-group hit rate."""
    if groups is None:
        return float(np.mean(correct))
    return float(np.mean([np.mean(correct[groups == g]) for g in np.unique(groups)]))


def _rng(key: str, seed: int) -> np.random.Generator:
    # Keyed by the table and column, so one column's draws do not depend on which other tables were built.
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


@functools.lru_cache(maxsize=4)
def _clip_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] float32: how often each of n clips is drawn in each resample of n draws.

    Drawn once per clip count and shared by every column with that many clips (the costly part of a report:
    ~50 ms at 2000 x 2000). Each column's intervals are marginal, so columns may share draws; read-only."""
    rng = np.random.default_rng([seed, n])
    draws = rng.integers(0, n, size=(resamples, n), dtype=np.int64) + n * np.arange(resamples)[:, None]
    counts = np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float32)
    counts.flags.writeable = False
    return counts


def _paired_samples(evals: list[Evaluation], counts: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """[resamples, runs]: each paired run's statistic on every resample of the shared clips."""
    hits, totals, owner = [], [], []
    n = len(universe)
    for r, e in enumerate(evals):
        pos = np.searchsorted(universe, e.index)
        groups = np.zeros(len(e.index), np.int64) if e.groups is None else e.groups
        for g in np.unique(groups):
            member = groups == g
            hit, total = np.zeros(n, np.float32), np.zeros(n, np.float32)
            hit[pos[member]] = e.correct[member]
            total[pos[member]] = 1.0
            hits.append(hit)
            totals.append(total)
            owner.append(r)
    totals = np.stack(totals, 1)
    # The usual case, every run on every clip of the column with one group: each run's total is the draw count, n.
    denominator = float(n) if totals.all() else counts @ totals
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = (counts @ np.stack(hits, 1)).astype(np.float64) / denominator
    owner = np.asarray(owner)
    out = np.empty((counts.shape[0], len(evals)))
    for r, e in enumerate(evals):
        mine = rates[:, owner == r]
        with np.errstate(invalid="ignore"):
            # A group (class) that no draw hit leaves the mean over the drawn ones; a run none hit, its own value.
            value = np.nanmean(mine, axis=1) if mine.shape[1] > 1 else mine[:, 0]
        out[:, r] = np.where(np.isnan(value), e.value, value)
    return out


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def column(rows: dict[str, list[Evaluation]], *, key: str = "", reference: str | None = None,
           resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Column:
    """Intervals, marks and paired differences of one column; `rows` maps a row to its done runs, in table order.

    The best row is the one with the highest mean (the first on a tie). Every other row is `tied` when the
    interval of its difference to the best contains 0, else `below`.
    """
    rows = {r: es for r, es in rows.items() if es}
    out = Column()
    if not rows:
        return out
    rng = _rng(key, seed)
    flat = [(row, e) for row, es in rows.items() for e in es]
    evals = [e for _, e in flat]
    out.clips = sorted({len(e.index) if e.paired else e.clips for e in evals if e.paired or e.clips})
    samples = np.empty((resamples, len(evals)))
    paired = [i for i, e in enumerate(evals) if e.paired]
    if paired:
        universe = np.unique(np.concatenate([evals[i].index for i in paired]))
        counts = _clip_counts(len(universe), resamples, seed)
        samples[:, paired] = _paired_samples([evals[i] for i in paired], counts, universe)
    for i, e in enumerate(evals):
        if e.paired:
            continue
        if e.clips:
            samples[:, i] = rng.binomial(e.clips, min(max(e.value, 0.0), 1.0), resamples) / e.clips
        else:
            samples[:, i] = e.value

    per_row = {}
    start = 0
    for row, es in rows.items():
        k = len(es)
        block = samples[:, start:start + k]
        start += k
        if k == 1:
            per_row[row] = 100.0 * block[:, 0]
        else:
            pick = rng.integers(0, k, size=(resamples, k))
            per_row[row] = 100.0 * np.take_along_axis(block, pick, axis=1).mean(axis=1)
        mean = 100.0 * float(np.mean([e.value for e in es]))
        clip_noise = any(e.paired or e.clips for e in es)
        method = (CLIPS_AND_SEEDS if k > 1 else CLIPS) if all(e.paired for e in es) else \
            BINOMIAL if clip_noise else SEEDS if k > 1 else NONE
        out.methods[row] = method
        lo, hi = _percentiles(per_row[row], level) if method != NONE else (math.nan, math.nan)
        out.cells[row] = Interval(mean, lo, hi)

    out.best = max(rows, key=lambda r: out.cells[r].mean)  # max keeps the first of equal means
    for row in rows:
        for target, into in ((out.best, out.vs_best), (reference, out.vs_reference)):
            if target not in rows or row == target:
                continue
            diff = per_row[row] - per_row[target]
            noise = out.methods[row] != NONE or out.methods[target] != NONE
            lo, hi = _percentiles(diff, level) if noise else (math.nan, math.nan)
            into[row] = Interval(out.cells[row].mean - out.cells[target].mean, lo, hi)
        if row == out.best:
            out.marks[row] = BEST
        elif not math.isnan(out.vs_best[row].lo):
            out.marks[row] = TIED if out.vs_best[row].contains_zero else BELOW
    return out
