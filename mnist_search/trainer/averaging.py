"""An exponential moving average of a network's weights, the network that is evaluated and kept.

Late in a 15-epoch run the test accuracy of the raw weights still moves by ~0.1 point from
one epoch to the next (the confirmations in RESULTS.md), and "every one of the last epochs"
is judged on the worst of them. An average of the weights over about an epoch of steps
smooths those dips. The averaging is torch.optim.swa_utils' EMA function; the averaged
copy is held here rather than in swa_utils.AveragedModel because AveragedModel's update
reads a counter on the host every step, which a CUDA graph cannot capture.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


def decay_for(horizon_epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose average spans ``horizon_epochs`` epochs of steps (1 / (1 - decay) steps)."""
    return 1.0 - 1.0 / max(1.0, horizon_epochs * steps_per_epoch)


class WeightAverage:
    """An averaged copy of ``model``: parameters and float buffers (BatchNorm's running
    statistics) are averaged; integer buffers (BatchNorm's batch counter) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.source = model
        self.model = copy.deepcopy(model).requires_grad_(False)
        self._average = get_ema_multi_avg_fn(decay)
        pairs = list(zip(self._tensors(self.model), self._tensors(model), strict=True))
        self._averaged = [(mine, theirs) for mine, theirs in pairs if mine.is_floating_point()]
        self._copied = [(mine, theirs) for mine, theirs in pairs if not mine.is_floating_point()]

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in (*model.parameters(), *model.buffers())]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights: device work only, no host sync."""
        self._average([mine for mine, _ in self._averaged], [theirs for _, theirs in self._averaged], None)
        for mine, theirs in self._copied:
            mine.copy_(theirs)

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
