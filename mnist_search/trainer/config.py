"""TrainConfig: everything about how a network is trained, as a plain JSON-serialisable dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from mnist_search.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "onecycle", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.01  # the peak LR for onecycle, the initial LR otherwise
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0
    scheduler: str = "none"  # none | step (per epoch) | onecycle (per batch) | cosine (per batch)
    step_size: int = 6  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    pct_start: float = 0.3  # onecycle: fraction of steps spent warming up
    div_factor: float = 25.0  # onecycle: initial LR = lr / div_factor
    final_div_factor: float = 1e4  # onecycle: final LR = initial LR / final_div_factor
    rotation: float = 0.0  # augmentation: degrees, uniform in [-rotation, rotation]
    translate: float = 0.0  # augmentation: fraction of the image side, uniform in [-t, t] per axis
    scale_min: float = 1.0  # augmentation: zoom factor, uniform in [scale_min, scale_max]
    scale_max: float = 1.0
    label_smoothing: float = 0.0
    ema_epochs: float = 0.0  # evaluate and keep an average of the weights over this many epochs (0: off)
    distill_weight: float = 0.0  # weight of a teacher network's soft targets in the loss (0: off)
    distill_temperature: float = 4.0  # softmax temperature of the soft targets
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}"),
            (self.scheduler in SCHEDULERS, f"unknown scheduler {self.scheduler!r}; choose {', '.join(SCHEDULERS)}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.step_size >= 1, f"step size must be at least 1 epoch, got {self.step_size}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (0 < self.pct_start < 1, f"pct_start must be in (0, 1), got {self.pct_start}"),
            (0 <= self.rotation <= 180, f"rotation must be 0-180 degrees, got {self.rotation}"),
            (0 <= self.translate < 0.5, f"translate must be in [0, 0.5), got {self.translate}"),
            (0 < self.scale_min <= self.scale_max, f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.distill_weight <= 1, f"distill_weight must be in [0, 1], got {self.distill_weight}"),
            (0 < self.distill_temperature <= 100,
             f"distill_temperature must be in (0, 100], got {self.distill_temperature}"),
            (0 <= self.ema_epochs <= self.epochs,
             f"ema_epochs must be 0 (off) to {self.epochs} epochs, got {self.ema_epochs}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def augments(self) -> bool:
        return self.rotation > 0 or self.translate > 0 or (self.scale_min, self.scale_max) != (1.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (None values are ignored, for optional CLI flags)."""
        return TrainConfig.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})
