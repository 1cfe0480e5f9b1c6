"""What `vivit eval` / `vivit predict` evaluate: a checkpoint restored with its config, checked against it.

PATH may be a training workdir (its newest readable step), one step folder `<workdir>/checkpoints/<step>`,
or a converted reference checkpoint (a folder with config.json and params.safetensors / params.msgpack /
an Orbax params/ item, or the weights file itself), locally or on gs://. Loading goes through
`runtime.checkpoint.load`, the one reader of the checkpoint format; this module adds what evaluation needs on
top: which step was read, where eval.json belongs, the class count and label names, and a shape check that
turns a config/weights mismatch into one line instead of an XLA error deep inside the forward pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vivit_cli.errors import VivitError
from vivit_cli.io import as_path


@dataclass
class Restored:
    cfg: Any  # resolved Config; data.num_classes filled in
    params: Any  # nested dict of numpy float arrays
    num_classes: int
    path: Path  # what the user named (an etils epath for a gs:// URL)
    home: Path  # the folder holding config.json: eval.json goes here
    step: int | None  # the training step of the weights, when they come from a run's checkpoint


class _DropWarnings:
    def filter(self, record) -> bool:
        import logging

        return record.levelno >= logging.ERROR


def _load(path: Path):
    import logging
    import warnings

    from vivit_cli.runtime import checkpoint

    absl_log = logging.getLogger("absl")
    # Orbax warns that a params-only item has no step metadata and how it found the sharding: both expected.
    quiet = _DropWarnings()
    absl_log.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sharding info not provided")
            return checkpoint.load(path)
    except VivitError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax/safetensors/msgpack raise many types for a damaged file
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise VivitError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first})") from None
    finally:
        absl_log.removeFilter(quiet)


def load(path: str | Path) -> Restored:
    """Restores PATH (see the module docstring) and checks that the weights fit the saved config."""
    import warnings

    from vivit_cli import config
    from vivit_cli import runtime
    from vivit_cli.runtime import checkpoint

    runtime.setup()  # multi-process init and device count must precede any JAX computation (the shape check)
    p = as_path(path, absolute=True)
    if not p.exists():
        raise VivitError(f"{p}: no such checkpoint, run directory or weights file")
    step = None
    if p.is_dir() and (p / "checkpoints").is_dir():
        # A run dir: read its steps newest first ourselves, so that we know which step was evaluated.
        home = p
        dirs = checkpoint.step_dirs(p / "checkpoints")
        if not dirs:
            raise VivitError(f"{p / 'checkpoints'}: no checkpoint steps (has the run saved one yet?)")
        errors = []
        for d in dirs:
            try:
                cfg, params = _load(d)
                step = int(d.name)
                break
            except VivitError as e:
                errors.append(e)
        else:
            raise VivitError(f"{p / 'checkpoints'}: no readable checkpoint (newest: {errors[0]})")
        for e in errors:  # only worth a warning when an older step stood in
            warnings.warn(f"{e}; evaluated step {step} instead", stacklevel=2)
    else:
        cfg, params = _load(p)
        if p.is_dir() and p.name.isdigit() and p.parent.name == "checkpoints":
            home, step = p.parent.parent, int(p.name)
        else:
            home = p if p.is_dir() else p.parent
    cfg = config.resolve(cfg)
    num_classes = _num_classes(cfg, params, p)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, num_classes=num_classes))
    check_params(cfg, params, num_classes, p)
    return Restored(cfg=cfg, params=params, num_classes=num_classes, path=p, home=home, step=step)


def _num_classes(cfg, params, where: Path) -> int:
    if cfg.data.num_classes:
        return int(cfg.data.num_classes)
    try:  # a converted config may leave it out; the classifier's width says it
        return int(params["output_projection"]["kernel"].shape[-1])
    except (KeyError, TypeError, IndexError):
        raise VivitError(f"{where}: config.json has no data.num_classes and the weights no output_projection") \
            from None


def _flat(tree) -> dict[str, tuple[int, ...]]:
    from vivit_cli.runtime.checkpoint import flatten

    return {name: tuple(getattr(v, "shape", ())) for name, v in flatten(tree).items()}


def check_params(cfg, params, num_classes: int, where: Path) -> None:
    """Every parameter the config's model needs is present with the right shape, and there is nothing else."""
    from vivit_cli import models

    if not isinstance(params, dict):
        raise VivitError(f"{where}: the weights are not a parameter tree")
    want = _flat(models.param_shapes(cfg, num_classes))
    have = _flat(params)
    summary = (f"model.variant={cfg.model.variant} hidden={cfg.model.hidden} layers={cfg.model.layers} "
               f"tubelet={cfg.model.tubelet} data.frames={cfg.data.frames} data.crop={cfg.data.crop}")
    for kind, names in (("lack", sorted(set(want) - set(have))), ("have", sorted(set(have) - set(want)))):
        if names:
            more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
            role = "needs" if kind == "lack" else "does not use"
            raise VivitError(f"{where}: the weights {kind} {names[0]}{more}, which the config ({summary}) {role}")
    for name in sorted(want):
        if want[name] != have[name]:
            raise VivitError(f"{where}: {name} has shape {list(have[name])} but the config ({summary}) expects "
                             f"{list(want[name])}")


def with_source(cfg, spec: str | None):
    """The config with `--data SPEC` as data.source (validated like any override)."""
    from vivit_cli import config

    if not spec:
        return cfg
    return config.build([f"data.source={spec}"], base=cfg)


def label_names(cfg, home: Path, num_classes: int, source=None) -> tuple[str, ...]:
    """Class names: label_names.txt / labels.txt beside config.json, else the data source's, else the indices."""
    for name in ("label_names.txt", "labels.txt"):
        f = home / name
        if f.is_file():
            names = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if len(names) == num_classes:
                return tuple(names)
    if source is None:
        try:
            from vivit_cli import data

            source = data.open_source(cfg)
        except Exception:  # noqa: BLE001 - the training data need not be on this machine to predict
            source = None
    if source is not None and source.num_classes == num_classes:
        return tuple(source.label_names)
    heads = getattr(source, "heads", ()) or ()
    if len(heads) > 1 and sum(len(names) for _, names in heads) == num_classes:  # side by side, as the model's
        return tuple(f"{head}/{name}" for head, names in heads for name in names)
    return tuple(str(i) for i in range(num_classes))
