"""Config vocabulary: one typed, frozen config for model, data, training and run settings.

`build(["model.size=B", ...])` gives a resolved, validated `Config`; every invalid combination is a
`VivitError` naming the key and the allowed values. `to_json`/`from_json` round-trip losslessly and
`config_hash` is the run id's stable content hash.
"""

from .core import (apply_overrides, build, config_hash, format_heads, from_dict, from_json, head_sizes, parse_heads,
                   parse_sets, parse_tubelet, parse_views, resolve, to_dict, to_json, token_grid, validate)
from .derived import image_config
from .presets import PRESETS, preset_overrides
from .schema import (ATTENTION_ORDERS, CLASSIFIERS, EMBEDDINGS, INITS, SIZES, VARIANT_ALIASES, VARIANTS, Config,
                     DataConfig, ModelConfig, RunConfig, TrainConfig)

__all__ = [
    "ATTENTION_ORDERS", "CLASSIFIERS", "Config", "DataConfig", "EMBEDDINGS", "INITS", "ModelConfig", "PRESETS",
    "RunConfig", "SIZES", "TrainConfig", "VARIANTS", "VARIANT_ALIASES", "apply_overrides", "build", "config_hash",
    "format_heads", "from_dict", "from_json", "head_sizes", "image_config", "parse_heads", "parse_sets",
    "parse_tubelet", "parse_views", "preset_overrides", "resolve", "to_dict", "to_json", "token_grid", "validate",
]
