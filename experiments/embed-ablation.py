"""Input encoding (paper Table 1): uniform frame sampling vs tubelet embedding with three initialisations.

Model 1 (spatio-temporal attention) on the appearance task, which plays Kinetics 400. Every cell starts from an
image ViT that the sweep first trains on the task's still frames (`vivit pretrain-image`, once, reused by all
cells and by later sweeps; at paper scale the ImageNet-21k ViT you converted, on your Kinetics). At the CPU preset
the appearance task trains 150 video steps from a 1,200-step ViT (sweep.grid.task_schedules, docs/training.md).
The uniform-frame cell uses the ViT's 2-D patch kernel as is; the tubelet cells turn it into
a 3-D kernel by random init, filter inflation or central-frame init (paper Sec. 3.2 and 3.4). Uniform frame
sampling embeds frames / t evenly spaced frames, so both encodings give the transformer the same number of tokens.

    vivit sweep embed-ablation                      # 4 cells + the image pretraining
    vivit sweep embed-ablation --preset paper --backend tpu --backend-opt zone=... \
        --set data.source=kinetics:/data/kinetics400 --set model.init_from=/models/vit-b16-i21k
    vivit report --table embed-ablation
"""

from vivit_cli.config import parse_tubelet
from vivit_cli.report import tables as T
from vivit_cli.sweep.grid import appearance, chain, fixed, image_init, product

TABLE = "embed-ablation"
BASE = {"model.variant": "spatio_temporal", "data.source": "embedded:appearance"}


def cells(base, preset):
    t, _, _ = parse_tubelet(base.model.tubelet)
    init = image_init(preset)
    return product(appearance(preset), chain(
        fixed({**init, "model.embedding": "uniform_frame", "model.sampled_frames": base.data.frames // t},
              row=T.UNIFORM_FRAME, column=T.APPEARANCE),
        fixed({**init, "model.init": "random"}, row=T.TUBELET_RANDOM, column=T.APPEARANCE),
        fixed({**init, "model.init": "filter_inflation"}, row=T.TUBELET_INFLATION, column=T.APPEARANCE),
        fixed({**init, "model.init": "central_frame"}, row=T.TUBELET_CENTRAL, column=T.APPEARANCE),
    ))
