"""Runtime: where and how a training runs, as one value, apart from what it learns (TrainConfig).

Every field is a matter of speed: a run trains the same network from the same recipe on any
of them, up to floating-point error (the tests compare them with a plain step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.setup import should_compile


@dataclass(frozen=True)
class Runtime:
    """``device``: 'auto' (CUDA when present), 'cpu', 'cuda' or a torch.device. ``compile``:
    torch.compile the training step. ``cuda_graph``: replay the step from a CUDA graph
    (default: on for CUDA). ``channels_last`` (default: for compiled or fused CPU training) and
    ``bf16`` autocast are there to be measured (bench/)."""

    device: str | torch.device = "auto"
    compile: bool = False
    cuda_graph: bool | None = None
    channels_last: bool | None = None
    bf16: bool = False

    @classmethod
    def chosen(cls, device: str | torch.device, compile_choice: str, config: TrainConfig,
               train_images: int) -> Runtime:
        """The runtime for ``config`` on ``train_images`` images with a compile choice of
        'auto', 'on' or 'off' (see should_compile)."""
        return cls(device=device, compile=should_compile(compile_choice, config, train_images, str(device)))
