"""The typed config: frozen dataclasses, plain data, no JAX.

The defaults are the CPU preset: a model small enough to train on the embedded data on a 2-core
machine in under a minute. `presets.py` holds the other scales (`smoke`, `paper`).

Fields left at `None` are resolved by `resolve()` (model dimensions from `model.size`, the flip
default from the task); a resolved config has no `None` left in the model section and is what
`config.json` stores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Names the user types. Aliases map onto these canonical names.
VARIANTS = ("spatio_temporal", "factorised_encoder", "factorised_self_attention", "factorised_dot_product")
VARIANT_ALIASES = {"1": "spatio_temporal", "2": "factorised_encoder", "3": "factorised_self_attention",
                   "4": "factorised_dot_product"}
EMBEDDINGS = ("tubelet", "uniform_frame")
INITS = ("random", "filter_inflation", "central_frame")
CLASSIFIERS = ("token", "gap")
ATTENTION_ORDERS = ("space_time", "time_space")
TEMPORAL_INITS = ("zero_out", "copy")  # model 3 from an image ViT: the temporal attention's output projection
OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("float32", "bfloat16")
WANDB_MODES = ("disabled", "offline", "online")

# (hidden, layers, heads, mlp). B/L/H are the paper's; Ti/S the usual ViT sizes; `tiny` is the
# CPU size of the default sweeps ("Tiny" in the speed targets of 2026-11-27 and benchmarks/RESULTS.md).
SIZES = {
    "tiny": (96, 4, 4, 384),
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}


@dataclass(frozen=True)
class ModelConfig:
    variant: str = "spatio_temporal"
    size: str = "tiny"
    hidden: int | None = None
    layers: int | None = None
    heads: int | None = None
    mlp: int | None = None
    temporal_layers: int = 4  # model 2 only; 0 = the paper's average-pool baseline
    attention_order: str = "space_time"  # model 3 only
    embedding: str = "tubelet"
    tubelet: str = "2x8x8"  # TxHxW; uniform_frame forces T=1
    sampled_frames: int = 0  # uniform_frame: frames picked evenly from the clip inside the model (0 = all)
    init: str = "central_frame"  # how an image ViT's 2-D patch kernel becomes a tubelet kernel
    init_from: str = "none"  # path or run id of an image ViT / video checkpoint, or "none"
    classifier: str | None = None  # None = token for models 1-2, gap for 3-4 (which cannot use a token)
    dropout: float = 0.0
    attention_dropout: float = 0.0
    stochastic_depth: float = 0.0  # final-layer drop rate, increasing linearly over depth
    temporal_zero_init: bool = True  # model 3: temporal attention output starts at zero (paper Sec. 3.4)
    temporal_init: str = "zero_out"  # model 3 with init_from: zero_out keeps that zero, copy takes the image's (Scenic)
    remat: bool = False  # gradient checkpointing per block


@dataclass(frozen=True)
class DataConfig:
    source: str = "embedded:motion"  # see `vivit data list`
    frames: int = 8
    stride: int = 1
    crop: int = 32
    num_classes: int | None = None  # resolved from the source
    # Resolved from the source too: "" for one head, else "name:size,..." in the source's head order (Epic-Kitchens
    # "verb:97,noun:300"). The model's one output projection holds the heads side by side in that order
    # (num_classes = their sum), as Scenic's multi-head model does.
    heads: str = ""
    data_dir: str | None = None  # TFDS data_dir
    train_split: str = "train"
    # The split `vivit train`'s final eval scores, and so the tables: held out from every choice. The embedded
    # test split has 2,500 clips, a sampling standard error near 1 point per run (docs/data.md).
    eval_split: str = "test"
    val_split: str = "val"  # the split for choices made while training (train.eval_every's evaluations)
    # The short side frames are resized to before crops, in training and evaluation (docs/data.md); None =
    # round(crop * 8 / 7), the reference's 256 for a 224 crop.
    eval_resize: int | None = None
    scale_min: float = 0.9  # scale jitter of the resized frame before the random crop (paper: 0.9-1.33)
    scale_max: float = 1.33
    flip: bool | None = None  # None = on, except where left/right is the label (the motion task)
    color_jitter: float = 0.0  # probability (paper: 0.8 on Kinetics)
    randaugment_layers: int = 0  # paper EK: 2 layers, magnitude 15
    randaugment_magnitude: int = 15
    workers: int = 0  # grain worker processes; 0 = in-process
    max_skip_fraction: float = 0.01  # corrupt files skipped before the source counts as broken
    eval_views: str = "1x1"  # temporal x spatial views used by `vivit train`'s final eval
    # The training crop's resize, flip and scaling inside the compiled step: the host sends each clip's uint8 window
    # of the resized frames and its geometry (data/transforms.crop_window), and the accelerator interpolates.
    # Frames must come at the short side (prepared records do); flip is the only augmentation it allows.
    crop_on_device: bool = False


@dataclass(frozen=True)
class TrainConfig:
    # The paper's optimizer. On the embedded data AdamW at 1e-3 left the factorised encoder stuck at chance on
    # the motion task while SGD trained every variant; lr and steps are sized for ~30 s runs on 2 CPU cores.
    optimizer: str = "sgd"  # paper: sgd with momentum 0.9
    lr: float = 0.05  # paper: 0.1 (K400) ... 0.5 (EK), batch 64
    momentum: float = 0.9
    weight_decay: float = 0.0  # paper: none (Scenic's l2_decay_factor 0)
    warmup_steps: int = 30  # paper: 2.5 epochs of linear warmup, then cosine
    steps: int = 300
    # The steps of the image ViT that a sweep pretrains for this config (`vivit pretrain-image`); 0 = train.steps.
    # Its warmup keeps train.warmup_steps' share of the schedule. At the CPU preset 300 steps leave the ViT at 57%
    # top-1 on still frames and 1,200 reach 87% (benchmarks/RESULTS.md "A shorter schedule").
    image_steps: int = 0
    batch_size: int = 32
    grad_clip: float = 1.0  # max global norm, as Scenic
    label_smoothing: float = 0.0  # paper EK: 0.2
    mixup: float = 0.0  # alpha; paper EK: 0.1
    seed: int = 0
    eval_every: int = 0  # steps; 0 = only at the end
    precision: str = "float32"  # bfloat16 = bf16 compute, f32 params and optimizer state
    mesh_model: int = 1  # devices on a second mesh axis that shards parameters (ViViT-L/H)


@dataclass(frozen=True)
class RunConfig:
    """How a run is executed and logged; nothing here changes its result, so it is not hashed."""

    wandb: str = "disabled"
    wandb_project: str = "vivit-cli"
    group: str = ""  # W&B group: the sweep's grid name
    log_every: int = 25
    checkpoint_every: int = 200
    keep_checkpoints: int = 3


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def replace(self, **sections) -> "Config":
        return dataclasses.replace(self, **sections)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "run": RunConfig}
UNHASHED_SECTIONS = ("run",)
# Keys added after run stores existed, left out of the hash at these defaults so that the run ids stay: one head
# (""), eval_resize None (a run trained before the crop geometry is then found, and flagged by its numerics), and
# image_steps 0 (the image ViT trained for train.steps, as before the key), and the host's crop.
UNHASHED_DEFAULTS = (("data", "heads", ""), ("data", "eval_resize", None), ("train", "image_steps", 0),
                     ("data", "crop_on_device", False))
