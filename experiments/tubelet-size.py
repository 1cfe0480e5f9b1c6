"""Tubelet size (paper arXiv v2 Fig. 8): temporal tubelet length t = 8, 4, 2 for models 1-4, appearance task.

Rows are the paper's `<patch>x<t>` notation (8x8, 8x4, 8x2 on the CPU presets; 16x8, 16x4, 16x2 at paper scale),
columns the model variants. Smaller tubelets mean more tokens: accuracy and FLOPs go up, model 1's the most.
A length that does not divide the clip's frames is left out (a conditional cell). The t = 2 cells are shared
with model-variants' appearance cells when the preset's tubelet is 2 frames long.

    vivit sweep tubelet-size                        # 3 lengths x 4 variants = 12 cells
    vivit report --table tubelet-size
"""

from vivit_cli.config import parse_tubelet
from vivit_cli.report import tables as T
from vivit_cli.sweep.grid import appearance, fixed, image_init, product, sweep, where

TABLE = "tubelet-size"
BASE = {"data.source": "embedded:appearance"}


def cells(base, preset):
    _, h, w = parse_tubelet(base.model.tubelet)
    frames = base.data.frames
    tubelets = [f"{t}x{h}x{w}" for t in (8, 4, 2)]
    variants = sweep("model.variant", list(T.VARIANT_SHORT), column=T.VARIANT_SHORT.get)
    # Every length inflates the same image ViT's patch kernel (central frame, the config default).
    grid = product(appearance(preset), fixed(image_init(preset)), sweep("model.tubelet", tubelets, row=T.tubelet_row),
                   variants)
    return where(lambda o: frames % parse_tubelet(o["model.tubelet"])[0] == 0, grid)
