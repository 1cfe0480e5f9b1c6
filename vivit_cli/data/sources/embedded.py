"""`embedded:TASK[:SEED]`: the procedural glyph videos, generated once into the cache."""

from __future__ import annotations

import numpy as np

from vivit_cli.errors import VivitError

from .. import embedded
from .base import ArraySplit, Source
from .registry import OpenContext, register


@register("embedded")
def open_embedded(arg: str, ctx: OpenContext) -> Source:
    task, _, seed_text = arg.partition(":")
    if task not in embedded.TASKS:
        raise VivitError(f"data.source=embedded:{arg}: the embedded tasks are {', '.join(embedded.TASKS)}")
    try:
        seed = int(seed_text or 0)
    except ValueError:
        raise VivitError(f"data.source=embedded:{arg}: the seed after the task must be an integer") from None
    # Longer clips are generated (and cached separately) when the config asks for more frames. Motion
    # clips are exactly one clip long: with a temporal offset the turn could sit at the edge of the
    # clip, where one of the two directions is barely seen.
    frames = ctx.span if task == "motion" else max(embedded.MIN_FRAMES, ctx.span + 4)
    geometry = embedded.Geometry(frames=frames)
    splits = {}
    for name in embedded.SPLIT_SIZES:
        _, labels = embedded.load(task, name, seed=seed, geometry=geometry)
        vpath, _ = embedded.cached_paths(task, name, seed, geometry)
        splits[name] = ArraySplit(name, np.asarray(labels), path=str(vpath))
    return Source("embedded", f"embedded:{arg}", embedded.label_names(task), splits,
                  info={"task": task, "seed": seed, "generator_version": embedded.VERSION})
