"""Checkpoints: Orbax `CheckpointManager` folders under `<workdir>/checkpoints/<step>/`.

Each step folder holds three items:
  params/     the model parameters (float32)
  opt_state/  the optimizer state
  meta/       JSON: step, rng key data, every process's data-iterator state, train_seconds, config hash

Why this is preemption-safe: Orbax writes a step into `<step>.orbax-checkpoint-tmp/` and renames it into
place only when complete, and it deletes old steps (beyond `run.keep_checkpoints`) only after a newer one is
finalised. A kill at any moment therefore leaves the previous complete step. A latest step that still fails
to restore (a disk error, a copy that lost files) is skipped with a warning and the previous one used.

On an object store (a gs:// workdir) Orbax skips the rename: a step counts only once its commit_success.txt
marker is written, last, which gives the same guarantee. Paths are `vivit_cli.io` paths (pathlib locally,
etils epath for URLs), which Orbax takes as they are; its arrays go through tensorstore's own GCS driver.

`load(path)` is the read-only entry point for eval/predict/init_from; see its docstring for what `path` may be.
Weight files name each tensor by its "/"-joined path (`flatten` / `unflatten`).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

from vivit_cli.errors import VivitError
from vivit_cli.io import as_path, is_remote, rmtree

ITEMS = ("params", "opt_state", "meta")


def _quiet_absl() -> None:
    # Orbax logs every save at INFO through absl; the run's own log says what matters.
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:  # pragma: no cover - absl comes with orbax
        pass


_quieted = False


def quiet_failed_restore() -> None:
    """A damaged Orbax item fails its first read while others are in flight; their completions then land on
    the closed event loop and print one traceback each ("Event loop is closed", dozens for one damaged step),
    even after the restore has returned and the run has moved on to an older step. Drop exactly those
    (installed before any restore, for the life of the process), so that a damaged checkpoint is the one
    warning or error line it should be."""
    global _quieted
    if _quieted:
        return
    import logging
    import sys

    previous = sys.unraisablehook

    def hook(u):
        # Also what "Exception ignored in: <coroutine ...>" carries when the coroutine dies with the loop.
        if isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed":
            return
        previous(u)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(lambda r: "exception was never retrieved" not in r.getMessage())
    _quieted = True


class Checkpointer:
    """Thin wrapper: save (params, opt_state, meta) together; restore the newest step that is readable."""

    def __init__(self, directory, keep: int, async_save: bool = True):
        import orbax.checkpoint as ocp

        _quiet_absl()
        self._ocp = ocp
        self.directory = as_path(directory, absolute=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
                                               cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Starts saving `step`; device buffers are copied before this returns, so the caller may donate them."""
        ocp = self._ocp
        if step in self.manager.all_steps():
            return  # e.g. a final save right after a periodic one
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state["params"]),
            opt_state=ocp.args.StandardSave(state["opt_state"]),
            meta=ocp.args.JsonSave(meta)), force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def restore_latest(self, abstract_state: dict, upto: int | None = None) -> tuple[dict, dict] | None:
        """(state, meta) of the newest readable step (no newer than `upto` when given), or None when there is none.

        `abstract_state` carries shapes, dtypes and shardings, so arrays come back already laid out on the
        current mesh (which may differ from the one that saved them) and optax states keep their types.
        Unreadable newer steps are deleted once an older one restores: they would otherwise shadow the
        steps this run writes next.
        """
        ocp = self._ocp
        quiet_failed_restore()
        bad: list[int] = []
        for step in sorted((s for s in self.manager.all_steps() if upto is None or s <= upto), reverse=True):
            try:
                out = self.manager.restore(step, args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_state["params"]),
                    opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
                    meta=ocp.args.JsonRestore()))
                meta = dict(out["meta"])
                if int(meta.get("step", -1)) != step:
                    raise ValueError(f"meta says step {meta.get('step')}")
            except Exception as e:  # noqa: BLE001 - any failure means "this step is unusable"
                msg = f"checkpoint {self.directory / str(step)} is unreadable ({type(e).__name__}: " \
                      f"{str(e).splitlines()[0][:200] if str(e) else ''}); falling back to the previous one"
                warnings.warn(msg, stacklevel=2)  # the one line a user sees (and tests catch)
                bad.append(step)
                continue
            for b in bad:
                self._delete(b)
            state = {"step": None, "params": out["params"], "opt_state": out["opt_state"]}
            return state, meta
        for b in bad:
            self._delete(b)
        return None

    def drop_after(self, step: int) -> None:
        """Deletes the steps newer than `step` (a group of seeds resuming from an older step than this seed's
        newest: they would shadow the steps it writes next)."""
        for s in [s for s in self.manager.all_steps() if s > step]:
            self._delete(s)

    def _delete(self, step: int) -> None:
        try:
            self.manager.delete(step)
        except Exception:  # noqa: BLE001 - the folder may be too broken for orbax; remove it by hand
            rmtree(self.directory / str(step))
        self.manager.reload()


# ---------------------------------------------------------------------------------------------------------
# read-only loading for eval / predict / init_from


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested param dict -> {"/"-joined name: leaf}: the names of weight files and of every converter."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def has_checkpoints(workdir) -> bool:
    """Whether `workdir` holds a complete checkpoint step (what makes a run resumable)."""
    try:
        return bool(step_dirs(as_path(workdir) / "checkpoints"))
    except OSError:
        return False


def step_dirs(ckpt_root) -> list:
    """Step folders, newest first. On an object store a step is written in place, so one without Orbax's
    commit marker is still being written (or was cut off) and is left out."""
    dirs = [p for p in ckpt_root.iterdir() if p.name.isdigit() and p.is_dir()]
    if is_remote(ckpt_root):
        dirs = [p for p in dirs if (p / "commit_success.txt").exists()]
    return sorted(dirs, key=lambda p: -int(p.name))


def _restore_params(step_dir):
    """Params of one step folder as host numpy arrays, whatever mesh saved them."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    _quiet_absl()
    quiet_failed_restore()
    item = as_path(step_dir, absolute=True) / "params"  # orbax refuses relative paths
    with ocp.PyTreeCheckpointer() as ckptr:
        meta = ckptr.metadata(item)
        meta = getattr(meta, "item_metadata", meta)  # orbax 0.12 wraps the tree metadata in a StepMetadata
        tree = getattr(meta, "tree", meta)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return ckptr.restore(item, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def _read_config(path):
    from vivit_cli import config

    if not path.is_file():
        raise VivitError(f"{path}: missing; cannot tell which model these weights belong to")
    return config.from_json(path.read_text())


def _load_flat_file(path) -> dict:
    """A converted reference checkpoint: `.safetensors` or `.msgpack` with "/"-joined parameter names."""
    import numpy as np

    if path.suffix == ".safetensors":
        if is_remote(path):
            from safetensors.numpy import load

            flat = load(path.read_bytes())
        else:
            from safetensors.numpy import load_file

            flat = load_file(str(path))
    elif path.suffix == ".msgpack":
        from flax.serialization import msgpack_restore  # msgpack: plain data, no code execution

        tree = msgpack_restore(path.read_bytes())
        return tree.get("params", tree)
    else:
        raise VivitError(f"{path}: unsupported weights file (expected .safetensors or .msgpack)")
    return unflatten({name: np.asarray(value) for name, value in flat.items()})


def load(path, step: int | None = None):
    """(cfg, params) from any of:

    - a training workdir (`config.json` + `checkpoints/`): its newest readable step, or `step`;
    - one step folder `<workdir>/checkpoints/<step>`;
    - a converted reference checkpoint: a `.safetensors`/`.msgpack` file whose keys are "/"-joined parameter
      paths, or a folder holding `params.safetensors`/`params.msgpack`, with a `config.json` beside it;
    - a params-only folder: `config.json` + an Orbax `params/` item (no optimizer state).

    Any of these may be a gs:// URL. Params come back as a nested dict of numpy float arrays (host memory); put
    them on devices as needed.
    """
    p = as_path(path)
    if not p.exists():
        raise VivitError(f"{p}: no such checkpoint, run directory or weights file")
    if p.is_file():
        return _read_config(p.parent / "config.json"), _load_flat_file(p)
    for name in ("params.safetensors", "params.msgpack"):
        if (p / name).is_file():
            return _read_config(p / "config.json"), _load_flat_file(p / name)
    if p.name.isdigit() and (p / "params").is_dir():
        return _read_config(p.parent.parent / "config.json"), _restore_params(p)
    if (p / "params").is_dir() and (p / "config.json").is_file():
        # params-only checkpoint (e.g. a converted reference model): config.json + an Orbax params/ item
        return _read_config(p / "config.json"), _restore_params(p)
    root = p / "checkpoints"
    if not root.is_dir():
        raise VivitError(f"{p}: not a run directory (no checkpoints/), a step folder or a weights file")
    cfg = _read_config(p / "config.json")
    dirs = step_dirs(root)
    if step is not None:
        dirs = [d for d in dirs if int(d.name) == step]
        if not dirs:
            raise VivitError(f"{root}: no checkpoint for step {step}")
    for d in dirs:
        try:
            return cfg, _restore_params(d)
        except Exception as e:  # noqa: BLE001 - a broken newest step falls back to the previous one
            warnings.warn(f"checkpoint {d} is unreadable ({type(e).__name__}); trying the previous one", stacklevel=2)
    raise VivitError(f"{root}: no readable checkpoint")
