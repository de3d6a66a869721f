"""Build an ``nn.Module`` from an ArchSpec: one loop over the flat layer list."""

from __future__ import annotations

import torch
from torch import nn

from mnist_search.models.analysis import validate
from mnist_search.models.spec import INPUT_SHAPE, ArchSpec, Conv, MaxPool


class SeededDropout(nn.Dropout):
    """``nn.Dropout`` that draws its masks from ``generator`` when the trainer sets one.

    nn.Dropout draws from the process-wide default generator, which every thread shares: a
    CUDA graph captured in one thread fails on another thread's draws from it (seen on the
    H100 with `run --jobs 8`), and seeded runs would depend on what other threads drew.

    torch.compile cannot trace a draw from a generator object: the graph broke at every
    block, and compiled CPU training with dropout ran slower than eager (bench/cpu_epoch.py).
    So for compiled training the trainer draws each step's uniform ``noise`` (this layer's
    input shape) from the run's generator outside the graph, and the layer keeps the
    elements whose noise is at least ``p``: the same Bernoulli(1 - p) mask, traced as plain
    tensor ops.
    """

    generator: torch.Generator | None = None
    noise: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        if self.noise is not None:
            return x * (self.noise >= self.p) * (1 / (1 - self.p))
        if self.generator is None:
            return super().forward(x)
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep * (1 / (1 - self.p))


class ConvBlock(nn.Module):
    """Conv, then BatchNorm/ReLU in the spec's order, then dropout."""

    def __init__(self, layer: Conv, in_channels: int) -> None:
        super().__init__()
        self.order = layer.post
        self.conv = nn.Conv2d(
            in_channels,
            layer.out,
            layer.k,
            padding=layer.pad,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.bias,
        )
        self.bn = nn.BatchNorm2d(layer.out) if "bn" in layer.post else None
        self.dropout = SeededDropout(layer.dropout) if layer.dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        for op in self.order:
            x = self.bn(x) if op == "bn" else torch.relu(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return x


class SpecNet(nn.Module):
    """The network a spec describes; ``forward`` returns N x 10 logits."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = INPUT_SHAPE[0]
        for layer in spec.layers:
            if isinstance(layer, Conv):
                blocks.append(ConvBlock(layer, channels))
                channels = layer.out
            elif isinstance(layer, MaxPool):
                blocks.append(nn.MaxPool2d(layer.k))
            else:
                blocks.append(nn.AdaptiveAvgPool2d(1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)


def build(spec: ArchSpec) -> SpecNet:
    """Validate ``spec`` and return a freshly initialised network."""
    validate(spec)
    return SpecNet(spec)
