"""Model variants (paper Table 2): models 1-4 and the model-2 average-pool baseline, on both tasks.

The appearance task plays Kinetics 400 and the motion task Epic Kitchens (at `--preset paper` they are your copies
of both: `--set appearance:data.source=kinetics:PATH --set motion:data.source=epic:PATH`, from
`--set model.init_from=` an ImageNet-21k ViT converted with `vivit convert vit`). The average-pool baseline
is the factorised encoder with no temporal transformer (L_t = 0): it averages the frame embeddings. As in the
paper, every cell starts from an image ViT (trained once, shared with the other grids; at the CPU preset each task
its own, with its own schedule: sweep.grid.task_schedules): model 2's spatial
encoder and models 1, 3, 4's transformer come from it, model 2's temporal encoder starts fresh. Cells shared
with other grids (model 2 = temporal-layers' L_t cell, model 3 = attention-order's space-then-time cell) are
trained once.

    vivit sweep model-variants                      # 5 variants x 2 tasks = 10 cells
    vivit report --table model-variants
"""

from vivit_cli.report import tables as T
from vivit_cli.sweep.grid import chain, fixed, image_init, product, tasks

TABLE = "model-variants"
# The base's task only decides which image ViT the cells start from (both tasks draw the same glyphs, so
# embed-ablation's); every cell sets its own task.
BASE = {"data.source": "embedded:appearance"}

VARIANTS = (
    ("spatio_temporal", T.MODEL_1, {}),
    ("factorised_encoder", T.MODEL_2, {}),
    ("factorised_self_attention", T.MODEL_3, {}),
    ("factorised_dot_product", T.MODEL_4, {}),
    ("factorised_encoder", T.MODEL_2_AVE_POOL, {"model.temporal_layers": 0}),
)


def cells(base, preset):
    variants = chain(*(fixed({"model.variant": v, **image_init(preset), **extra}, row=row)
                       for v, row, extra in VARIANTS))
    return product(variants, tasks(preset))
