"""Temporal layers L_t of the factorised encoder (paper arXiv v2 Table 3), on the appearance task.

L_t = 0 is the average-pool baseline. The cell whose L_t equals the preset's model.temporal_layers is the same
run as model-variants' "Model 2" appearance cell, and L_t = 0 the same as its baseline: they are shared.

    vivit sweep temporal-layers                     # L_t = 0, 1, 2, 4, 8 (smoke: 0, 1, 2)
    vivit report --table temporal-layers
"""

from vivit_cli.report import tables as T
from vivit_cli.sweep.grid import appearance, fixed, image_init, product, sweep

TABLE = "temporal-layers"
BASE = {"model.variant": "factorised_encoder", "data.source": "embedded:appearance"}


def cells(base, preset):
    values = (0, 1, 2) if preset == "smoke" else (0, 1, 2, 4, 8)
    if preset == "paper":
        values = (0, 1, 4, 8, 12)  # the paper's rows
    # From the image ViT, as every model in the paper: the spatial encoder inflated, the temporal one fresh.
    layers = sweep("model.temporal_layers", values, row=T.temporal_layers_row, column=T.APPEARANCE)
    return product(appearance(preset), fixed(image_init(preset)), layers)
