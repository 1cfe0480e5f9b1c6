"""Building, validating, serialising and hashing configs. Pure Python, no JAX."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from typing import Any, Iterable, Mapping

from vivit_cli.errors import VivitError

from . import schema
from .schema import Config

# ---------------------------------------------------------------------------------------------
# key=value overrides


@functools.cache  # the schema's classes never change; resolving their string annotations was half of `sweep --list`
def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, raw: Any, typ: Any) -> Any:
    """Turns the text of `--set key=value` (or a Python value from a grid) into the field's type."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "")):
            return None
        return _coerce(key, raw, args[0])
    if typ is bool:
        value = parse_bool(raw)
        if value is None:
            raise VivitError(f"{key}: expected true or false, got {raw!r}")
        return value
    if typ is int:
        if isinstance(raw, bool):
            raise VivitError(f"{key}: expected an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        try:
            return int(str(raw))
        except ValueError:
            raise VivitError(f"{key}: expected an integer, got {raw!r}") from None
    if typ is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise VivitError(f"{key}: expected a number, got {raw!r}") from None
    return str(raw)


def parse_bool(raw: Any) -> bool | None:
    """true/false, yes/no, on/off, 1/0 (any case) -> bool; anything else -> None."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    return None


def parse_sets(sets: Iterable[str]) -> dict[str, str]:
    """`["model.size=B", ...]` -> `{"model.size": "B"}`, rejecting malformed items."""
    out: dict[str, str] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VivitError(f"--set {item!r}: expected key=value, e.g. model.size=B")
        out[key.strip()] = value.strip()
    return out


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Applies dotted-key overrides; unknown keys are an error that lists the valid ones."""
    sections = {name: dataclasses.asdict(getattr(cfg, name)) for name in schema.SECTIONS}
    for key, raw in overrides.items():
        section, _, name = key.partition(".")
        if section not in schema.SECTIONS:
            raise VivitError(f"unknown config key {key!r}: sections are {', '.join(schema.SECTIONS)}")
        types_ = _field_types(schema.SECTIONS[section])
        if name not in types_:
            raise VivitError(f"unknown config key {key!r}: {section}.* keys are {', '.join(types_)}")
        sections[section][name] = _coerce(key, raw, types_[name])
    return Config(**{s: schema.SECTIONS[s](**v) for s, v in sections.items()})


# ---------------------------------------------------------------------------------------------
# resolution and validation


def parse_tubelet(text: str, key: str = "model.tubelet") -> tuple[int, int, int]:
    parts = str(text).lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise VivitError(f"{key}={text!r}: expected TxHxW with positive integers, e.g. 2x16x16")
    return dims  # type: ignore[return-value]


def parse_views(text: str, key: str = "views") -> tuple[int, int]:
    parts = str(text).lower().split("x")
    try:
        t, s = (int(p) for p in parts)
    except ValueError:
        raise VivitError(f"{key}={text!r}: expected TxS, e.g. 4x3 (temporal clips x spatial crops)") from None
    if t <= 0 or s <= 0:
        raise VivitError(f"{key}={text!r}: both counts must be positive")
    return t, s


def parse_heads(text: str, key: str = "data.heads") -> tuple[tuple[str, int], ...]:
    """"verb:97,noun:300" -> (("verb", 97), ("noun", 300)); "" -> () (a single head)."""
    if not str(text).strip():
        return ()
    out = []
    for part in str(text).split(","):
        name, _, size = part.strip().partition(":")
        try:
            n = int(size)
        except ValueError:
            n = 0
        if not name or n <= 0:
            raise VivitError(f"{key}={text!r}: expected name:size,... with positive sizes, e.g. verb:97,noun:300")
        out.append((name.strip(), n))
    if len({n for n, _ in out}) < len(out):
        raise VivitError(f"{key}={text!r}: a head name comes twice")
    return tuple(out)


def format_heads(heads) -> str:
    """((name, size), ...) -> "name:size,..."; one head (or none) -> "", what a single-head config holds."""
    heads = tuple((str(n), int(s)) for n, s in heads)
    return "" if len(heads) < 2 else ",".join(f"{n}:{s}" for n, s in heads)


def head_sizes(cfg: Config) -> tuple[int, ...]:
    """The class count of each head, in the output projection's order: (num_classes,) for a single head."""
    heads = parse_heads(cfg.data.heads)
    return tuple(s for _, s in heads) if heads else (cfg.data.num_classes,)


def _choice(key: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise VivitError(f"{key}={value!r}: allowed values are {', '.join(allowed)}")


def resolve(cfg: Config) -> Config:
    """Fills derived fields (aliases, model dims from the size preset) and validates everything."""
    m = cfg.model
    variant = schema.VARIANT_ALIASES.get(str(m.variant), m.variant)
    _choice("model.variant", variant, schema.VARIANTS + tuple(schema.VARIANT_ALIASES))
    _choice("model.size", m.size, schema.SIZES)
    hidden, layers, heads, mlp = schema.SIZES[m.size]
    m = dataclasses.replace(
        m, variant=variant,
        hidden=m.hidden if m.hidden is not None else hidden,
        layers=m.layers if m.layers is not None else layers,
        heads=m.heads if m.heads is not None else heads,
        mlp=m.mlp if m.mlp is not None else mlp,
        classifier=m.classifier or ("gap" if variant in ("factorised_self_attention", "factorised_dot_product")
                                    else "token"))
    if m.embedding == "uniform_frame":
        _, h, w = parse_tubelet(m.tubelet)
        m = dataclasses.replace(m, tubelet=f"1x{h}x{w}")
    cfg = cfg.replace(model=m)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    m, d, t, r = cfg.model, cfg.data, cfg.train, cfg.run
    _choice("model.variant", m.variant, schema.VARIANTS)
    _choice("model.embedding", m.embedding, schema.EMBEDDINGS)
    _choice("model.init", m.init, schema.INITS)
    _choice("model.classifier", m.classifier, schema.CLASSIFIERS)
    _choice("model.attention_order", m.attention_order, schema.ATTENTION_ORDERS)
    _choice("model.temporal_init", m.temporal_init, schema.TEMPORAL_INITS)
    _choice("train.optimizer", t.optimizer, schema.OPTIMIZERS)
    _choice("train.precision", t.precision, schema.PRECISIONS)
    _choice("run.wandb", r.wandb, schema.WANDB_MODES)
    for key, value in (("model.hidden", m.hidden), ("model.layers", m.layers), ("model.heads", m.heads),
                       ("model.mlp", m.mlp), ("data.frames", d.frames), ("data.stride", d.stride),
                       ("data.crop", d.crop), ("train.steps", t.steps), ("train.batch_size", t.batch_size),
                       ("train.mesh_model", t.mesh_model), ("run.log_every", r.log_every),
                       ("run.checkpoint_every", r.checkpoint_every), ("run.keep_checkpoints", r.keep_checkpoints)):
        if value is None or value <= 0:
            raise VivitError(f"{key}={value}: must be a positive integer")
    for key, value in (("model.temporal_layers", m.temporal_layers), ("model.sampled_frames", m.sampled_frames),
                       ("train.warmup_steps", t.warmup_steps), ("train.eval_every", t.eval_every),
                       ("train.image_steps", t.image_steps),
                       ("data.workers", d.workers), ("data.randaugment_layers", d.randaugment_layers)):
        if value < 0:
            raise VivitError(f"{key}={value}: must not be negative")
    for key, value in (("model.dropout", m.dropout), ("model.attention_dropout", m.attention_dropout),
                       ("model.stochastic_depth", m.stochastic_depth), ("train.label_smoothing", t.label_smoothing)):
        if not 0.0 <= value < 1.0:
            raise VivitError(f"{key}={value}: must be in [0, 1)")
    for key, value in (("data.color_jitter", d.color_jitter), ("data.max_skip_fraction", d.max_skip_fraction)):
        if not 0.0 <= value <= 1.0:
            raise VivitError(f"{key}={value}: must be in [0, 1]")
    if t.lr <= 0:
        raise VivitError(f"train.lr={t.lr}: must be positive")
    if t.mixup < 0:
        raise VivitError(f"train.mixup={t.mixup}: must not be negative")
    if not 0 < d.scale_min <= d.scale_max:
        raise VivitError(f"data.scale_min={d.scale_min}, data.scale_max={d.scale_max}: need 0 < min <= max")
    if d.eval_resize is not None and d.eval_resize < d.crop:
        raise VivitError(f"data.eval_resize={d.eval_resize}: the resized short side must be at least data.crop={d.crop}")
    if d.crop_on_device and (d.color_jitter > 0 or d.randaugment_layers):
        raise VivitError("data.crop_on_device=true crops, flips and scales in the compiled step, which has no colour "
                         "jitter or RandAugment: set data.color_jitter=0 and data.randaugment_layers=0, or crop on "
                         "the host")
    if d.num_classes is not None and d.num_classes <= 0:
        raise VivitError(f"data.num_classes={d.num_classes}: must be a positive integer")
    parse_views(d.eval_views, "data.eval_views")
    heads = parse_heads(d.heads)
    if len(heads) == 1:
        raise VivitError(f"data.heads={d.heads!r}: one head is written as \"\" (the default)")
    if heads and d.num_classes is not None and sum(s for _, s in heads) != d.num_classes:
        raise VivitError(f"data.heads={d.heads!r}: the heads' sizes sum to {sum(s for _, s in heads)}, "
                         f"data.num_classes is {d.num_classes}")
    if m.hidden % m.heads:
        raise VivitError(f"model.hidden={m.hidden} is not divisible by model.heads={m.heads}")
    if m.variant == "factorised_dot_product" and m.heads % 2:
        raise VivitError(f"model.heads={m.heads}: factorised_dot_product splits heads between time and space, "
                         "so it needs an even head count")
    if m.classifier == "token" and m.variant in ("factorised_self_attention", "factorised_dot_product"):
        raise VivitError(f"model.classifier=token is unsupported for model.variant={m.variant}: use gap")
    ft, fh, fw = parse_tubelet(m.tubelet)
    if m.embedding == "uniform_frame" and ft != 1:
        raise VivitError(f"model.tubelet={m.tubelet}: uniform_frame embeds single frames, so T must be 1")
    frames = m.sampled_frames or d.frames
    if m.sampled_frames > d.frames:
        raise VivitError(f"model.sampled_frames={m.sampled_frames} exceeds data.frames={d.frames}")
    if frames % ft:
        raise VivitError(f"data.frames={frames} is not divisible by the tubelet's T={ft} (model.tubelet={m.tubelet})")
    if d.crop % fh or d.crop % fw:
        raise VivitError(f"data.crop={d.crop} is not divisible by the patch size {fh}x{fw} (model.tubelet={m.tubelet})")
    if t.batch_size % t.mesh_model:
        raise VivitError(f"train.batch_size={t.batch_size} is not divisible by train.mesh_model={t.mesh_model}")


def build(sets: Iterable[str] | Mapping[str, Any] = (), preset: str | None = None,
          base: Config | None = None) -> Config:
    """Defaults (or `base`) <- preset <- overrides, then resolved and validated."""
    from .presets import preset_overrides

    cfg = base or Config()
    if preset:
        cfg = apply_overrides(cfg, preset_overrides(preset))
    overrides = dict(sets) if isinstance(sets, Mapping) else parse_sets(sets)
    return resolve(apply_overrides(cfg, overrides))


# ---------------------------------------------------------------------------------------------
# geometry that every layer needs (tokens, patch sizes)


def token_grid(cfg: Config) -> tuple[int, int, int]:
    """(n_t, n_h, n_w): the paper's token grid, n_t = floor(T / t) and so on."""
    ft, fh, fw = parse_tubelet(cfg.model.tubelet)
    frames = cfg.model.sampled_frames or cfg.data.frames
    return frames // ft, cfg.data.crop // fh, cfg.data.crop // fw


# ---------------------------------------------------------------------------------------------
# serialisation and identity


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


def from_dict(data: Mapping[str, Any]) -> Config:
    """Inverse of `to_dict`; unknown keys are an error (a config from a newer version, or a typo)."""
    flat = {f"{s}.{k}": v for s, section in data.items() for k, v in (section or {}).items()}
    return apply_overrides(Config(), flat)


def to_json(cfg: Config, indent: int | None = 2) -> str:
    return json.dumps(to_dict(cfg), indent=indent, sort_keys=True)


def from_json(text: str) -> Config:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise VivitError(f"config is not valid JSON: {e}") from None
    return from_dict(data)


def config_hash(cfg: Config, length: int = 10) -> str:
    """Stable content hash of everything that changes a run's result (the `run` section is left out)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in schema.UNHASHED_SECTIONS}
    for section, key, default in schema.UNHASHED_DEFAULTS:  # at its default, the run id it had before the key existed
        if data[section][key] == default:
            del data[section][key]
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
