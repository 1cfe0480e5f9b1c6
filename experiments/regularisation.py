"""Progressive regularisation (paper arXiv v2 Table 4, Epic Kitchens): cumulative cells on the motion task.

Model 2 (factorised encoder) on the motion task, which plays Epic Kitchens. Each row adds one thing to the row
above: random crop + flip + colour jitter (the motion task keeps flips off by default, because left/right is its
label), + "Kinetics initialisation" (a model 2 that the sweep first trains on the appearance task, once, as a
dependency), + stochastic depth 0.2, + RandAugment (2 layers, magnitude 15), + label smoothing 0.2, + mixup 0.1:
the paper's Epic Kitchens settings.

    vivit sweep regularisation                      # 6 cumulative cells + the appearance pretraining
    vivit report --table regularisation
"""

from vivit_cli.report import tables as T
from vivit_cli.sweep.grid import cumulative, pretrained_video, product, task_sources, tasks

TABLE = "regularisation"
BASE = {"model.variant": "factorised_encoder", "data.color_jitter": 0.8}


def cells(base, preset):
    appearance = pretrained_video({"data.source": task_sources(preset)[T.APPEARANCE]}, "appearance pretraining")
    rows = cumulative([
        (T.REG_BASE, {}),
        (T.REG_INIT, {"model.init_from": appearance}),
        (T.REG_STOCHASTIC_DEPTH, {"model.stochastic_depth": 0.2}),
        (T.REG_RANDAUGMENT, {"data.randaugment_layers": 2, "data.randaugment_magnitude": 15}),
        (T.REG_LABEL_SMOOTHING, {"train.label_smoothing": 0.2}),
        (T.REG_MIXUP, {"train.mixup": 0.1}),
    ])
    return product(rows, tasks(preset, [T.MOTION]))
