"""An exponential moving average of a network's weights, the network that is evaluated and kept.

Late in a 15-epoch run the test accuracy of the raw weights still moves by ~0.1 point from
one epoch to the next (the confirmations in RESULTS.md), and "every one of the last epochs"
is judged on the worst of them. An average of the weights over about an epoch of steps
smooths those dips.

Written here rather than taken from torch.optim.swa_utils: its EMA has one fixed decay, and
AveragedModel reads a counter on the host every step, which a CUDA graph cannot capture.
Without a warm-up a fixed decay drags the random initial weights into the first epochs'
average (measured: 12% validation accuracy after epoch 1 with a one-epoch horizon, against
98% for the raw weights), and the pruner would then cut averaged trials for it. So the decay
warms up as timm's ModelEma does, min(decay, (1 + t) / (10 + t)) at step t: the average never
reaches back over more than about the last tenth of the steps taken.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_for(horizon_epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose average spans ``horizon_epochs`` epochs of steps (1 / (1 - decay) steps)."""
    return 1.0 - 1.0 / max(1.0, horizon_epochs * steps_per_epoch)


def warmed_decay(decay: float, step: int) -> float:
    """The decay used by the update after optimizer step ``step`` (counting from 0)."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """An averaged copy of ``model``: parameters and float buffers (BatchNorm's running
    statistics) are averaged; integer buffers (BatchNorm's batch counter) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)
        pairs = list(zip(self._tensors(self.model), self._tensors(model), strict=True))
        self._averaged = [(mine, theirs) for mine, theirs in pairs if mine.is_floating_point()]
        self._copied = [(mine, theirs) for mine, theirs in pairs if not mine.is_floating_point()]
        # 1 - decay of the next update, on the device: a CUDA graph reads it where it lies.
        self._weight = torch.zeros((), device=pairs[0][0].device)
        self._weight_set = 0.0

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in (*model.parameters(), *model.buffers())]

    def prepare(self, step: int) -> None:
        """Set the decay of the update that follows optimizer step ``step``."""
        weight = 1.0 - warmed_decay(self.decay, step)
        if weight != self._weight_set:  # constant once warmed up: no write (on CUDA, a launch) per step
            self._weight.fill_(weight)
            self._weight_set = weight

    @torch.no_grad()
    def update(self) -> None:
        """average += weight * (model - average): device work only, no host sync, graph-capturable."""
        mine = [m for m, _ in self._averaged]
        gaps = torch._foreach_sub([t for _, t in self._averaged], mine)
        torch._foreach_mul_(gaps, self._weight)
        torch._foreach_add_(mine, gaps)
        for m, t in self._copied:
            m.copy_(t)

    @torch.no_grad()
    def restart(self) -> None:
        """Start the average again from the model's current weights."""
        for mine, theirs in (*self._averaged, *self._copied):
            mine.copy_(theirs)

    @torch.no_grad()
    def copy_into_source(self) -> None:
        """Give the model the averaged weights (what was evaluated is what gets saved)."""
        for mine, theirs in (*self._averaged, *self._copied):
            theirs.copy_(mine)
