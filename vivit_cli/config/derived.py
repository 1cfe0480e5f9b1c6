"""Configs derived from a config: pure Config -> Config functions that the trainer and the sweep planner share."""

from __future__ import annotations

import dataclasses

from .core import parse_tubelet, resolve


def image_config(cfg):
    """The image ViT that `vivit pretrain-image` trains for a video config `cfg`: the same transformer, one
    frame, 2-D patches of the tubelet's spatial size (paper Sec. 3.4: ViViT initialises from an image ViT).

    Its readout is a class token, as the paper's ViTs have, unless the video model reads out by average pooling
    (`model.classifier=gap`): then the ViT does too, so that `--set model.classifier=gap` gives Table 2 one
    readout in every row and in the ViT they start from (models 3 and 4 cannot use a token)."""
    _, ph, pw = parse_tubelet(cfg.model.tubelet)
    # Models 3 and 4 are always gap, so their own readout says nothing of what the grid asked for the ViT.
    readout = "gap" if cfg.model.classifier == "gap" and cfg.model.variant in (
        "spatio_temporal", "factorised_encoder") else "token"
    model = dataclasses.replace(cfg.model, variant="spatio_temporal", embedding="uniform_frame",
                                tubelet=f"1x{ph}x{pw}", sampled_frames=0, init_from="none", classifier=readout,
                                init="random")
    # Still images come cropped from host arrays (`data.still_images`), whatever the video config crops on.
    data = dataclasses.replace(cfg.data, frames=1, stride=1, eval_views="1x1", crop_on_device=False)
    train = cfg.train
    if train.image_steps:
        n = train.image_steps
        train = dataclasses.replace(train, steps=n, warmup_steps=train.warmup_steps * n // train.steps, image_steps=0)
    return resolve(cfg.replace(model=model, data=data, train=train))
