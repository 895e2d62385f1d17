"""The `train` params section: `TrainConfig` (with its `augment` subsection) and run settings
derived from it (device, precision, the config hash that guards resuming)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from stdformer.config import section_config
from stdformer.losses import LossConfig
from stdformer.model.stdformer import model_config_from_section


@dataclass
class AugmentConfig:
    """Clip-consistent augmentation (reference section 2): one draw per clip, shared by all of
    its frames. Defaults are the published recipe."""

    enabled: bool = True
    flip_prob: float = 0.5
    color_noise: float = 0.4            # per-channel factor ~ U[1 - n, 1 + n]
    rotation_std_deg: float = 30.0
    rotation_max_deg: float = 60.0      # clip |angle| to this
    rotation_zero_prob: float = 0.6     # angle set to 0 with this probability
    scale_std: float = 0.25             # crop-size factor ~ N(1, std), clipped to [min, max]
    scale_min: float = 0.75
    scale_max: float = 1.25
    reverse_prob: float = 0.5           # temporal reversal

    @property
    def may_flip(self) -> bool:
        return self.enabled and self.flip_prob > 0

    def validate(self) -> None:
        for name in ("flip_prob", "rotation_zero_prob", "reverse_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{name} must lie in [0, 1], got {value}")
        if not 0.0 <= self.color_noise < 1.0:
            raise ValueError(f"augment.color_noise must lie in [0, 1), got {self.color_noise}")
        for name in ("rotation_std_deg", "rotation_max_deg", "scale_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.scale_min <= 1.0 <= self.scale_max:
            raise ValueError(f"augment.scale_min/scale_max must satisfy 0 < min <= 1 <= max, got "
                             f"{self.scale_min}, {self.scale_max}")


@dataclass
class TrainConfig:
    """Optimisation, data streaming, checkpointing and logging of one training run."""

    steps: int = 300
    batch_size: int = 4                 # clips per rank and step
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 0.3              # max global grad norm; 0 disables
    warmup_steps: int = 20              # linear warm-up, then cosine decay to lr * min_lr_ratio
    joint_warmup_steps: int = 0         # first steps train the 3D joint-token loss alone
    min_lr_ratio: float = 0.1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"   # auto: bf16 autocast on GPU, else fp32
    compile: bool = False
    channels_last: bool = True          # GPU only
    checkpoint_every: int = 50          # steps; a checkpoint is also written at the end
    keep_checkpoints: int = 2
    resume: Literal["auto", "never"] = "auto"
    seed: int = 0
    num_workers: int = 1                # DataLoader workers per rank
    threads: int = 2                    # CPU intra-op threads: fixed, so weights do not depend
                                        # on the machine's core count (stdformer/numerics.py)
    shuffle_buffer: int = 32            # clips, per loader stream
    val_every: int = 100                # steps; 0 = only at the end (whole split, as evaluate)
    log_every: int = 10
    experiment: str = "stdformer"       # MLflow experiment name
    mix: dict[str, float] = field(default_factory=dict)  # source -> weight (normalised); a
                                        # weight 0 is not read; {}: the one source there is
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        positive = ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every",
                    "threads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        non_negative = ("lr", "weight_decay", "grad_clip", "warmup_steps", "joint_warmup_steps",
                        "seed", "num_workers", "shuffle_buffer", "val_every")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        for name, weight in self.mix.items():
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"mix.{name} must be a finite weight >= 0, got {weight}")
        if self.mix and not any(w > 0 for w in self.mix.values()):
            raise ValueError("mix: at least one source needs a weight > 0")
        if not self.experiment:
            raise ValueError("experiment must be a non-empty name")
        self.augment.validate()


# Fields that change neither the weights nor the data order (batches do not depend on the
# number of loader workers): a resumed run may differ in them.
_NOT_HASHED = frozenset({"checkpoint_every", "keep_checkpoints", "resume", "log_every",
                         "val_every", "experiment", "num_workers"})


def resolve_precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. bf16 autocast is a GPU feature here."""
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ValueError("train.precision 'bf16' needs a CUDA device; use 'auto' or 'fp32'")
    return torch.bfloat16


def run_identity(train: TrainConfig, model: Any, loss: Any, *, world_size: int,
                 body_model_id: str, train_data: Any, init_checkpoint: str | None = None
                 ) -> dict[str, Any]:
    """Everything that determines the trained weights, as plain JSON values: the one place the
    resume key is composed. `train_data`: the identity of the training shards
    (`ShardIndex.fingerprint()`); `init_checkpoint`: the sha256 of the file the weights start
    from, if any. Stored next to the checkpoints as config.json."""
    def plain(obj: Any) -> Any:
        return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj

    train_dict = {k: v for k, v in dataclasses.asdict(train).items() if k not in _NOT_HASHED}
    identity = {"train": train_dict, "model": plain(model), "loss": plain(loss),
                "world_size": world_size, "body_model_id": body_model_id,
                "train_data": train_data, "init_checkpoint": init_checkpoint}
    return json.loads(json.dumps(identity, default=str))        # tuples -> lists, paths -> str


PARAMS_IDENTITY_KEYS = ("train", "model", "loss")   # the parts of a run identity params decide


def params_identity(params: dict[str, Any], variant: str, source: str
                    ) -> dict[str, Any] | None:
    """The part of `run_identity` that params.yaml decides for one `variants` entry (train,
    model + the variant's overrides, loss: as the train stage reads them), to tell which
    checkpoint configuration the current params would resume; None when there is no such
    variant."""
    variants = params.get("variants") or {}
    if not isinstance(variants, dict) or variant not in variants:
        return None
    train = section_config(params, "train", TrainConfig, source)
    model = model_config_from_section({**(params.get("model") or {}), **(variants[variant] or {})},
                                      source=source, prefix=f"variants.{variant}")
    loss = section_config(params, "loss", LossConfig, source, required=False)
    identity = run_identity(train, model, loss, world_size=1, body_model_id="", train_data=None)
    return {key: identity[key] for key in PARAMS_IDENTITY_KEYS}


def config_hash(identity: dict[str, Any]) -> str:
    """sha256 of a `run_identity`: a checkpoint is resumed only when its hash matches."""
    text = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
