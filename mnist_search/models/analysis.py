"""Analytic facts about a spec, computed without building it: parameters, shapes, receptive field.

The search relies on :func:`count_params` to enforce the parameter budget before any
network is built, so it must equal ``sum(p.numel() for p in build(spec).parameters())``
for every valid spec (a property-based test pins this). A conv that shares an earlier
conv's weights adds only its own norm's parameters: the shared weights count once.

``analyse`` also bounds what a spec costs to run (activations per image, parameters), so a
spec read from a file cannot exhaust memory before the first batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from mnist_search.errors import SpecError
from mnist_search.models.spec import GAP, INPUT_SHAPE, NUM_CLASSES, ArchSpec, Conv, Layer, MaxPool

# Floats one image's forward pass holds (every layer's output): ~8 MB, a batch of 256 ~2 GB
# before the backward pass. The project's networks hold under 50,000.
MAX_ACTIVATIONS = 2_000_000
MAX_PARAMS = 5_000_000


@dataclass(frozen=True)
class LayerInfo:
    index: int
    description: str
    out_shape: tuple[int, int, int]  # channels, height, width
    params: int
    receptive_field: int  # side of the input square one output unit sees
    jump: int  # input pixels between neighbouring output units
    macs: int = 0  # multiply-accumulates of this layer's forward pass for one image


@dataclass(frozen=True)
class Analysis:
    layers: tuple[LayerInfo, ...]

    @property
    def params(self) -> int:
        return sum(info.params for info in self.layers)

    @property
    def receptive_field(self) -> int:
        return self.layers[-1].receptive_field

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.layers[-1].out_shape

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one image's forward pass (convolutions; a shared conv counts
        once per application, as it runs once per application)."""
        return sum(info.macs for info in self.layers)

    @property
    def training_flops(self) -> int:
        """FLOPs of one image's training step: 2 per MAC forward, twice that backward (the
        gradients of the input and of the weights), the usual 3x-forward count."""
        return 6 * self.macs

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "receptive_field": self.receptive_field,
            "macs": self.macs,
            "out_shape": list(self.out_shape),
            "layers": [
                {
                    "index": info.index,
                    "layer": info.description,
                    "out_shape": list(info.out_shape),
                    "params": info.params,
                    "receptive_field": info.receptive_field,
                }
                for info in self.layers
            ],
        }


def conv_params(layer: Conv, in_channels: int) -> int:
    """Parameters this layer adds: its weights and bias unless it shares them, plus its norm's
    scale and shift (BatchNorm, InstanceNorm and GroupNorm all have two per channel)."""
    weights = 0 if layer.share is not None else layer.out * (in_channels // layer.groups) * layer.k * layer.k
    bias = layer.out if layer.bias and layer.share is None else 0
    norm = 2 * layer.out if layer.norm else 0
    return weights + bias + norm


def count_params(spec: ArchSpec) -> int:
    """Trainable parameters of ``build(spec)``, from the channel flow alone."""
    channels, total = INPUT_SHAPE[0], 0
    for layer in spec.layers:
        if isinstance(layer, Conv):
            total += conv_params(layer, channels)
            channels = layer.out
    return total


def flops_per_image(spec: ArchSpec) -> int:
    """Floating-point operations of one image's forward pass through the convolutions: two per
    multiply-add (the usual convention). Norms, ReLUs and pooling add under a few percent at
    these sizes and are left out. A shared conv is counted each time it runs."""
    return 2 * analyse(spec).macs


def is_separable(spec: ArchSpec) -> bool:
    """Whether the network has a depthwise convolution (one filter per input channel), the first
    half of a depthwise-separable pair: a different cost on the CPU than full convolutions."""
    channels = INPUT_SHAPE[0]
    for layer in spec.layers:
        if isinstance(layer, Conv):
            if layer.groups > 1 and layer.groups == channels:
                return True
            channels = layer.out
    return False


def analyse(spec: ArchSpec) -> Analysis:
    """Per-layer output shape, parameters and receptive field; raises SpecError for impossible nets."""
    channels, size = INPUT_SHAPE[0], INPUT_SHAPE[1]
    rf, jump = 1, 1
    activations = params_so_far = 0
    in_channels: dict[int, int] = {}  # input channels of each conv, for the layers sharing its weights
    infos: list[LayerInfo] = []
    for index, layer in enumerate(spec.layers):
        where = f"layer {index} ({_describe(layer)})"
        params = macs = 0
        if isinstance(layer, Conv):
            if channels % layer.groups:
                raise SpecError(
                    f"{where}: input channels ({channels}) must be a multiple of groups ({layer.groups})"
                )
            if layer.share is not None:
                _check_same_weights(where, layer, channels, spec.layers[layer.share], in_channels[layer.share])
            in_channels[index] = channels
            span = layer.dilation * (layer.k - 1) + 1
            if span > size + 2 * layer.pad:
                raise SpecError(
                    f"{where}: kernel spans {span} pixels but the padded feature map is only "
                    f"{size + 2 * layer.pad}; use a smaller kernel, more padding or fewer poolings before it"
                )
            params = conv_params(layer, channels)
            size = size + 2 * layer.pad - span + 1
            macs = layer.out * size * size * (channels // layer.groups) * layer.k * layer.k
            if size == 1 and (layer.norm == "in" or (layer.norm == "gn" and layer.norm_groups == layer.out)):
                raise SpecError(
                    f"{where}: a per-sample norm over a single value per group outputs a constant; "
                    f"use bn on a 1x1 map, or fewer norm_groups"
                )
            rf += (span - 1) * jump
            channels = layer.out
        elif isinstance(layer, MaxPool):
            if size < layer.k:
                raise SpecError(f"{where}: the {size}x{size} feature map is smaller than the pooling window")
            rf += (layer.k - 1) * jump
            jump *= layer.k
            size //= layer.k
        elif isinstance(layer, GAP):
            rf += (size - 1) * jump
            size = 1
        activations += channels * size * size
        params_so_far += params
        if activations > MAX_ACTIVATIONS:
            raise SpecError(f"{where}: the network holds over {MAX_ACTIVATIONS:,} activations per image; "
                            f"use fewer or narrower layers, or pool earlier")
        if params_so_far > MAX_PARAMS:
            raise SpecError(f"{where}: the network has over {MAX_PARAMS:,} parameters; use fewer or narrower layers")
        infos.append(LayerInfo(index, _describe(layer), (channels, size, size), params, rf, jump, macs))
    if (channels, size) != (NUM_CLASSES, 1):
        raise SpecError(
            f"the network ends in {channels}x{size}x{size} but must end in {NUM_CLASSES}x1x1 "
            f"(one logit per digit): end with a conv of {NUM_CLASSES} outputs and a gap layer"
        )
    return Analysis(tuple(infos))


def _check_same_weights(where: str, layer: Conv, channels: int, owner: Layer, owner_channels: int) -> None:
    assert isinstance(owner, Conv)  # ArchSpec refuses a share of anything else
    mine = (channels, layer.out, layer.k, layer.groups, layer.bias)
    theirs = (owner_channels, owner.out, owner.k, owner.groups, owner.bias)
    if mine != theirs:
        def shape(s: tuple) -> str:
            return f"{s[0]}->{s[1]} k{s[2]} groups {s[3]}{' +bias' if s[4] else ''}"

        raise SpecError(f"{where}: shares the weights of layer {layer.share} but its conv is {shape(mine)}, "
                        f"layer {layer.share}'s is {shape(theirs)}; shared weights need the same shape")


def validate(spec: ArchSpec) -> None:
    """Raise SpecError unless ``spec`` describes a buildable 10-way classifier."""
    analyse(spec)


def _describe(layer: Layer) -> str:
    if isinstance(layer, Conv):
        text = f"conv{layer.k}x{layer.k}->{layer.out}"
        if layer.pad:
            text += f" pad{layer.pad}"
        if layer.dilation > 1:
            text += f" dil{layer.dilation}"
        if layer.groups > 1:
            text += f" g{layer.groups}"
        if layer.bias:
            text += " +bias"
        if layer.share is not None:
            text += f" shares{layer.share}"
        if layer.post:
            text += " " + "-".join(f"gn{layer.norm_groups}" if op == "gn" else op for op in layer.post)
        if layer.dropout:
            text += f" drop{layer.dropout:g}"
        return text
    if isinstance(layer, MaxPool):
        return f"maxpool{layer.k}"
    return "gap"
