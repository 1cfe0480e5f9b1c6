"""Param trees as plain data: flatten to "/"-joined names, rebuild, compare against what a model needs.

Pure NumPy; every converter goes through `check_against` so that a converted tree is known to fit the
model its config describes before anything is written.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from vivit_cli.errors import VivitError
from vivit_cli.runtime.checkpoint import flatten, unflatten

__all__ = ["flatten", "unflatten", "to_float32", "blocks", "shape_of", "check_against"]


def to_float32(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Host float32 arrays (bf16 checkpoints included); non-float leaves are a layout error."""
    flat = {}
    for name, value in flatten(tree).items():
        arr = np.asarray(value)
        if not (np.issubdtype(arr.dtype, np.floating) or arr.dtype.name == "bfloat16"):
            raise VivitError(f"param {name}: expected a float array, got {arr.dtype} {arr.shape}")
        flat[name] = np.ascontiguousarray(arr.astype(np.float32))
    return unflatten(flat)


def blocks(encoder: Mapping[str, Any]) -> list[str]:
    """`encoderblock_{i}` names in layer order; a gap in the numbering is a broken checkpoint."""
    names = [k for k in encoder if k.startswith("encoderblock_")]
    try:
        idx = sorted(int(k.split("_", 1)[1]) for k in names)
    except ValueError:
        raise VivitError(f"unknown encoder block name among {sorted(names)[:3]}") from None
    if idx != list(range(len(idx))):
        raise VivitError(f"encoder blocks are numbered {idx[:6]}...: expected encoderblock_0..{len(idx) - 1}")
    return [f"encoderblock_{i}" for i in idx]


def shape_of(tree: Mapping[str, Any], path: str) -> tuple[int, ...]:
    node: Any = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise VivitError(f"unknown param layout: no {path}")
        node = node[part]
    return tuple(np.shape(node))


def _diff(got: Mapping[str, Any], want: Mapping[str, Any]) -> Iterator[str]:
    for name in sorted(set(want) - set(got)):
        yield f"the checkpoint has no {name} (the model needs {tuple(want[name].shape)})"
    for name in sorted(set(got) - set(want)):
        yield f"unexpected param {name} {tuple(np.shape(got[name]))} (not part of this model)"
    for name in sorted(set(got) & set(want)):
        if tuple(np.shape(got[name])) != tuple(want[name].shape):
            yield f"param {name} has shape {tuple(np.shape(got[name]))}, the model needs {tuple(want[name].shape)}"


def check_against(params: Mapping[str, Any], cfg, num_classes: int) -> None:
    """Raises naming the first param whose presence or shape disagrees with the model `cfg` builds."""
    from vivit_cli import models

    want = flatten(models.param_shapes(cfg, num_classes))
    problems = list(_diff(flatten(params), want))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise VivitError(problems[0] + more)
