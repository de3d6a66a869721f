"""A trained network as ONNX, with its preprocessing inside the graph, and a static int8 version.

The graph takes what a camera or a browser canvas gives: ``images``, uint8 ``[N, 1, 28, 28]``
(white digit on black, as MNIST) with a dynamic N, and returns ``logits``, float32 ``[N, 10]``;
the scaling to 0-1 and the MEAN/STD normalisation are inside it (folded into the first
convolution where that is exact, else its first nodes), so no deployment can forget them or
apply another dataset's. Nothing is written here: the functions return bytes and
measurements, and the caller writes them (atomically, beside its other outputs).

onnx and onnxruntime are optional dependencies (``pip install 'mnist-search[onnx]'``); they are
imported only when a function here is called.
"""

from __future__ import annotations

import io
import os
import string
import tempfile
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnist_search.errors import UserError, WorkFailed
from mnist_search.models.export import MEAN, STD

INSTALL_HINT = "pip install 'mnist-search[onnx]'"
# ONNX opset 17: what the TorchScript exporter writes best and every onnxruntime since 1.14
# (2023) runs, including onnxruntime-web and onnxruntime-mobile builds.
OPSET = 17
# fp32 logits from onnxruntime and from PyTorch differ by rounding only: about 1e-5 on logits of
# magnitude 10 (measured on the committed networks). A difference above this is a wrong graph.
LOGIT_TOLERANCE = 1e-4
BATCH = 1000  # images per onnxruntime / PyTorch call when checking and measuring: bounded memory


class MissingOnnx(UserError):
    """The optional ONNX packages are not installed."""


def require_onnx():
    """The onnx and onnxruntime modules, or a MissingOnnx that says what to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise MissingOnnx(f"ONNX export and evaluation need the packages onnx and onnxruntime ({exc.name} is not"
                          f" installed): {INSTALL_HINT}") from None
    return onnx, onnxruntime


class WithPreprocessing(nn.Module):
    """``net`` behind the exported module's own preprocessing: uint8 pixels in, logits out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The same operations, in the same order, as the exported module's preprocess.
        return self.net((images.float() / 255.0 - MEAN) / STD)


def to_onnx(net: nn.Module, *, batchnorm: bool = True, normalisation: bool = True, steps: int | None = None
            ) -> bytes:
    """The ONNX model of ``net`` (an eval-mode network over normalised N x 1 x 28 x 28 input)
    with the uint8 preprocessing in front, every BatchNorm folded into a convolution and the
    preprocessing into the first convolution where that is exact (see :func:`fold_batchnorms`
    and :func:`fold_normalisation`), compacted (see :func:`compact`). ``batchnorm``,
    ``normalisation`` and ``steps`` leave some of that out, to measure what it saves."""
    onnx, _ = require_onnx()
    wrapped = WithPreprocessing(net).eval().cpu()
    buffer = io.BytesIO()
    # The TorchScript-based exporter (dynamo=False): it traces these plain convolution stacks
    # exactly, folds each BatchNorm that directly follows a convolution into it (a BatchNorm
    # after a ReLU it leaves as a node: fold_batchnorms moves it into the next convolution),
    # supports opset 17, and needs neither onnxscript nor torch.export's graph capture. It warns
    # that it is deprecated in favour of the dynamo exporter; the warning is about PyTorch's
    # plans, not this model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (torch.zeros(2, 1, 28, 28, dtype=torch.uint8),), buffer, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "N"}, "logits": {0: "N"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    if batchnorm:
        fold_batchnorms(model)
    if normalisation:
        fold_normalisation(model)
    compact(model, steps)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    found = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _consumers(graph) -> dict[str, list]:
    users = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def fold_batchnorms(model) -> int:
    """Fold each BatchNormalization node, and each bias of a convolution that no ReLU follows,
    into the convolution its output reaches, in place, where that is exact; return how many.

    The exporter folds a BatchNorm into the convolution before it; one after a ReLU (``post``
    ``["relu", "bn"]``, as the search samples) it leaves as a node, which int8 keeps in float
    between a dequantisation and a quantisation: for the 5k network's five (with the biases
    then moved), 3.0 kB of its 9.3 kB int8 file and 2.6 kB of the fp32 one. A depthwise
    convolution's bias (its folded BatchNorm) that reaches the pointwise one with nothing
    between is 4 bytes per channel in both files, int32 or float (moved only where the next
    convolution has a bias already, or fewer channels): 0.7 kB of each for the 8k network.

    In inference both are ``y = s x + t`` per channel, and the next convolution of ``y`` is the
    convolution of ``x`` with each input channel's weights scaled by ``s`` and ``t`` times the
    weights added to the bias. That holds wherever the kernel sees only real inputs (no padding:
    a padded zero is not ``s 0 + t``), through a global average pool (linear), and through a max
    pool when every ``s`` is positive (which keeps the order of the values it compares). Any
    other BatchNorm or bias stays.
    """
    graph = model.graph
    folded, stays = 0, set()
    while True:
        node = next((n for n in graph.node if tuple(n.output) not in stays and (
            n.op_type == "BatchNormalization" or (n.op_type == "Conv" and len(n.input) > 2 and n.input[2]))), None)
        if node is None:
            break
        if (_fold_batchnorm if node.op_type == "BatchNormalization" else _fold_bias)(graph, node):
            folded += 1
        else:
            stays.add(tuple(node.output))
    _drop_unused(model)
    return folded


def _fold_batchnorm(graph, norm) -> bool:
    constants = _constants(graph)
    if len(norm.output) != 1 or _attributes(norm).get("training_mode", 0) or len(norm.input) != 5:
        return False
    gamma, beta, mean, var = (constants.get(name) for name in norm.input[1:])
    if any(v is None for v in (gamma, beta, mean, var)):
        return False
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + _attributes(norm).get("epsilon", 1e-5))
    shift = beta.astype(np.float64) - mean.astype(np.float64) * scale
    reader = _fold_affine(graph, norm.output[0], scale, shift)
    if reader is None:
        return False
    reader.input[0] = norm.input[0]
    _remove_nodes(graph, {norm.output[0]})
    return True


def _fold_bias(graph, conv) -> bool:
    initializers, users = {t.name: t for t in graph.initializer}, _consumers(graph)
    if conv.input[2] not in initializers or len(users[conv.input[2]]) != 1:
        return False
    from onnx import numpy_helper

    shift = numpy_helper.to_array(initializers[conv.input[2]]).astype(np.float64)
    if _fold_affine(graph, conv.output[0], np.ones_like(shift), shift, only_if_smaller=True) is None:
        return False
    del conv.input[2:]
    return True


def _fold_affine(graph, tensor: str, scale: np.ndarray, shift: np.ndarray, only_if_smaller: bool = False):
    """Fold ``scale * tensor + shift`` (per channel) into the convolution ``tensor`` reaches
    through global average and max pools, if that is exact (and, ``only_if_smaller``, if it
    does not give that convolution a bias longer than ``shift``); return the node that reads
    ``tensor`` (None if not folded)."""
    from onnx import numpy_helper

    users, initializers = _consumers(graph), {t.name: t for t in graph.initializer}
    chain = []
    while True:
        found = users.get(tensor, [])
        if len(found) != 1 or found[0].input[0] != tensor:
            return None
        chain.append(found[0])
        if found[0].op_type == "GlobalAveragePool" or (found[0].op_type == "MaxPool" and (scale > 0).all()):
            tensor = found[0].output[0]
            continue
        break
    conv = chain[-1]
    attributes = _attributes(conv)
    weight_name = conv.input[1] if conv.op_type == "Conv" else None
    bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
    if (conv.op_type != "Conv" or any(attributes.get("pads", [0]))
            or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
            or weight_name not in initializers or len(users[weight_name]) != 1
            or (bias_name is not None and (bias_name not in initializers or len(users[bias_name]) != 1))):
        return None
    weight = numpy_helper.to_array(initializers[weight_name]).astype(np.float64)
    groups = attributes.get("group", 1)
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    # The input channel each weight reads: output group g reads inputs g*in_per_group + (0..in_per_group-1).
    channel = (np.arange(out_channels) // (out_channels // groups))[:, None] * in_per_group + np.arange(in_per_group)
    if (channel.max() >= len(scale) or groups * in_per_group != len(scale)
            or (only_if_smaller and bias_name is None and out_channels >= len(shift))):
        return None
    bias = (numpy_helper.to_array(initializers[bias_name]).astype(np.float64) if bias_name is not None
            else np.zeros(out_channels))
    bias = bias + (weight.sum(axis=(2, 3)) * shift[channel]).sum(axis=1)
    weight = weight * scale[channel][:, :, None, None]
    initializers[weight_name].CopyFrom(numpy_helper.from_array(weight.astype(np.float32), weight_name))
    if bias_name is None:
        bias_name = weight_name + "_bias"
        graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), bias_name))
        del conv.input[2:]
        conv.input.append(bias_name)
    else:
        initializers[bias_name].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), bias_name))
    return chain[0]


def _remove_nodes(graph, outputs: set[str]) -> None:
    """Drop the nodes whose first output is in ``outputs`` (by name: protobuf gives no stable
    identity to the messages of a repeated field once it is rebuilt)."""
    kept = [node for node in graph.node if not node.output or node.output[0] not in outputs]
    del graph.node[:]
    graph.node.extend(kept)


def fold_normalisation(model) -> bool:
    """Fold the preprocessing ``(float(images) / 255 - MEAN) / STD`` into the first convolution's
    weights and bias, in place, when that is exact; return whether it was folded.

    The convolution of ``(p / a - b) / c`` is the convolution of the pixels ``p`` with the weights
    divided by ``a c``, minus ``b / c`` times each output channel's weight sum, wherever every
    input the kernel sees is a pixel: so only when the first convolution has no padding (a
    padded zero is 0 after normalisation, not pixel 0). Then the graph is ``Cast`` and the
    convolution. It saves the three arithmetic nodes and their constants in the fp32 file, and in
    the int8 one also the quantisation of the input: the uint8 pixels are the first QLinearConv's
    input as they are (scale 1, zero point 0; see :func:`quantize`), about 190 bytes of each.
    onnxruntime and PyTorch still agree within LOGIT_TOLERANCE (``measure`` checks it on every
    test image).
    """
    from onnx import numpy_helper

    graph = model.graph
    constants, users = _constants(graph), _consumers(graph)
    chain, tensor = [], "images"
    for op in ("Cast", "Div", "Sub", "Div", "Conv"):
        found = users.get(tensor, [])
        if len(found) != 1 or found[0].op_type != op or found[0].input[0] != tensor:
            return False
        chain.append(found[0])
        tensor = found[0].output[0]
    cast, scale, shift, divide, conv = chain
    if _attributes(cast).get("to") != 1:  # FLOAT
        return False
    operands = [constants.get(node.input[1]) for node in (scale, shift, divide)]
    if any(value is None or value.size != 1 for value in operands):
        return False
    a, b, c = (float(value.reshape(())) for value in operands)
    attributes = _attributes(conv)
    initializers = {t.name: t for t in graph.initializer}
    weight_name = conv.input[1]
    bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
    if (any(attributes.get("pads", [0])) or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
            or attributes.get("group", 1) != 1 or weight_name not in initializers or len(users[weight_name]) != 1
            or (bias_name is not None and (bias_name not in initializers or len(users[bias_name]) != 1))):
        return False
    weight = numpy_helper.to_array(initializers[weight_name]).astype(np.float64)
    bias = (numpy_helper.to_array(initializers[bias_name]).astype(np.float64) if bias_name is not None
            else np.zeros(weight.shape[0]))
    initializers[weight_name].CopyFrom(numpy_helper.from_array((weight / (a * c)).astype(np.float32), weight_name))
    bias = (bias - (b / c) * weight.sum(axis=(1, 2, 3))).astype(np.float32)
    if bias_name is None:
        bias_name = weight_name + "_bias"
        graph.initializer.append(numpy_helper.from_array(bias, bias_name))
        del conv.input[2:]
        conv.input.append(bias_name)
    else:
        initializers[bias_name].CopyFrom(numpy_helper.from_array(bias, bias_name))
    conv.input[0] = cast.output[0]
    _remove_nodes(graph, {scale.output[0], shift.output[0], divide.output[0]})
    _drop_unused(model)
    return True


def normalisation_folded(model: bytes) -> bool:
    """Whether the fp32 ``model``'s normalisation is folded into its first convolution
    (``images -> Cast -> Conv``) rather than nodes of its own."""
    onnx, _ = require_onnx()
    graph = onnx.load_from_string(model).graph
    users = _consumers(graph)
    casts = users.get("images", [])
    return (len(casts) == 1 and casts[0].op_type == "Cast"
            and [n.op_type for n in users.get(casts[0].output[0], [])] == ["Conv"])


def _strip_annotations(model) -> None:
    for node in model.graph.node:
        node.name, node.doc_string = "", ""
    del model.graph.value_info[:]
    model.doc_string = ""
    del model.metadata_props[:]  # the quantiser's notes to itself ("onnx.quant.pre_process")
    used = {node.domain for node in model.graph.node} | {""}
    kept = [entry for entry in model.opset_import if entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)


# Attribute values that mean the same as leaving the attribute out (the ONNX operator
# definitions' defaults); a list attribute is a default when every element is.
_DEFAULTS = {
    "Conv": {"auto_pad": b"NOTSET", "dilations": 1, "group": 1, "pads": 0, "strides": 1},
    "QLinearConv": {"auto_pad": b"NOTSET", "dilations": 1, "group": 1, "pads": 0, "strides": 1},
    "MaxPool": {"auto_pad": b"NOTSET", "ceil_mode": 0, "dilations": 1, "pads": 0, "storage_order": 0, "strides": 1},
    "Flatten": {"axis": 1},
    "QLinearGlobalAveragePool": {"channels_last": 0},
    # Left only where a BatchNorm cannot be folded (fold_batchnorms).
    "BatchNormalization": {"epsilon": np.float32(1e-5), "momentum": np.float32(0.9), "training_mode": 0},
}
_WEIGHT_INPUT = {"Conv": 1, "QLinearConv": 3}


def _drop_default_attributes(model) -> None:
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        defaults = _DEFAULTS.get(node.op_type, {})
        weight = node.input[_WEIGHT_INPUT[node.op_type]] if node.op_type in _WEIGHT_INPUT else None
        kept = []
        for attribute, value in zip(node.attribute, _attributes(node).values()):
            default = defaults.get(attribute.name)
            if isinstance(default, np.float32):  # a float attribute is stored as float32
                value = np.float32(value)
            if default is not None and (all(v == default for v in value) if isinstance(value, list)
                                        else value == default):
                continue
            # Optional for convolutions: "if not present, should be inferred from input W".
            if attribute.name == "kernel_shape" and weight in dims and dims[weight][2:] == list(value):
                continue
            kept.append(attribute)
        del node.attribute[:]
        node.attribute.extend(kept)


def _short_name(index: int) -> str:
    # A letter, then letters and digits: 52 one-character names, 3,224 of at most two.
    first, rest = string.ascii_letters, string.ascii_letters + string.digits
    name, index = first[index % len(first)], index // len(first)
    while index:
        name, index = name + rest[index % len(rest)], index // len(rest)
    return name


def _short_names(model) -> None:
    """Rename every inner tensor to one or two characters, the most referenced the shortest."""
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    uses = Counter()
    for tensor in graph.initializer:
        uses[tensor.name] += 1
    for node in graph.node:
        uses.update(n for n in [*node.input, *node.output] if n)
    names: dict[str, str] = {}
    fresh = (name for name in map(_short_name, range(len(uses) + len(keep))) if name not in keep)
    for name, _ in uses.most_common():  # a stable sort: ties keep their order in the graph
        if name not in keep:
            names[name] = next(fresh)
    for tensor in graph.initializer:
        tensor.name = names.get(tensor.name, tensor.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]


def _one_weight_zero_point(model) -> None:
    """A QLinearConv's per-channel weight zero points that are all equal (symmetric int8 weights:
    all 0) as one scalar, which the operator accepts with per-channel scales."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "QLinearConv" or node.input[5] not in initializers:
            continue
        values = numpy_helper.to_array(initializers[node.input[5]])
        if values.ndim == 1 and len(values) > 1 and (values == values[0]).all():
            name = node.input[5] + "_scalar"
            if name not in initializers:
                initializers[name] = numpy_helper.from_array(values[:1].reshape(()), name)
                graph.initializer.append(initializers[name])
            node.input[5] = name


def _dedupe_initializers(model) -> None:
    """Store constants of the same type, shape and values once."""
    from onnx import numpy_helper

    graph = model.graph
    inputs = {v.name for v in graph.input}
    first: dict[tuple, str] = {}
    same: dict[str, str] = {}
    for tensor in graph.initializer:
        if tensor.name in inputs:
            continue
        key = (tensor.data_type, tuple(tensor.dims), numpy_helper.to_array(tensor).tobytes())
        if key in first:
            same[tensor.name] = first[key]
        else:
            first[key] = tensor.name
    for node in graph.node:
        node.input[:] = [same.get(n, n) for n in node.input]


def _drop_unused(model) -> None:
    """Drop initializers and Constant nodes that nothing reads."""
    graph = model.graph
    read = {n for node in graph.node for n in node.input} | {v.name for v in graph.output}
    kept_nodes = [node for node in graph.node if node.op_type != "Constant" or set(node.output) & read]
    read = {n for node in kept_nodes for n in node.input} | {v.name for v in graph.output}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _constants_once(model) -> None:
    _one_weight_zero_point(model)
    _dedupe_initializers(model)
    _drop_unused(model)


def compact(model, steps: int | None = None) -> None:
    """Make ``model`` as small as it can be without changing what it computes, in place (the
    first ``steps`` of COMPACTION only, for measuring them): no node names, doc strings,
    intermediate shape annotations (onnxruntime infers them), metadata or opset imports that no
    node uses; each constant stored once (per-channel weight zero points that are all 0 as one
    scalar, so a shared convolution's per-channel int8 weights are also stored once) and unused
    ones dropped; no attribute that states the operator's default (strides and dilations of 1,
    no padding, group 1, the kernel shape the weights give); tensor names of one or two
    characters, the most used the shortest.

    For networks of a few thousand parameters everything around the weights is a large share of
    the file, and more so of the int8 one, whose weights are a quarter of the size. Both files
    are compacted alike, so their sizes compare fairly; what each step saves is beside COMPACTION.
    """
    for _, step in COMPACTION[:steps]:
        step(model)


# compact's steps, in order: (what, function). Measured on the committed 8k network
# (``bench/deploy.py --bytes``), the bytes left after each, fp32 / int8 per-tensor / int8
# per-channel, without the folds of to_onnx (which then leave 29,057 / 9,586 / 11,000 with
# fold_batchnorms and 28,874 / 9,396 / 10,810 with fold_normalisation too):
COMPACTION = (
    # as the exporter and the quantiser write them: 34,071 / 22,397 / 24,184
    ("no node names, doc strings, inner shapes, metadata, unused opsets", _strip_annotations),  # 33,455 / 19,864 / 21,651
    ("constants stored once, unused ones dropped", _constants_once),  # 33,455 / 19,069 / 20,583
    ("no attributes at the operator's default", _drop_default_attributes),  # 32,226 / 17,825 / 19,339
    # the exporter's names ("/net/blocks/blocks.3/conv/Conv_output_0") and the quantiser's
    # (the same + "_quantized_scale") were over a third of the int8 file:
    ("one- or two-character tensor names", _short_names),  # 29,771 / 10,308 / 11,722
)


def session(model: bytes):
    """An onnxruntime CPU session for ``model``, one thread (as the project's CPU workers run)."""
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the quantiser's graphs draw harmless warnings
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _uint8_batch(images) -> np.ndarray:
    array = np.asarray(images.numpy() if isinstance(images, torch.Tensor) else images)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-2:] != (28, 28):
        raise ValueError(f"expected uint8 images shaped Nx28x28 or Nx1x28x28, got {array.dtype} {array.shape}")
    return array.reshape(len(array), 1, 28, 28)


def onnx_logits(model_or_session, images) -> np.ndarray:
    """onnxruntime's logits for uint8 ``images`` (N x 28 x 28 or N x 1 x 28 x 28), BATCH at a time."""
    run = model_or_session if hasattr(model_or_session, "run") else session(model_or_session)
    array = _uint8_batch(images)
    parts = [run.run(["logits"], {"images": array[i : i + BATCH]})[0] for i in range(0, len(array), BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 10), dtype=np.float32)


def torch_logits(net: nn.Module, images) -> np.ndarray:
    """PyTorch's logits for uint8 ``images`` through the same preprocessing, on the CPU, BATCH at a time."""
    wrapped = WithPreprocessing(net).eval().cpu()
    array = torch.from_numpy(_uint8_batch(images))
    with torch.no_grad():
        parts = [wrapped(array[i : i + BATCH]).numpy() for i in range(0, len(array), BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 10), dtype=np.float32)


@dataclass(frozen=True)
class Agreement:
    """How an ONNX model's logits compare with PyTorch's on the same images."""

    images: int
    same_argmax: int
    max_logit_difference: float
    near_ties: int  # images whose top two PyTorch logits are within LOGIT_TOLERANCE: either class is right

    def to_dict(self) -> dict:
        return {"images": self.images, "same_argmax": self.same_argmax,
                "max_logit_difference": self.max_logit_difference, "near_ties": self.near_ties,
                "tolerance": LOGIT_TOLERANCE}


def compare(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    top2 = np.sort(reference, axis=1)[:, -2:] if len(reference) else np.zeros((0, 2))
    return Agreement(images=len(reference), same_argmax=int((reference.argmax(1) == candidate.argmax(1)).sum()),
                     max_logit_difference=float(np.abs(reference - candidate).max()) if len(reference) else 0.0,
                     near_ties=int((top2[:, 1] - top2[:, 0] <= LOGIT_TOLERANCE).sum()))


def check_agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Compare fp32 ONNX logits with PyTorch's; raise WorkFailed unless every logit is within
    LOGIT_TOLERANCE and every argmax agrees (an image whose top two logits tie within the
    tolerance may fall either way)."""
    found = compare(reference, candidate)
    if found.max_logit_difference > LOGIT_TOLERANCE or found.images - found.same_argmax > found.near_ties:
        raise WorkFailed(f"the ONNX model disagrees with the PyTorch network: logits differ by up to"
                         f" {found.max_logit_difference:.3g} (tolerance {LOGIT_TOLERANCE:g}), argmax agrees on"
                         f" {found.same_argmax:,} of {found.images:,} images; nothing was written")
    return found


def accuracy(logits: np.ndarray, labels) -> float:
    """Percent of ``labels`` the logits' argmax gets right."""
    labels = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
    # Rounded to 1e-6: a count over a few thousand images, without float noise (99.53999999999999) in the card.
    return round(100.0 * float((logits.argmax(1) == labels).mean()), 6) if len(labels) else float("nan")


def quantize(model: bytes, calibration_images, per_channel: bool, quant_format: str = "QOperator",
             steps: int | None = None) -> bytes:
    """``model`` statically quantised to int8, its activation ranges calibrated (min/max) on
    ``calibration_images`` (uint8, N x 28 x 28), compacted like the fp32 model (the first
    ``steps`` of COMPACTION only, for measuring them).

    QOperator format (QLinearConv, each ReLU fused into the convolution before it) rather than
    QDQ (a quantise/dequantise pair around every tensor, ``quant_format="QDQ"``, which the bench
    measures): compacted and folded alike, the 8k network's QDQ file was 11,093 bytes against
    QOperator's 9,396 per-tensor and 14,493 against 10,810 per-channel (``bench/deploy.py
    --bytes``); onnxruntime's CPU provider runs both.
    Weights are signed int8 (symmetric, zero point 0) and activations unsigned, onnxruntime's
    default for CPUs; biases are int32, as QLinearConv requires. Where the normalisation was
    folded into the first convolution (:func:`fold_normalisation`), that convolution's float
    input is the pixels 0-255: its range is set to exactly that (scale 1, zero point 0), which
    makes its quantisation the identity, and the uint8 ``images`` are the QLinearConv's input
    as they are. Otherwise the preprocessing nodes stay float (Cast, Div, Sub, Div) and a
    QuantizeLinear follows them.
    """
    onnx, _ = require_onnx()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    array = _uint8_batch(calibration_images)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": array[i : i + 100]} for i in range(0, len(array), 100)])

        def get_next(self):
            return next(self.batches, None)

    overrides = {}
    graph = onnx.load_from_string(model).graph
    cast = [node for node in graph.node if node.op_type == "Cast" and list(node.input) == ["images"]]
    if len(cast) == 1 and [n.op_type for n in _consumers(graph)[cast[0].output[0]]] == ["Conv"]:
        overrides[cast[0].output[0]] = [{"rmin": np.array(0.0, dtype=np.float32),
                                         "rmax": np.array(255.0, dtype=np.float32)}]
    # The quantiser reads and writes files only; a private directory holds them for the moment it runs.
    with tempfile.TemporaryDirectory(prefix="mnist-search-int8-") as work:
        source, prepared, target = (os.path.join(work, name) for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        with open(source, "wb") as f:
            f.write(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # onnxruntime's recommended preparation: shapes inferred, constants made initializers
            # (the quantiser finds a conv's bias only as an initializer).
            quant_pre_process(source, prepared)
            quantize_static(prepared, target, Reader(), quant_format=getattr(QuantFormat, quant_format),
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"TensorQuantOverrides": overrides} if overrides else {})
        quantized = onnx.load(target)
    _take_uint8_input(quantized)
    compact(quantized, steps)
    onnx.checker.check_model(quantized)
    return quantized.SerializeToString()


def _take_uint8_input(model) -> bool:
    """Replace ``images -> Cast -> QuantizeLinear(scale 1, zero point 0, uint8)`` by ``images``
    itself, in place (the identity on uint8 values); return whether it did."""
    from onnx import TensorProto

    graph = model.graph
    constants, users = _constants(graph), _consumers(graph)
    casts = users.get("images", [])
    if len(casts) != 1 or casts[0].op_type != "Cast":
        return False
    following = users.get(casts[0].output[0], [])
    quantise = following[0] if len(following) == 1 else None
    if quantise is None or quantise.op_type != "QuantizeLinear" or len(quantise.input) < 3:
        return False
    scale, zero = constants.get(quantise.input[1]), constants.get(quantise.input[2])
    if (scale is None or zero is None or scale.size != 1 or zero.size != 1 or float(scale.reshape(())) != 1.0
            or zero.dtype != np.uint8 or int(zero.reshape(())) != 0
            or graph.input[0].type.tensor_type.elem_type != TensorProto.UINT8):
        return False
    for node in graph.node:
        node.input[:] = ["images" if n == quantise.output[0] else n for n in node.input]
    _remove_nodes(graph, {casts[0].output[0], quantise.output[0]})
    _drop_unused(model)
    return True


def evaluate_file(path: str | os.PathLike, images, labels) -> float:
    """Test accuracy of the ONNX model at ``path`` on uint8 ``images``, as deployed: onnxruntime, CPU."""
    _, onnxruntime = require_onnx()
    with open(path, "rb") as f:
        model = f.read()
    try:
        run = session(model)
    except Exception as exc:  # onnxruntime raises its own types for unreadable or foreign models
        raise UserError(f"onnxruntime cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                        ) from None
    inputs = [(i.name, i.type) for i in run.get_inputs()]
    if inputs != [("images", "tensor(uint8)")]:
        raise UserError(f"{path} takes {inputs}, not uint8 'images': it is not an ONNX model exported by mnist-search")
    return accuracy(onnx_logits(run, images), labels)
