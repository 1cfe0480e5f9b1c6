"""Grid -> jobs: every cell x seed with its resolved config and run id, and the dependency runs first.

Precedence of overrides, last wins: defaults <- --preset <- the grid's BASE <- the cell's axes <- --set <-
--set scoped to a column/row/cell (`--set motion:data.source=csv:/data/ek`). Every config is built and
validated here, before anything runs, so one bad cell stops the sweep before it touches the run store.

Run id = `<config hash of the cell with train.seed=0>-s<seed>` (docs/DESIGN.md). A cell initialised from a
dependency carries `model.init_from=_deps/<dependency run id>`, a path relative to the results dir (the
trainer resolves it under $VIVIT_RESULTS), so run ids do not depend on where the results live.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vivit_cli.errors import VivitError

from .grid import Dependency, Point, task_sources
from .grids import GridSpec

DEPS_DIR = "_deps"  # under the results dir; `vivit report` skips folders starting with "_"


@dataclass
class Job:
    run_id: str
    grid: str  # the folder under the results dir (the grid's name, or DEPS_DIR)
    kind: str  # "train" | "pretrain-image": the `vivit` command that runs it
    cell: str
    labels: dict[str, str]
    seed: int
    overrides: dict[str, str]  # the cell's own axes, as text
    sets: dict[str, str]  # every --set the trainer gets (base, axes, user), as text
    preset: str | None
    table: str | None
    config: Any = field(repr=False, default=None)  # the resolved Config
    deps: tuple[str, ...] = ()  # run ids that must be done first

    @property
    def group(self) -> str:
        """What the seeds of one cell share (their run ids' prefix): a sweep trains them together, as one group
        process (`vivit train --seeds`)."""
        base = self.run_id.rsplit("-s", 1)[0] if self.kind == "train" else self.run_id
        return f"{self.grid}/{base}"

    @property
    def cost(self) -> float:
        """Training compute, for the order jobs start in: steps x batch x the executed GMACs per clip (analytic,
        no JAX). Model 3's step is 1.6x model 1's on a CPU and 1.5x in this count: close enough to rank by."""
        from vivit_cli.models.flops import gmacs

        t = self.config.train
        return t.steps * t.batch_size * gmacs(self.config, self.config.data.num_classes or 0, executed=True)

    @property
    def set_args(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.sets.items()]

    def cell_record(self) -> dict:
        """cell.json (the contract with `vivit report`)."""
        return {"grid": self.grid, "table": self.table, "cell": self.cell, "row": self.labels.get("row"),
                "column": self.labels.get("column"), "seed": self.seed, "overrides": self.overrides,
                "run_id": self.run_id, "kind": self.kind, "preset": self.preset, "sets": self.sets}


@dataclass
class Plan:
    grid: GridSpec
    preset: str | None
    seeds: int
    deps: list[Job]
    cells: list[Job]

    @property
    def jobs(self) -> list[Job]:
        return self.deps + self.cells


def combine(plans: list[Plan]) -> Plan:
    """Several grids' plans as one, for one pool of processes: a dependency they share trains once, and a cell
    they share (the same run id in two grid folders) trains in the first grid and is shared into the other by
    the store (its lock makes the second wait). One pool keeps every process busy up to the last cell, where
    grids run one after the other leave a core idle while one grid's last cell and the next grid's first
    dependency run alone."""
    first = plans[0]
    deps = list({d.run_id: d for p in plans for d in p.deps}.values())
    spec = dataclasses.replace(first.grid, name=" + ".join(p.grid.name for p in plans), table=None,
                               doc="\n".join(p.grid.title for p in plans))
    return Plan(grid=spec, preset=first.preset, seeds=first.seeds, deps=deps,
                cells=[c for p in plans for c in p.cells])


def render(value: Any) -> str:
    """A Python value as `--set` text that the config parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def parse_user_sets(sets: list[str] | None) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """(global sets, [(scope, key, value)]); unknown keys are an error now, not after half a sweep."""
    from vivit_cli import config

    global_sets, scoped = {}, []
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VivitError(f"--set {item!r}: expected key=value or scope:key=value, e.g. model.size=B")
        scope, colon, bare = key.strip().rpartition(":")
        bare, value = bare.strip(), value.strip()
        config.apply_overrides(config.Config(), {bare: value})  # raises on an unknown key or a bad value
        if colon:
            scoped.append((scope.strip(), bare, value))
        else:
            global_sets[bare] = value
    return global_sets, scoped


def _seed0_hash(cfg) -> str:
    from vivit_cli import config

    return config.config_hash(cfg.replace(train=dataclasses.replace(cfg.train, seed=0)))


def _check_source(cfg) -> None:
    from vivit_cli.data.spec import parse

    parse(cfg.data.source)


def _build(merged: dict[str, str], preset: str | None):
    from vivit_cli import config

    cfg = config.build(merged, preset=preset)
    _check_source(cfg)
    return cfg


def _user_sources(global_sets: dict, scoped: list) -> dict[str, str]:
    """The user's data.source of each kind (`kinetics` -> `kinetics:/data/k400`), scoped or not."""
    from vivit_cli.data.spec import parse

    values = [v for _, k, v in scoped if k == "data.source"] + [v for k, v in global_sets.items() if k == "data.source"]
    out = {}
    for v in values:
        out.setdefault(parse(v)[0], v)
    return out


def _placeholder_keys(preset: str | None) -> set[str]:
    """The keys a preset leaves for the user to give (the paper's data.source and model.init_from)."""
    from vivit_cli.config.presets import placeholder_kind, preset_overrides

    return {k for k, v in (preset_overrides(preset) if preset else {}).items() if placeholder_kind(k, v) is not None}


def _filled(key: str, value: str, sources: dict[str, str]) -> str:
    """A `KIND:<PATH>` data.source placeholder replaced by the user's source of that kind, when there is one."""
    from vivit_cli.config.presets import placeholder_kind

    kind = placeholder_kind(key, value)
    return sources.get(kind, value) if kind else value


def _dependency_job(spec: GridSpec, dep: Dependency, global_sets: dict, preset: str | None,
                    sources: dict[str, str]) -> Job:
    from vivit_cli.config.presets import placeholder_kind, preset_overrides

    # e.g. the Kinetics pretraining of the regularisation table trains on the user's Kinetics
    overrides = {k: _filled(k, render(v), sources) for k, v in dep.overrides}
    # A dependency is trained from scratch, except where the preset starts everything from the user's image ViT.
    needs_vit = preset and placeholder_kind("model.init_from", preset_overrides(preset).get("model.init_from")) == ""
    sets = {**{k: render(v) for k, v in spec.base.items()}, **global_sets, **overrides,
            **({} if needs_vit else {"model.init_from": "none"})}
    try:
        cfg = _build(sets, preset)
        if dep.kind == "pretrain-image":
            from vivit_cli import config

            run_id = config.config_hash(config.image_config(cfg))
        else:
            run_id = f"{_seed0_hash(cfg)}-s0"
    except VivitError as e:
        raise VivitError(f"grid {spec.name}: dependency {dep.label or dep.kind}: {e}") from None
    sets["run.group"] = spec.name
    return Job(run_id=run_id, grid=DEPS_DIR, kind=dep.kind, cell=dep.label or dep.kind, labels={}, seed=0,
               overrides=overrides, sets=sets, preset=preset, table=None, config=cfg)


def _check_given(spec: GridSpec, preset: str | None, points: list[Point], jobs: list[Job], global_sets: dict,
                 scoped: list) -> None:
    """One line naming every `--set` a preset's placeholders still need (the paper's data, its image ViT), with
    the column to scope it to when the grid has several; nothing is planned until they are given."""
    from vivit_cli.config.presets import missing_message, needed_set, placeholder_kind

    columns = {p.labels.get("column") for p in points if p.labels.get("column")}
    by_source = {v: k for k, v in task_sources(preset).items()}
    needed = []
    for job in jobs:
        if job.config is None:
            continue
        for key, value in (("data.source", job.config.data.source), ("model.init_from", job.config.model.init_from)):
            kind = placeholder_kind(key, value)
            if kind is None:
                continue
            column = by_source.get(value) if key == "data.source" else None
            # A dependency takes its data from the user's source of that kind, named by its task column.
            scope = column if job.grid == DEPS_DIR or (len(columns) > 1 and column in columns) else None
            needed.append(needed_set(key, kind, scope))
    glob = global_sets.get("data.source")
    for p in points:
        kind = placeholder_kind("data.source", render(p.overrides.get("data.source", "")))
        column = p.labels.get("column")
        own = any(k == "data.source" and _scope_matches(sc, p) for sc, k, _ in scoped)
        if glob and kind and column and not own and not glob.startswith(f"{kind}:"):
            raise VivitError(f"grid {spec.name}: --set data.source={glob} would replace the {kind}: data of its "
                             f"{column} column; give each column its own: --set {column}:data.source={kind}:PATH")
    if needed:
        raise VivitError(f"grid {spec.name}: {missing_message(preset, needed)}")


def _scope_matches(scope: str, point: Point) -> bool:
    return scope == point.name or scope in point.labels.values()


def _own_image_steps(dep: Dependency, point: Point, global_sets: dict, scoped: list) -> Dependency:
    """The image ViT a cell starts from trains for the cell's own `train.image_steps` (its task's schedule, or a
    --set scoped to it), not the grid base's: so two tasks of one grid may start from two ViTs. A --set for
    the whole sweep still wins, as it does everywhere."""
    if dep.kind != "pretrain-image" or "train.image_steps" in global_sets:
        return dep
    steps = point.overrides.get("train.image_steps")
    for scope, key, value in scoped:
        if key == "train.image_steps" and _scope_matches(scope, point):
            steps = value
    if steps is None:
        return dep
    return dataclasses.replace(dep, overrides=dep.overrides + (("train.image_steps", steps),),
                               label=f"{dep.label}, {steps} steps")


def plan(spec: GridSpec, *, preset: str | None = None, sets: list[str] | None = None, seeds: int = 1) -> Plan:
    """Every job of the grid, validated; raises one VivitError listing every invalid cell."""
    from vivit_cli import config

    if seeds < 1:
        raise VivitError(f"--seeds {seeds}: must be at least 1")
    if preset is not None:
        config.preset_overrides(preset)
    global_sets, scoped = parse_user_sets(sets)
    try:
        base_cfg = config.build({**{k: render(v) for k, v in spec.base.items()}, **global_sets}, preset=preset)
    except VivitError as e:
        raise VivitError(f"grid {spec.name}: base config: {e}") from None
    points = spec.cells(base_cfg, preset)
    if not points:
        raise VivitError(f"grid {spec.name}: has no cells")
    for scope, key, _ in scoped:
        feeds_dependency = key == "data.source" and scope in task_sources(preset)  # found by kind, see above
        if not feeds_dependency and not any(_scope_matches(scope, p) for p in points):
            labels = sorted({v for p in points for v in p.labels.values()})
            raise VivitError(f"--set {scope}:{key}: {scope!r} matches no cell of grid {spec.name} "
                             f"(labels: {', '.join(labels)})")

    sources = _user_sources(global_sets, scoped)
    fills = _placeholder_keys(preset)
    deps: dict[Dependency, Job] = {}
    cells: list[Job] = []
    invalid: list[str] = []
    for point in points:
        axes, needs, kept = {}, [], set()
        replaced = {k for s, k, _ in scoped if _scope_matches(s, point)} | {k for k in global_sets if k not in fills}
        for k, v in point.overrides.items():
            if isinstance(v, Dependency):
                if k in replaced:  # the user's value, merged below, stands in for it: nothing to pretrain
                    continue
                v = _own_image_steps(v, point, global_sets, scoped)
                if v not in deps:
                    deps[v] = _dependency_job(spec, v, global_sets, preset, sources)
                needs.append(deps[v].run_id)
                v = f"{DEPS_DIR}/{deps[v].run_id}"
                if k in fills:
                    kept.add(k)  # the user's image ViT fills the preset's placeholder, not the grid's dependency
            axes[k] = _filled(k, render(v), sources)
        merged = {**{k: render(v) for k, v in spec.base.items()}, **axes,
                  **{k: v for k, v in global_sets.items() if k not in kept}}
        merged.update({k: v for scope, k, v in scoped if _scope_matches(scope, point)})
        for seed in range(seeds):
            job_sets = {**merged, "train.seed": str(seed), "run.group": spec.name}
            try:
                cfg = _build(job_sets, preset)
            except VivitError as e:
                invalid.append(f"{point.name}" + (f" (seed {seed})" if seeds > 1 else "") + f": {e}")
                break
            cells.append(Job(run_id=f"{_seed0_hash(cfg)}-s{seed}", grid=spec.name, kind="train", cell=point.name,
                             labels=dict(point.labels), seed=seed, overrides=axes, sets=job_sets, preset=preset,
                             table=spec.table, config=cfg, deps=tuple(needs)))
    _check_given(spec, preset, points, list(deps.values()) + cells, global_sets, scoped)
    if invalid:
        lines = "\n  ".join(invalid)
        raise VivitError(f"grid {spec.name}: {len(invalid)} of {len(points)} cells have an invalid config "
                         f"(nothing was run):\n  {lines}")
    seen: dict[str, str] = {}
    for job in cells:
        if job.run_id in seen and seen[job.run_id] != job.cell:
            raise VivitError(f"grid {spec.name}: cells {seen[job.run_id]!r} and {job.cell!r} have the same config "
                             f"(run id {job.run_id}); does a --set override one of the grid's axes?")
        seen[job.run_id] = job.cell
    return Plan(grid=spec, preset=preset, seeds=seeds, deps=list(deps.values()), cells=cells)
