"""Optimizers and learning-rate schedules from a TrainConfig.

The schedule is computed ahead of training as one LR per training step (by stepping
PyTorch's own schedulers on a stand-in parameter), so the training loop only writes a
number per step: no scheduler arithmetic on the device and no host synchronisation, which
is what lets the step run inside a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR, StepLR

from mnist_search.trainer.config import TrainConfig


def make_optimizer(
    params: Iterable[torch.nn.Parameter], config: TrainConfig, lr_on_device: torch.device | None = None
) -> torch.optim.Optimizer:
    """The configured optimizer. ``lr_on_device`` holds the LR in a tensor on that device and
    uses the fused CUDA kernels, both needed to capture ``step()`` in a CUDA graph."""
    lr = torch.tensor(config.lr, device=lr_on_device) if lr_on_device is not None else config.lr
    fused = {"fused": True} if lr_on_device is not None else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay, **fused,
        )
    capturable = {"capturable": True} if lr_on_device is not None else {}
    optimizer = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return optimizer(params, lr=lr, weight_decay=config.weight_decay, **fused, **capturable)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> tuple[LRScheduler | None, bool]:
    """The scheduler and whether it steps after every batch (True) or after every epoch (False)."""
    total_steps = config.epochs * steps_per_epoch
    if config.scheduler == "step":
        return StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False
    if config.scheduler == "onecycle":
        # cycle_momentum=False: the configured momentum holds throughout. PyTorch's default
        # would override it with its own 0.85-0.95 cycle (the search's sampled momentum had
        # no effect), and a momentum that changes per step cannot live in a CUDA graph.
        return (
            OneCycleLR(
                optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=config.pct_start,
                div_factor=config.div_factor, final_div_factor=config.final_div_factor, cycle_momentum=False,
            ),
            True,
        )
    if config.scheduler == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total_steps), True
    return None, False


def lr_per_step(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The LR of every training step of the run, in order (epochs x steps_per_epoch values)."""
    stand_in = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler, per_batch = make_scheduler(stand_in, config, steps_per_epoch)
    stand_in.step()  # no gradients, so a no-op; PyTorch warns when a scheduler steps before its optimizer ever did
    lrs = []
    for _ in range(config.epochs):
        for _ in range(steps_per_epoch):
            lrs.append(float(stand_in.param_groups[0]["lr"]))
            if per_batch:
                scheduler.step()
        if scheduler is not None and not per_batch:
            scheduler.step()
    return lrs
