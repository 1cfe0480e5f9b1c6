"""The report tables: their rows and columns (in the paper's order) and the paper's published numbers.

The row and column labels below are the contract with the sweep grids: a grid writes them verbatim into each
run's `cell.json` (`row`, `column`), so grids should import these constants rather than retype them.
Numbers come from /work/shared/reference/paper_tables.md (arXiv v2 and the ICCV version agree on all of them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Columns: the task a run was trained on. The appearance task plays Kinetics 400, the motion task Epic Kitchens.
APPEARANCE = "appearance"
MOTION = "motion"
TASK_COLUMNS = (APPEARANCE, MOTION)

# Table 1: input encoding.
UNIFORM_FRAME = "Uniform frame sampling"
TUBELET_RANDOM = "Tubelet: random init"
TUBELET_INFLATION = "Tubelet: filter inflation"
TUBELET_CENTRAL = "Tubelet: central frame"
EMBED_ROWS = (UNIFORM_FRAME, TUBELET_RANDOM, TUBELET_INFLATION, TUBELET_CENTRAL)

# Table 2: model variants (the paper's own row names).
MODEL_1 = "Model 1: Spatio-temporal"
MODEL_2 = "Model 2: Fact. encoder"
MODEL_3 = "Model 3: Fact. self-attention"
MODEL_4 = "Model 4: Fact. dot product"
MODEL_2_AVE_POOL = "Model 2: Ave. pool baseline"
VARIANT_ROWS = (MODEL_1, MODEL_2, MODEL_3, MODEL_4, MODEL_2_AVE_POOL)
# Short names, used as the columns of the tubelet-size table (one column per variant).
VARIANT_SHORT = {"spatio_temporal": "Model 1", "factorised_encoder": "Model 2",
                 "factorised_self_attention": "Model 3", "factorised_dot_product": "Model 4"}

# Attention order of model 3.
SPACE_TIME = "Space then time"
TIME_SPACE = "Time then space"
ATTENTION_ORDER_ROWS = {"space_time": SPACE_TIME, "time_space": TIME_SPACE}

# Regularisation on the motion task, cumulative: each row includes every row above it.
REG_BASE = "Random crop, flip, colour jitter"
REG_INIT = "+ Kinetics 400 initialisation"
REG_STOCHASTIC_DEPTH = "+ Stochastic depth"
REG_RANDAUGMENT = "+ Random augment"
REG_LABEL_SMOOTHING = "+ Label smoothing"
REG_MIXUP = "+ Mixup"
REGULARISATION_ROWS = (REG_BASE, REG_INIT, REG_STOCHASTIC_DEPTH, REG_RANDAUGMENT, REG_LABEL_SMOOTHING, REG_MIXUP)


def temporal_layers_row(n: int) -> str:
    """Row label of the L_t study, e.g. `L_t=4`."""
    return f"L_t={int(n)}"


def tubelet_row(tubelet: str) -> str:
    """Row label of the tubelet-size table in the paper's notation `<h>x<t>` (ViViT-B/16x2), from a `TxHxW` tubelet."""
    t, h, _w = (int(p) for p in str(tubelet).lower().split("x"))
    return f"{h}x{t}"


def row_number(label: str) -> float | None:
    """The numeric value a row label stands for (L_t, or the tubelet's temporal length), for plots and sorting."""
    try:
        if label.startswith("L_t="):
            return float(label[4:])
        if "x" in label:
            return float(label.split("x")[-1])
        return float(label)
    except ValueError:
        return None


# Metric columns taken from the runs of a row rather than from a task column.
METRICS = {
    "gflops": "GFLOPs",
    "params": "Params (M)",
    "runtime": "Runtime (ms/clip)",
    # The perf block of each run's summary.json, shown by `vivit report --perf`.
    "train_clips_per_s": "Train clips/s",
    "mfu": "MFU",
    "peak_memory_gib": "Peak memory (GiB)",
    "compile_s": "Compile (s)",
}
PERF_METRICS = ("train_clips_per_s", "mfu", "peak_memory_gib", "compile_s")


@dataclass(frozen=True)
class PaperColumn:
    """One column of published numbers, keyed by our row labels."""

    label: str  # the column header, e.g. "Paper K400 top-1"
    benchmark: str  # where the numbers come from, e.g. "Kinetics 400, ViViT-B, Table 1"
    values: dict[str, float]


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str  # what the table compares, e.g. "Input encoding"
    paper_ref: str  # where the paper has it, e.g. "Table 1"
    grids: tuple[str, ...]  # grids that feed it (used when a cell.json has no `table`)
    rows: tuple[str, ...]  # expected rows, in the paper's order; rows found in the run store are appended
    columns: tuple[str, ...]  # expected accuracy columns (cell.json `column`)
    column_labels: dict[str, str] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()  # keys of METRICS shown per row
    metrics_per_column: bool = False  # metrics differ per column (tubelet size x variant): one metric column each
    metric_source: str | None = None  # the column whose runs give a row's metrics (None: every done run of the row)
    paper: tuple[PaperColumn, ...] = ()
    paper_note: str = ""  # what the paper says when it gives no (confirmed) numbers
    row_header: str = "Row"
    plot: str = "bars"  # bars | flops (accuracy vs GFLOPs) | line (vs the row's number) | tubelet (rows in order)
    numeric_rows: bool = False  # rows sort by their number (L_t, tubelet length) when new ones are found
    # The row every other row is compared with (paired difference with its interval), and its short name for the
    # header. Tables without one still mark each column's best row and the rows not distinguishable from it.
    reference: str | None = None
    reference_short: str = ""

    @property
    def full_title(self) -> str:
        return f"{self.title} (paper {self.paper_ref})"

    def column_label(self, column: str) -> str:
        return self.column_labels.get(column, f"{column} top-1")


_TASK_LABELS = {APPEARANCE: "Appearance top-1 (%)", MOTION: "Motion top-1 (%)"}

TABLES: dict[str, TableSpec] = {}


def _add(spec: TableSpec) -> None:
    TABLES[spec.name] = spec


_add(TableSpec(
    name="embed-ablation",
    title="Input encoding",
    paper_ref="Table 1",
    grids=("embed-ablation",),
    rows=EMBED_ROWS,
    columns=(APPEARANCE,),
    column_labels=_TASK_LABELS,
    row_header="Input encoding",
    # The paper's pick, used by every later experiment in the paper: each row says what the alternative gives up.
    reference=TUBELET_CENTRAL,
    reference_short="central frame",
    paper=(PaperColumn("Paper K400 top-1", "Kinetics 400, ViViT-B Model 1, 32 frames (Table 1)",
                       {UNIFORM_FRAME: 78.5, TUBELET_RANDOM: 73.2, TUBELET_INFLATION: 77.6, TUBELET_CENTRAL: 79.2}),),
))

_add(TableSpec(
    name="model-variants",
    title="Model variants",
    paper_ref="Table 2",
    grids=("model-variants",),
    rows=VARIANT_ROWS,
    columns=(APPEARANCE, MOTION),
    column_labels=_TASK_LABELS,
    metrics=("gflops", "params", "runtime"),
    metric_source=APPEARANCE,
    row_header="Model",
    plot="flops",
    # The unfactorised model, the paper's baseline in Table 2: each factorisation's cost or gain in accuracy.
    reference=MODEL_1,
    reference_short="Model 1",
    paper=(
        PaperColumn("Paper K400 top-1", "Kinetics 400, ViViT-B/16x2 (Table 2)",
                    {MODEL_1: 80.0, MODEL_2: 78.8, MODEL_3: 77.4, MODEL_4: 76.3, MODEL_2_AVE_POOL: 75.8}),
        PaperColumn("Paper EK top-1", "Epic Kitchens action accuracy, ViViT-B/16x2 (Table 2)",
                    {MODEL_1: 43.1, MODEL_2: 43.7, MODEL_3: 39.1, MODEL_4: 39.5, MODEL_2_AVE_POOL: 38.8}),
        PaperColumn("Paper GFLOPs", "ViViT-B/16x2, 32x224x224 (Table 2)",
                    {MODEL_1: 455.2, MODEL_2: 284.4, MODEL_3: 372.3, MODEL_4: 277.1, MODEL_2_AVE_POOL: 283.9}),
        PaperColumn("Paper params (M)", "ViViT-B/16x2 (Table 2)",
                    {MODEL_1: 88.9, MODEL_2: 115.1, MODEL_3: 117.3, MODEL_4: 88.9, MODEL_2_AVE_POOL: 86.7}),
        PaperColumn("Paper runtime (ms)", "inference on TPU-v3, batch and views not stated (Table 2)",
                    {MODEL_1: 58.9, MODEL_2: 17.4, MODEL_3: 31.7, MODEL_4: 22.9, MODEL_2_AVE_POOL: 17.3}),
    ),
))

_add(TableSpec(
    name="temporal-layers",
    title="Temporal layers L_t of model 2",
    paper_ref="arXiv v2 Table 3",
    grids=("temporal-layers",),
    rows=tuple(temporal_layers_row(n) for n in (0, 1, 2, 4, 8)),
    columns=(APPEARANCE,),
    column_labels=_TASK_LABELS,
    row_header="L_t",
    plot="line",
    numeric_rows=True,
    paper=(PaperColumn("Paper K400 top-1", "Kinetics 400, ViViT-B/16x2 Model 2; L_t=0 is the ave. pool baseline "
                       "(arXiv v2 Table 3)",
                       {temporal_layers_row(n): v for n, v in ((0, 75.8), (1, 78.6), (4, 78.8), (8, 78.8),
                                                               (12, 78.9))}),),
))

_add(TableSpec(
    name="attention-order",
    title="Attention order of model 3",
    paper_ref="Sec. 3.3, no numbers",
    grids=("attention-order",),
    rows=(SPACE_TIME, TIME_SPACE),
    columns=(APPEARANCE, MOTION),
    column_labels=_TASK_LABELS,
    row_header="Order",
    paper_note="The paper reports no numbers for this ablation; it states that the order (space then time or time "
               "then space) makes no difference when the temporal attention is zero-initialised (Sec. 3.3-3.4).",
))

_add(TableSpec(
    name="tubelet-size",
    title="Tubelet size",
    paper_ref="v2 Fig. 8 / ICCV Fig. 6",
    grids=("tubelet-size",),
    rows=("8x8", "8x4", "8x2"),
    columns=tuple(VARIANT_SHORT.values()),
    column_labels={v: f"{v} top-1 (%)" for v in VARIANT_SHORT.values()},
    metrics=("gflops",),
    metrics_per_column=True,
    row_header="Tubelet (h x t)",
    plot="tubelet",
    numeric_rows=True,
    paper_note="The paper shows tubelet sizes 16x8, 16x4 and 16x2 only in a figure; its plotted accuracies and "
               "FLOPs are not printed anywhere, so no paper numbers are given here (UNCONFIRMED). It states that "
               "smaller tubelets improve accuracy for every variant and that model 1's FLOPs grow the most.",
))

_add(TableSpec(
    name="regularisation",
    title="Regularisation, cumulative",
    paper_ref="v2 Table 4 / ICCV Table 3",
    grids=("regularisation",),
    rows=REGULARISATION_ROWS,
    columns=(MOTION,),
    column_labels=_TASK_LABELS,
    row_header="Regularisation (cumulative)",
    paper=(PaperColumn("Paper EK top-1", "Epic Kitchens action accuracy, ViViT-B/16x2 factorised encoder",
                       {REG_BASE: 38.4, REG_INIT: 39.6, REG_STOCHASTIC_DEPTH: 40.2, REG_RANDAUGMENT: 41.1,
                        REG_LABEL_SMOOTHING: 43.1, REG_MIXUP: 43.7}),),
))


def with_perf(spec: TableSpec) -> TableSpec:
    """`spec` with the perf columns after its own metrics, laid out as those are (per row or per column)."""
    return replace(spec, metrics=spec.metrics + tuple(m for m in PERF_METRICS if m not in spec.metrics))


def get(name: str) -> TableSpec:
    from vivit_cli.errors import VivitError

    if name not in TABLES:
        raise VivitError(f"unknown table {name!r}: known tables are {', '.join(TABLES)}")
    return TABLES[name]


def table_for_grid(grid: str) -> str | None:
    """The table a grid feeds, for runs whose cell.json has no `table` key."""
    for spec in TABLES.values():
        if grid in spec.grids:
            return spec.name
    return None
