"""Writes a converted checkpoint in the layout `train.checkpoint.load` reads:

  <dir>/params.safetensors   "/"-joined param names, float32
  <dir>/labels.txt           class names, one per line (line i = class i), when the source has them; the
                             file `vivit predict` reads beside config.json
  <dir>/interop.json         where the weights came from and what was assumed
  <dir>/config.json          the resolved config, written last: a folder without it is not a checkpoint yet
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from vivit_cli.errors import VivitError
from vivit_cli.io import atomic_write_bytes, atomic_write_json, atomic_write_text

from .tree import check_against, flatten, to_float32

PARAMS_FILE = "params.safetensors"
LABELS_FILE = "labels.txt"
PROVENANCE_FILE = "interop.json"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_converted(out_dir: str | Path, cfg, params: Mapping[str, Any], labels: list[str] | None,
                    provenance: dict) -> Path:
    from safetensors.numpy import save

    from vivit_cli import config

    out = Path(out_dir)
    if (out / "checkpoints").is_dir():
        raise VivitError(f"--out {out}: a training run directory; choose a new folder for converted weights")
    num_classes = cfg.data.num_classes
    params = to_float32(params)  # host float32, whatever came in (jax arrays, bf16)
    check_against(params, cfg, num_classes)
    if labels is not None and len(labels) != num_classes:
        raise VivitError(f"{len(labels)} label names for {num_classes} classes (output_projection)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").unlink(missing_ok=True)  # the folder is incomplete until config.json is back
    atomic_write_bytes(out / PARAMS_FILE, save(flatten(params), metadata={"format": "vivit-cli"}))
    if labels is not None:
        atomic_write_text(out / LABELS_FILE, "".join(" ".join(str(n).split()) + "\n" for n in labels))
    else:
        (out / LABELS_FILE).unlink(missing_ok=True)
    atomic_write_json(out / PROVENANCE_FILE, provenance)
    atomic_write_text(out / "config.json", config.to_json(cfg) + "\n")
    return out


def read_labels(path: str | Path) -> list[str] | None:
    """labels.txt (or label_names.txt) beside a checkpoint's config.json, if there is one."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    for name in (LABELS_FILE, "label_names.txt"):
        if (folder / name).is_file():
            return [ln.strip() for ln in (folder / name).read_text(encoding="utf-8").splitlines() if ln.strip()]
    return None
