"""K copies of one network as one horizontally fused network, and back.

Every convolution becomes a grouped convolution with K times the channels and K times the
groups, every BatchNorm one BatchNorm over K times the channels; ReLU, pooling and dropout
act per channel anyway. The K copies' batches are stacked on the channel axis (copy i owns
channels ``i*C .. (i+1)*C - 1`` of every layer), so the network maps ``B x K x 28 x 28`` to
``B x (K*10)`` logits, and no weight of one copy ever meets the activations of another.

The fused network has the same module tree as ``SpecNet``, and each of its tensors is the K
copies' tensors stacked along dimension 0 (a grouped convolution's weight is
``out x in/groups x k x k`` and its groups are consecutive blocks of output channels), so
fusing and splitting is one rule for every tensor. Scalar buffers (BatchNorm's batch
counter) are the same for every copy and stored once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mnist_search.errors import SpecError
from mnist_search.levers import FUSABLE_LEVER_FIELDS, FUSABLE_LEVER_POST_OPS
from mnist_search.models.analysis import validate
from mnist_search.models.network import ConvBlock, SeededDropout, SpecNet, build, keep_mask
from mnist_search.models.spec import GAP, INPUT_SHAPE, MAX_WIDTH, ArchSpec, Conv, Layer, MaxPool

# The conv fields and post ops the fused builder knows how to widen: the spec's own, and those of
# the levers declared fusable (a norm over groups of channels, or weights shared between layers,
# fuse differently); anything else trains its seeds one after another.
FUSABLE_CONV_FIELDS = (frozenset({"out", "k", "pad", "bias", "post", "dropout", "dilation", "groups"})
                       | FUSABLE_LEVER_FIELDS)
FUSABLE_POST_OPS = frozenset({"relu", "bn"}) | FUSABLE_LEVER_POST_OPS  # both act per channel


class FusedDropout(SeededDropout):
    """Dropout over K stacked copies, each copy's mask drawn from its own generator.

    Eagerly, copy i draws a mask of its own shape and layout from ``generators[i]`` exactly
    as a ``SeededDropout`` of that copy alone would, so each copy sees its solo run's masks.
    Compiled, the trainer sets ``noise`` (the copies' noise stacked on channels) and the
    inherited path applies it.
    """

    def __init__(self, p: float, copies: int) -> None:
        super().__init__(p)
        self.copies = copies
        self.generators: Sequence[torch.Generator | np.random.Generator] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.noise is not None or self.generators is None:
            return super().forward(x)
        # empty_like of a copy's channels takes x's memory layout, as SeededDropout's
        # empty_like(x) does: a mask is filled in memory order, so a copy draws the mask
        # its run alone draws in the same layout.
        masks = [keep_mask(part, self.p, generator)
                 for part, generator in zip(x.chunk(self.copies, dim=1), self.generators, strict=True)]
        return x * torch.cat(masks, dim=1) * (1 / (1 - self.p))


def _fused_conv(layer: Conv, channels: int, copies: int) -> nn.Module:
    unknown = sorted(f.name for f in dataclasses.fields(layer)
                     if f.name not in FUSABLE_CONV_FIELDS and getattr(layer, f.name) != f.default)
    if unknown:
        raise SpecError(f"fused training does not support conv {', '.join(map(repr, unknown))} yet; "
                        "train the seeds one at a time")
    unknown_post = [op for op in layer.post if op not in FUSABLE_POST_OPS]
    if unknown_post:
        raise SpecError(f"fused training does not support the post op(s) {unknown_post} yet; "
                        "train the seeds one at a time")
    block = ConvBlock(dataclasses.replace(layer, out=copies * layer.out, groups=copies * layer.groups),
                      copies * channels)
    if block.dropout is not None:
        block.dropout = FusedDropout(layer.dropout, copies)
    return block


# One entry per layer op: (layer, input channels per copy, copies) -> the fused module.
FUSED_LAYERS: dict[type, Callable[..., nn.Module]] = {
    Conv: _fused_conv,
    MaxPool: lambda layer, channels, copies: nn.MaxPool2d(layer.k),
    GAP: lambda layer, channels, copies: nn.AdaptiveAvgPool2d(1),
}


def _fused_layer(layer: Layer, channels: int, copies: int) -> nn.Module:
    fuse = FUSED_LAYERS.get(type(layer))
    if fuse is None:
        raise SpecError(f"fused training does not support the {layer.op!r} layer yet; train the seeds one at a time")
    return fuse(layer, channels, copies)


class FusedNet(nn.Module):
    """``copies`` networks of one spec side by side; ``forward`` maps B x K x 28 x 28 to B x (K*10)."""

    def __init__(self, spec: ArchSpec, copies: int) -> None:
        super().__init__()
        self.copies = copies
        blocks = []
        channels = INPUT_SHAPE[0]
        for layer in spec.layers:
            blocks.append(_fused_layer(layer, channels, copies))
            channels = getattr(layer, "out", channels)  # pooling keeps the channel count
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)


def copies_per_network(spec: ArchSpec) -> int:
    """How many copies of ``spec`` one fused network may hold: a fused layer is K times as wide,
    and no layer may be wider than any network may be (``MAX_WIDTH``), which also bounds its memory."""
    widest = max([getattr(layer, "out", 1) for layer in spec.layers] + [INPUT_SHAPE[0]])
    return max(1, MAX_WIDTH // widest)


def seed_groups(spec: ArchSpec, seeds: Sequence[int]) -> list[list[int]]:
    """``seeds`` in order, split into as few groups as fit one fused network each (``copies_per_network``)."""
    size = copies_per_network(spec)
    return [list(seeds[start : start + size]) for start in range(0, len(seeds), size)]


@torch.no_grad()
def check_fusable(spec: ArchSpec) -> None:
    """Raise SpecError when fused training does not support a layer of ``spec`` (building a
    one-copy fused network is the check, so it cannot disagree with ``fuse``)."""
    FusedNet(spec, 1)


def fusable(spec: ArchSpec) -> bool:
    try:
        check_fusable(spec)
    except SpecError:
        return False
    return True


def fuse(spec: ArchSpec, models: Sequence[SpecNet]) -> FusedNet:
    """One fused network holding the weights of ``models`` (each built from ``spec``), in order."""
    validate(spec)
    fused = FusedNet(spec, len(models))
    states = [model.state_dict() for model in models]
    _check_layout(fused.state_dict(), states[0], len(models))
    fused.load_state_dict({name: _stack([state[name] for state in states]) for name in states[0]})
    return fused


@torch.no_grad()
def unfuse(spec: ArchSpec, fused: FusedNet) -> list[SpecNet]:
    """The fused network's copies as ``fused.copies`` ordinary networks of ``spec`` (on the CPU)."""
    models = [build(spec) for _ in range(fused.copies)]
    state = {name: value.detach().cpu() for name, value in fused.state_dict().items()}
    _check_layout(state, models[0].state_dict(), fused.copies)
    for index, model in enumerate(models):
        model.load_state_dict({name: value if value.dim() == 0 else value.chunk(fused.copies)[index].clone()
                               for name, value in state.items()})
    return models


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].clone() if tensors[0].dim() == 0 else torch.cat(tensors)


def _check_layout(fused: dict[str, torch.Tensor], single: dict[str, torch.Tensor], copies: int) -> None:
    """The fused network must be the single one's module tree with every tensor K times as long."""
    if fused.keys() != single.keys():
        raise RuntimeError(f"fused and single networks differ in their tensors: {sorted(fused.keys() ^ single.keys())}")
    for name, value in single.items():
        expected = value.shape if value.dim() == 0 else (copies * value.shape[0], *value.shape[1:])
        if fused[name].shape != torch.Size(expected):
            raise RuntimeError(f"fused tensor {name} has shape {tuple(fused[name].shape)}, expected {tuple(expected)}")
