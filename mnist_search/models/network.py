"""Build an ``nn.Module`` from an ArchSpec: one loop over the flat layer list."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_search.models.analysis import validate
from mnist_search.models.spec import INPUT_SHAPE, ArchSpec, Conv, MaxPool


class SeededDropout(nn.Dropout):
    """``nn.Dropout`` that draws its masks from ``generator`` when the trainer sets one.

    nn.Dropout draws from the process-wide default generator, which every thread shares: a
    CUDA graph captured in one thread fails on another thread's draws from it (seen on the
    H100 with `run --jobs 8`), and seeded runs would depend on what other threads drew.

    On the CPU the generator is a NumPy one (``numpy.random.Generator``): PyTorch's CPU
    generator (Mersenne Twister, one thread) made dropout's masks a quarter of a 2k network's
    training step, and NumPy's SFC64 draws them about 4x faster (bench/roofline.py,
    BENCHMARKS.md). Its masks are 16-bit tickets: an element is kept when its ticket is at
    least ``round(p * 65536)`` of 65,536, so the keep probability is p to within 1/131072.

    torch.compile cannot trace a draw from a generator object: the graph broke at every
    block, and compiled CPU training with dropout ran slower than eager (bench/cpu_epoch.py).
    So for compiled training the trainer draws each step's ``noise`` (this layer's input
    shape: uniform floats, or tickets from a NumPy generator) outside the graph, and the layer
    keeps the elements whose noise reaches the threshold: the same Bernoulli(1 - p) mask,
    traced as plain tensor ops.
    """

    generator: torch.Generator | np.random.Generator | None = None
    noise: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        if self.noise is not None:
            return x * (self.noise >= keep_threshold(self.p, self.noise.dtype)) * (1 / (1 - self.p))
        if self.generator is None:
            return super().forward(x)
        return x * keep_mask(x, self.p, self.generator) * (1 / (1 - self.p))


TICKET_DTYPE = torch.int16
TICKETS = 65536


def keep_threshold(p: float, dtype: torch.dtype) -> float | int:
    """The noise value from which an element is kept: p for uniform floats, else a ticket."""
    return p if dtype.is_floating_point else round(p * TICKETS) - TICKETS // 2


def draw_noise(shape: Sequence[int], generator: torch.Generator | np.random.Generator,
               device: torch.device | str, tickets: bool = True) -> torch.Tensor:
    """Dropout noise of ``shape`` (contiguous) from ``generator``: 16-bit tickets from a NumPy
    generator (uniform floats with ``tickets=False``: what a compiled graph compares, keeping its
    kernels those of float noise), uniform floats from a torch one."""
    if isinstance(generator, np.random.Generator):
        count = math.prod(shape)
        if not tickets:
            return torch.from_numpy(generator.random(count, dtype=np.float32)).view(*shape)
        drawn = generator.integers(-(TICKETS // 2), TICKETS // 2, size=count, dtype=np.int16)
        return torch.from_numpy(drawn).view(*shape)
    return torch.rand(tuple(shape), device=device, generator=generator)


def keep_mask(x: torch.Tensor, p: float, generator: torch.Generator | np.random.Generator) -> torch.Tensor:
    """A Bernoulli(1 - p) keep mask like ``x``, filled in the memory order ``empty_like(x)``
    has (so a copy of a fused network, a slice of its channels, draws the masks that copy
    alone draws in the same layout)."""
    if isinstance(generator, np.random.Generator):
        strides = torch.empty_like(x, dtype=TICKET_DTYPE).stride()  # dense, in x's memory format
        noise = draw_noise((x.numel(),), generator, x.device).as_strided(x.shape, strides)
        return noise >= keep_threshold(p, noise.dtype)
    return torch.empty_like(x).bernoulli_(1 - p, generator=generator)


class ConvBlock(nn.Module):
    """Conv, then its norm and ReLU in the spec's order, then dropout.

    BatchNorm is the submodule ``bn`` (the name saved weights have always used), InstanceNorm
    and GroupNorm the submodule ``norm``. A block that shares an earlier block's conv (the
    ``shared`` argument) has no ``conv`` submodule of its own: it holds that conv in a tuple,
    which nn.Module does not register, so the shared weights appear once in ``parameters()``
    and ``state_dict()`` (under the owner's name) while ``deepcopy`` and ``.to()`` still
    keep both blocks on the same tensors.
    """

    def __init__(self, layer: Conv, in_channels: int, shared: nn.Conv2d | None = None) -> None:
        super().__init__()
        self.order = layer.post
        if shared is None:
            self.conv = nn.Conv2d(
                in_channels,
                layer.out,
                layer.k,
                padding=layer.pad,
                dilation=layer.dilation,
                groups=layer.groups,
                bias=layer.bias,
            )
            self.shared: tuple[nn.Conv2d, ...] = ()
        else:
            self.conv = None
            self.shared = (shared,)
        self.padding, self.dilation = layer.pad, layer.dilation  # may differ from the shared conv's
        self.bn = nn.BatchNorm2d(layer.out) if layer.norm == "bn" else None
        self.norm = _per_sample_norm(layer)
        self.dropout = SeededDropout(layer.dropout) if layer.dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        else:
            shared = self.shared[0]
            x = F.conv2d(x, shared.weight, shared.bias, padding=self.padding, dilation=self.dilation,
                         groups=shared.groups)
        for op in self.order:
            if op == "relu":
                x = torch.relu(x)
            else:
                x = self.bn(x) if op == "bn" else self.norm(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return x


def _per_sample_norm(layer: Conv) -> nn.Module | None:
    """InstanceNorm or GroupNorm, both with a learned scale and shift per channel and no
    running statistics: training and evaluation normalise each image by its own statistics."""
    if layer.norm == "in":
        return nn.InstanceNorm2d(layer.out, affine=True)
    if layer.norm == "gn":
        return nn.GroupNorm(layer.norm_groups, layer.out)
    return None


class SpecNet(nn.Module):
    """The network a spec describes; ``forward`` returns N x 10 logits."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = INPUT_SHAPE[0]
        for layer in spec.layers:
            if isinstance(layer, Conv):
                shared = blocks[layer.share].conv if layer.share is not None else None
                blocks.append(ConvBlock(layer, channels, shared))
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
