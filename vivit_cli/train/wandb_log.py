"""Weights & Biases logging through the wandb library. Local files stay the source of truth.

- Offline by default (`run.wandb=offline`: no account, no network; upload later with `wandb sync
  <workdir>/wandb/offline-run-*`); `online` when the user asks and is logged in; `disabled` does nothing.
- The W&B run id is derived from the run id (itself the config hash for a plain run), so a resumed run
  appends to the same W&B run instead of starting a new one. Runs of a sweep are grouped by `run.group`.
- The toolkit never reads, passes or writes the API key: wandb finds it itself (WANDB_API_KEY or
  ~/.netrc written by `wandb login`).
- Only process 0 logs.
- wandb writes through the local file system, so a gs:// workdir gets its W&B folder under the cache instead
  (`$VIVIT_CACHE/wandb/<digest of the workdir URL>`), stable across resumes like the W&B run id.

`read_offline_run(run_dir)` reads an offline run's `.wandb` log back (history, config, summary) without
wandb's private modules: the file is the `:W&B` header followed by LevelDB-log framed protobuf records.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from vivit_cli.errors import VivitError
from vivit_cli.io import is_remote


def wandb_run_id(run_id: str) -> str:
    """W&B ids allow [a-z0-9-_] up to 64 chars; a short digest keeps any run id valid and stable."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in run_id.lower())[:48]
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def local_dir(workdir) -> Path:
    if not is_remote(workdir):
        return Path(workdir)
    from vivit_cli.runtime import cache_root

    d = cache_root() / "wandb" / hashlib.sha256(str(workdir).encode()).hexdigest()[:12]
    d.mkdir(parents=True, exist_ok=True)
    return d


class WandbLogger:
    def __init__(self, cfg, workdir, run_id: str, enabled: bool = True, alongside: bool = False):
        """`alongside`: other runs of this process stay open meanwhile (the seeds of a group, one W&B run each)."""
        self.run = None
        mode = cfg.run.wandb
        if not enabled or mode == "disabled":
            return
        import wandb

        from vivit_cli import config

        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, disable_git=True,
                                  save_code=False, x_save_requirements=False)
        try:
            self.run = wandb.init(project=cfg.run.wandb_project, group=cfg.run.group or None, id=wandb_run_id(run_id),
                                  name=run_id, resume="allow", mode=mode, dir=str(local_dir(workdir)),
                                  config=config.to_dict(cfg),
                                  settings=settings, reinit="create_new" if alongside else "finish_previous")
        except wandb.errors.UsageError as e:
            raise VivitError(f"run.wandb={mode}: {str(e).splitlines()[0]} (or use --wandb offline)") from None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if k != "step"}, step=step)

    def finish(self, summary: dict[str, Any] | None = None, failed: bool = False) -> None:
        if self.run is None:
            return
        for k, v in _scalars(summary or {}):
            self.run.summary[k] = v
        self.run.finish(exit_code=1 if failed else 0)
        self.run = None


def _scalars(tree: dict[str, Any], prefix: str = ""):
    """(key, value) for every scalar of a nested dict, nested keys joined by "/" (W&B's panel grouping): the
    run's `perf` block arrives as perf/mfu, perf/train_clips_per_s, ..."""
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _scalars(v, f"{prefix}{k}/")
        elif isinstance(v, (int, float, str, bool)) or v is None:
            yield f"{prefix}{k}", v


# ---------------------------------------------------------------------------------------------------------
# reading an offline run back

_BLOCK = 32 * 1024
_HEADER = 7  # crc32 (4) + length (2) + type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes):
    """Yields the payload of each record of a LevelDB-log framed file (after the 7-byte W&B header)."""
    if data[:4] != b":W&B":
        raise VivitError("not a W&B transaction log (missing ':W&B' header)")
    pos, pending = 7, b""
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:  # the block's tail is zero padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:
            pos += room  # preallocated zeros
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """{"history": [ {key: value, ...} per logged step ], "config": {...}, "summary": {...}} of an offline run
    folder (`.../wandb/offline-run-*`) or its `.wandb` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(run_dir)
    files = [path] if path.is_file() else sorted(path.glob("*.wandb"))
    if not files:
        raise VivitError(f"{path}: no .wandb file")
    out: dict[str, Any] = {"history": [], "config": {}, "summary": {}}
    for f in files:
        for payload in _records(f.read_bytes()):
            rec = pb.Record()
            rec.ParseFromString(payload)
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                out["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                       for item in rec.history.item})
            elif kind in ("config", "run"):
                items = rec.config.update if kind == "config" else rec.run.config.update
                for item in items:
                    out["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            elif kind == "summary":
                for item in rec.summary.update:
                    out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
