"""Configs derived from a config: pure Config -> Config functions that the trainer and the sweep planner share."""

from __future__ import annotations

import dataclasses

from .core import parse_tubelet, resolve


def image_config(cfg):
    """The image ViT that `vivit pretrain-image` trains for a video config `cfg`: the same transformer, one
    frame, 2-D patches of the tubelet's spatial size, a class token (paper Sec. 3.4: ViViT initialises from
    an image ViT)."""
    _, ph, pw = parse_tubelet(cfg.model.tubelet)
    model = dataclasses.replace(cfg.model, variant="spatio_temporal", embedding="uniform_frame",
                                tubelet=f"1x{ph}x{pw}", sampled_frames=0, init_from="none", classifier="token",
                                init="random")
    data = dataclasses.replace(cfg.data, frames=1, stride=1, eval_views="1x1")
    return resolve(cfg.replace(model=model, data=data))
