"""`model.init_from`: where a run's initial weights come from when it has no checkpoint of its own.

The value is a path (a training workdir, a step folder, a converted weights file; see `checkpoint.load`) or
a run id, looked up as `<results>/<run-id>` or `<results>/<grid>/<run-id>` with <results> = $VIVIT_RESULTS
or ./results (either may be gs://). Two cases:

- the source is an image ViT (one frame, as `vivit pretrain-image` trains): `models.init.inflate_from_image`
  does the paper's surgery (kernel inflation per `model.init`, position embeddings tiled over time, ...);
- the source is a video model of the same architecture (fine-tuning): every parameter whose path and shape
  match is copied, the rest (a head for a different label set) keep their fresh init.
"""

from __future__ import annotations

import os

import numpy as np

from vivit_cli.errors import VivitError
from vivit_cli.io import as_path, is_remote


def resolve(spec: str):
    p = as_path(spec)
    if p.exists():
        return p
    if is_remote(spec):
        raise VivitError(f"model.init_from={spec!r}: no such path")
    root = as_path(os.environ.get("VIVIT_RESULTS") or "results")
    found = [c for c in [root / spec, *root.glob(f"*/{spec}")] if c.is_dir()]
    if len(found) > 1:
        raise VivitError(f"model.init_from={spec!r}: ambiguous run id, matches {', '.join(map(str, found))}")
    if not found:
        raise VivitError(f"model.init_from={spec!r}: no such path, nor a run id under {root}/")
    return found[0]


def is_image_model(cfg) -> bool:
    return (cfg.model.sampled_frames or cfg.data.frames) == 1


def _merge_matching(fresh, src, path=""):
    """fresh with every leaf replaced by src's where the path exists there with the same shape."""
    if isinstance(fresh, dict):
        return {k: _merge_matching(v, src.get(k) if isinstance(src, dict) else None, f"{path}/{k}")
                for k, v in fresh.items()}
    if src is not None and np.shape(src) == np.shape(fresh):
        return np.asarray(src, dtype=np.asarray(fresh).dtype)
    return fresh


def initial_params(cfg, fresh_params, spec: str) -> tuple[dict, str]:
    """(params as host arrays, a one-line description of what was loaded)."""
    from vivit_cli.runtime import checkpoint

    path = resolve(spec)
    summary = path / "summary.json"
    if summary.is_file():
        from vivit_cli.io import read_json

        s = read_json(summary) or {}
        if s.get("status") not in (None, "done"):
            raise VivitError(f"model.init_from={spec!r}: that run has status {s.get('status')!r}, not done")
    src_cfg, src_params = checkpoint.load(path)
    fresh = _to_numpy(fresh_params)
    if is_image_model(src_cfg) and not is_image_model(cfg):
        from vivit_cli.models.init import inflate_from_image

        params = inflate_from_image(fresh, src_params, cfg)
        return _to_numpy(params), f"image ViT {path} inflated ({cfg.model.init})"
    params = _merge_matching(fresh, src_params)
    return params, f"weights copied from {path}"


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
