"""Grid combinators: a grid is a list of `Point`s (the cell's config overrides + its report labels).

    product(sweep("model.variant", ["1", "2"], row=...), tasks(preset))     # every combination
    zip_(sweep("a", [1, 2]), sweep("b", [3, 4]))                           # element-wise
    chain(fixed({...}, row="A"), fixed({...}, row="B"))                     # one after the other
    where(lambda o: o["data.frames"] % 4 == 0, grid)                        # drop cells
    product(variants, lambda o: sweep(...) if o["model.variant"] == "factorised_encoder" else [Point()])
                                                                            # a conditional axis
    cumulative([("base", {...}), ("+ mixup", {...})])                       # each cell adds to the last

Pure Python: grids are enumerated by `--dry-run` and `--list`, which must answer at once.
A value may be a `Dependency` (only `model.init_from` takes one): a run the sweep trains first, once, and
whose workdir then initialises the cell.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from vivit_cli.errors import VivitError

LABELS = ("cell", "row", "column")


@dataclass(frozen=True)
class Dependency:
    """A run that cells initialise from. Built from the grid's base config (not the cell's), so all cells of
    a grid share one: `kind` "pretrain-image" (an image ViT on the still frames, paper Sec. 3.4) or "train"
    (a video model, e.g. "Kinetics initialisation" of the regularisation table) with `overrides` on top."""

    kind: str
    overrides: tuple[tuple[str, Any], ...] = ()
    label: str = ""

    def __post_init__(self):
        if self.kind not in ("pretrain-image", "train"):
            raise VivitError(f"dependency kind {self.kind!r}: allowed values are pretrain-image, train")


IMAGE_VIT = Dependency("pretrain-image", label="image ViT")


def pretrained_video(overrides: Mapping[str, Any], label: str = "video pretraining") -> Dependency:
    return Dependency("train", tuple(sorted(overrides.items())), label)


@dataclass(frozen=True)
class Point:
    """One cell: dotted-key overrides and the labels the report puts it under."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    def merge(self, other: "Point") -> "Point":
        return Point(_merge(self.overrides, other.overrides, "override"), _merge(self.labels, other.labels, "label"))

    @property
    def name(self) -> str:
        """The cell's name: its `cell` label, else its row and column, else its overrides."""
        if self.labels.get("cell"):
            return str(self.labels["cell"])
        parts = [str(self.labels[k]) for k in ("row", "column") if self.labels.get(k)]
        return " / ".join(parts) or ",".join(f"{k}={_text(v)}" for k, v in self.overrides.items()) or "base"


Grid = list[Point]
Factor = Union[Sequence[Point], Callable[[Mapping[str, Any]], Sequence[Point]]]


def _text(value) -> str:
    return value.label or value.kind if isinstance(value, Dependency) else str(value)


def _merge(a: Mapping, b: Mapping, what: str) -> dict:
    out = dict(a)
    for k, v in b.items():
        if k in out and out[k] != v:
            # Two axes setting the same key is a bug in the grid file, not something to resolve silently.
            raise VivitError(f"grid: two axes set the {what} {k!r} ({out[k]!r} and {v!r})")
        out[k] = v
    return out


def _label(spec, value, i: int, n: int) -> str | None:
    if spec is None:
        return None
    if callable(spec):
        return spec(value)
    if isinstance(spec, (list, tuple)):
        if len(spec) != n:
            raise VivitError(f"grid: {len(spec)} labels for {n} values")
        return spec[i]
    return str(spec)


def fixed(overrides: Mapping[str, Any] | None = None, **labels: str) -> Grid:
    """A single cell."""
    _check_labels(labels)
    return [Point(dict(overrides or {}), {k: v for k, v in labels.items() if v is not None})]


def sweep(key: str, values: Iterable[Any], **labels) -> Grid:
    """One axis: a cell per value. A label is a constant, a list aligned with `values`, or a function of the value."""
    _check_labels(labels)
    values = list(values)
    out = []
    for i, v in enumerate(values):
        lab = {k: _label(spec, v, i, len(values)) for k, spec in labels.items()}
        out.append(Point({key: v}, {k: str(x) for k, x in lab.items() if x is not None}))
    return out


def product(*factors: Factor) -> Grid:
    """Every combination; a factor may be a function of the overrides chosen so far (a conditional axis)."""
    points = [Point()]
    for factor in factors:
        nxt = []
        for p in points:
            options = factor(dict(p.overrides)) if callable(factor) else factor
            nxt.extend(p.merge(q) for q in options)
        points = nxt
    return points


def zip_(*grids: Sequence[Point]) -> Grid:
    """Element-wise: the i-th cell merges the i-th cell of every grid."""
    lengths = {len(g) for g in grids}
    if len(lengths) > 1:
        raise VivitError(f"grid: zip_ of grids with different lengths {sorted(lengths)}")
    out = []
    for parts in zip(*grids):
        p = Point()
        for q in parts:
            p = p.merge(q)
        out.append(p)
    return out


def chain(*grids: Sequence[Point]) -> Grid:
    return list(itertools.chain.from_iterable(grids))


def where(predicate: Callable[[Mapping[str, Any]], bool], grid: Sequence[Point]) -> Grid:
    return [p for p in grid if predicate(dict(p.overrides))]


def cumulative(steps: Sequence[tuple[str, Mapping[str, Any]]], label: str = "row") -> Grid:
    """Cells that each add their overrides to all the ones before (the paper's progressive tables)."""
    out, acc = [], {}
    for name, overrides in steps:
        acc = {**acc, **overrides}
        out.append(Point(dict(acc), {label: name}))
    return out


def _check_labels(labels: Mapping) -> None:
    bad = [k for k in labels if k not in LABELS]
    if bad:
        raise VivitError(f"grid: unknown label {bad[0]!r}: labels are {', '.join(LABELS)}")


# ---------------------------------------------------------------------------------------------------------
# the two tasks, per preset


def task_sources(preset: str | None) -> dict[str, str]:
    """The data source that plays each report column. The embedded appearance task stands in for Kinetics and
    the motion task for Epic Kitchens. At paper scale they are Kinetics and Epic-Kitchens themselves, as the
    paper's Table 2 has them, read from the user's copies: placeholders (`kinetics:<PATH>`) that the sweep
    refuses until `--set appearance:data.source=kinetics:PATH` / `--set motion:data.source=epic:PATH` (or one
    `--set data.source=kinetics:PATH` for a grid of one column) fill them."""
    from vivit_cli.config.presets import NEEDED
    from vivit_cli.report import tables

    if preset == "paper":
        return {tables.APPEARANCE: f"kinetics:{NEEDED}", tables.MOTION: f"epic:{NEEDED}"}
    return {tables.APPEARANCE: "embedded:appearance", tables.MOTION: "embedded:motion"}


def image_init(preset: str | None) -> dict[str, Any]:
    """Where the cells' image ViT comes from. Below paper scale the sweep pretrains one first on the task's
    frames (`IMAGE_VIT`, shared by every grid); at paper scale it is the ImageNet-21k ViT the user converted
    (`--set model.init_from=DIR`, after `vivit convert vit`), as the paper initialises from, so nothing is
    pretrained."""
    return {} if preset == "paper" else {"model.init_from": IMAGE_VIT}


def task_schedules(preset: str | None) -> dict[str, dict[str, Any]]:
    """What each task trains for at the CPU preset, where it differs from the preset's schedule: the same for
    every row of a column, so a table's rows stay comparable. On the embedded tasks appearance is learned mostly
    in the image ViT and motion in the video steps: on the validation split, half the video steps from an image
    ViT trained 4x longer gave appearance +9.6 points for half the video clips, and motion -9.6 points
    (benchmarks/RESULTS.md "A shorter schedule"). So appearance cells train 150 steps from a 1,200-step ViT,
    and motion cells the preset's 300 from a 300-step one. Other presets (smoke, paper) train their own schedule
    in every column; a --set still wins, key by key."""
    from vivit_cli.report import tables

    if preset not in (None, "cpu"):
        return {tables.APPEARANCE: {}, tables.MOTION: {}}
    return {tables.APPEARANCE: {"train.steps": 150, "train.warmup_steps": 15, "train.image_steps": 1200},
            tables.MOTION: {}}


def appearance(preset: str | None) -> Grid:
    """The appearance task as an axis without labels (grids whose columns are something else)."""
    from vivit_cli.report import tables

    return fixed(_task(preset, tables.APPEARANCE))


def _task(preset: str | None, column: str) -> dict[str, Any]:
    return {"data.source": task_sources(preset)[column], **task_schedules(preset)[column]}


def tasks(preset: str | None, columns: Sequence[str] | None = None) -> Grid:
    """The task axis: one cell per column (appearance, motion), each labelled with its column."""
    return chain(*(fixed(_task(preset, c), column=c) for c in (columns or task_sources(preset))))
