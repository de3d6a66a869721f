"""Optimizers and learning-rate schedules from a TrainConfig, each stepped at its own granularity."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR, StepLR

from mnist_search.trainer.config import TrainConfig


def make_optimizer(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> tuple[LRScheduler | None, bool]:
    """The scheduler and whether it steps after every batch (True) or after every epoch (False)."""
    total_steps = config.epochs * steps_per_epoch
    if config.scheduler == "step":
        return StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False
    if config.scheduler == "onecycle":
        return (
            OneCycleLR(
                optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=config.pct_start,
                div_factor=config.div_factor, final_div_factor=config.final_div_factor,
            ),
            True,
        )
    if config.scheduler == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total_steps), True
    return None, False
