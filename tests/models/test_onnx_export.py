"""The ONNX and int8 models' structure and size: the normalisation folded where that is exact,
nothing in the files but what onnxruntime needs, and an int8 file within a bound computed from
the fp32 one. onnxruntime really runs; the networks are built here with random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_search.models import GAP, ArchSpec, Conv, MaxPool, build
from mnist_search.models import onnx_export as ox
from mnist_search.search.deploying import SELECTION_MARGIN, Int8Candidate, choose_int8
from tests.conftest import synthetic_digits

onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install 'mnist-search[onnx]'")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'mnist-search[onnx]'")
from onnx import numpy_helper  # noqa: E402

# A depthwise-separable network as the search emits them (the committed 8k network's shape, narrower).
SEPARABLE = ArchSpec((
    Conv(8, post=("bn", "relu")),
    Conv(8, k=3, groups=8, post=("bn",)), Conv(12, k=1, post=("bn", "relu")),
    MaxPool(2),
    Conv(12, k=3, groups=12, post=("bn",)), Conv(16, k=1, post=("bn", "relu")),
    Conv(16, k=3, groups=16, post=("bn",)), Conv(16, k=1, post=("bn", "relu")),
    GAP(), Conv(10, k=1, post=()),
))


def network(spec: ArchSpec, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build(spec)
    for module in net.modules():  # non-trivial BatchNorm statistics, as a trained network has
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def digits(n: int, seed: int) -> np.ndarray:
    return synthetic_digits(n, seed)[0]


def conv_tensors(model) -> tuple[int, int, int]:
    """Weights, biases and Conv nodes of an fp32 model."""
    inits = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    weights = sum(int(np.prod(inits[n.input[1]].dims)) for n in convs)
    biases = sum(int(np.prod(inits[n.input[2]].dims)) for n in convs if len(n.input) > 2)
    return weights, biases, len(convs)


def test_the_normalisation_is_folded_into_an_unpadded_first_convolution_exactly():
    net = network(SEPARABLE)
    fp32 = ox.to_onnx(net)
    ops = [n.op_type for n in onnx.load_from_string(fp32).graph.node]
    assert ops[:2] == ["Cast", "Conv"] and "Div" not in ops and "Sub" not in ops
    assert ox.normalisation_folded(fp32)
    # Each depthwise convolution's bias (nothing between it and the pointwise one) moved into the next.
    convs = [n for n in onnx.load_from_string(fp32).graph.node if n.op_type == "Conv"]
    assert [len(n.input) for n in convs] == [3, 2, 3, 2, 3, 2, 3, 2]  # the head has no bias of its own
    images = digits(300, 1)
    ox.check_agreement(ox.torch_logits(net, images), ox.onnx_logits(fp32, images))
    unfolded = ox.to_onnx(net, normalisation=False)
    ops = [n.op_type for n in onnx.load_from_string(unfolded).graph.node if n.op_type != "Constant"]
    assert ops[:5] == ["Cast", "Div", "Sub", "Div", "Conv"]
    assert len(fp32) < len(unfolded)


@pytest.mark.parametrize("first", [Conv(8, pad=1, post=("bn", "relu")), Conv(8, post=("relu",)), Conv(8, post=())],
                         ids=["padded: not folded", "no bias", "no bias, no ReLU"])
def test_a_first_convolution_with_padding_or_without_bias_still_agrees_with_pytorch(first):
    spec = ArchSpec((first, Conv(12, k=3, post=("bn", "relu")), MaxPool(2), GAP(), Conv(10, k=1, post=())))
    net = network(spec)
    fp32 = ox.to_onnx(net)
    assert ox.normalisation_folded(fp32) == (first.pad == 0)
    images = digits(200, 2)
    ox.check_agreement(ox.torch_logits(net, images), ox.onnx_logits(fp32, images))
    int8 = ox.quantize(fp32, digits(200, 3), per_channel=False)
    first_node = onnx.load_from_string(int8).graph.node[0]
    # Folded: the uint8 images are the first QLinearConv's input as they are (no Cast, no QuantizeLinear).
    assert (first_node.op_type == "QLinearConv" and first_node.input[0] == "images") == (first.pad == 0)
    agree = (ox.onnx_logits(int8, images).argmax(1) == ox.onnx_logits(fp32, images).argmax(1)).mean()
    assert agree >= 0.95


def test_a_batchnorm_after_a_relu_is_folded_into_the_next_convolution_where_that_is_exact():
    # ReLU then BatchNorm (the search's "order"), reaching: a depthwise conv, a max pool then a
    # conv, a global average pool then the head; and one reaching a padded conv, which must stay.
    spec = ArchSpec((
        Conv(8, post=("relu", "bn")), Conv(8, k=3, groups=8, post=("bn",)), Conv(12, k=1, post=("relu", "bn")),
        MaxPool(2), Conv(12, k=3, post=("relu", "bn")), Conv(12, k=3, pad=1, post=("relu", "bn")),
        GAP(), Conv(10, k=1, post=()),
    ))
    net = network(spec)
    images = digits(300, 1)
    reference = ox.torch_logits(net, images)
    kept = ox.to_onnx(net, batchnorm=False)
    assert [n.op_type for n in onnx.load_from_string(kept).graph.node].count("BatchNormalization") == 4
    fp32 = ox.to_onnx(net)
    assert [n.op_type for n in onnx.load_from_string(fp32).graph.node].count("BatchNormalization") == 1
    ox.check_agreement(reference, ox.onnx_logits(fp32, images))
    assert len(fp32) < len(kept)
    # A negative BatchNorm scale does not pass a max pool (it would turn its maximum into a minimum).
    net.blocks[2].bn.weight.data[0] = -1.0
    fp32 = ox.to_onnx(net)
    assert [n.op_type for n in onnx.load_from_string(fp32).graph.node].count("BatchNormalization") == 2
    ox.check_agreement(ox.torch_logits(net, images), ox.onnx_logits(fp32, images))
    int8 = onnx.load_from_string(ox.quantize(fp32, digits(200, 3), per_channel=False))
    assert {n.op_type for n in int8.graph.node} >= {"QLinearConv", "BatchNormalization"}


def test_both_files_hold_nothing_onnxruntime_does_not_need():
    net = network(SEPARABLE)
    fp32 = ox.to_onnx(net)
    for model in (onnx.load_from_string(fp32), onnx.load_from_string(ox.quantize(fp32, digits(200, 3), True))):
        graph = model.graph
        assert not graph.value_info and not model.metadata_props and not model.doc_string
        assert {o.domain for o in model.opset_import} <= {"", "com.microsoft"}
        assert {o.domain for o in model.opset_import} == {n.domain for n in graph.node} | {""}
        inner = {t.name for t in graph.initializer} | {x for n in graph.node for x in [*n.input, *n.output]}
        assert all(len(name) <= 2 for name in inner - {"images", "logits"})
        read = {x for n in graph.node for x in n.input}
        assert all(t.name in read for t in graph.initializer)  # none unused
        values = [(t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes()) for t in graph.initializer]
        assert len(values) == len(set(values))  # none stored twice
        for node in graph.node:
            assert not node.name and not node.doc_string
            if node.op_type in ("Conv", "QLinearConv"):  # every attribute here is a default or given by the weights
                assert [a.name for a in node.attribute] in ([], ["group"]), node
    # What is left out changes nothing onnxruntime computes.
    images = digits(100, 4)
    np.testing.assert_array_equal(ox.onnx_logits(ox.to_onnx(net, steps=0), images), ox.onnx_logits(fp32, images))


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_the_int8_file_is_within_a_bound_computed_from_the_fp32_one(per_channel):
    """An int8 file is its int8 weights, int32 biases and, per layer, one QLinearConv node with
    its scales and zero points: at most ``ALLOWANCE`` bytes per convolution and ``FIXED`` for
    the rest (input, output, pooling, opsets), plus a 4-byte scale per channel when per-channel.
    The files as the quantiser writes them, before compaction, are far above it."""
    net = network(SEPARABLE)
    fp32 = ox.to_onnx(net)
    weights, biases, convs = conv_tensors(onnx.load_from_string(fp32))
    # Measured here: 2,719 B per-tensor and 3,095 per-channel against bounds of 2,862 and 3,214;
    # the previous compaction (tensor names t0, t1, ..., every attribute kept) wrote 4,353 and 4,835.
    ALLOWANCE, FIXED = 120, 450
    bound = weights + 4 * biases + 4 * biases * per_channel + ALLOWANCE * convs + FIXED
    int8 = ox.quantize(fp32, digits(200, 3), per_channel=per_channel)
    assert len(int8) <= bound, (len(int8), bound)
    assert len(ox.quantize(ox.to_onnx(net, steps=0), digits(200, 3), per_channel=per_channel, steps=0)) > 1.5 * bound
    # The weights really are int8 and the biases int32, once each.
    inits = onnx.load_from_string(int8).graph.initializer
    assert sum(int(np.prod(t.dims)) for t in inits if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4) == weights
    assert sum(int(np.prod(t.dims)) for t in inits if t.data_type == onnx.TensorProto.INT32) == biases


def test_a_shared_convolutions_per_channel_int8_weights_are_stored_once():
    spec = ArchSpec((
        Conv(8, post=("bn", "relu")), Conv(8, k=3, pad=1, groups=8, post=("bn",)), Conv(8, k=1, post=("bn", "relu")),
        Conv(8, k=3, pad=1, groups=8, post=("bn",), share=1), Conv(8, k=1, post=("bn", "relu"), share=2),
        MaxPool(2), GAP(), Conv(10, k=1, post=()),
    ))
    fp32 = ox.to_onnx(network(spec))
    # Folding each application's own BatchNorm gives each its own float weights ...
    assert conv_tensors(onnx.load_from_string(fp32))[2] == 6
    graph = onnx.load_from_string(ox.quantize(fp32, digits(200, 3), per_channel=True)).graph
    # ... which per-channel scales map to the same int8 values (the BatchNorm scales are positive).
    stored = {n.input[3] for n in graph.node if n.op_type == "QLinearConv"}
    assert len([n for n in graph.node if n.op_type == "QLinearConv"]) == 6 and len(stored) == 4


def candidates(per_channel: tuple[int, float, float], per_tensor: tuple[int, float, float]):
    return {pc: Int8Candidate(b"x" * size, accuracy, error)
            for pc, (size, accuracy, error) in ((True, per_channel), (False, per_tensor))}


def test_int8_scales_are_chosen_by_size_within_the_margin_else_by_accuracy():
    fp32 = 99.80
    # Both near fp32 on the selection images: the smaller file, even if slightly less accurate.
    assert choose_int8(candidates((1100, 99.80, 0.05), (1000, 99.76, 0.09)), fp32) == (False, True)
    # Exactly at the margin still counts as near.
    assert choose_int8(candidates((1100, 99.80, 0.05), (1000, fp32 - SELECTION_MARGIN, 0.09)), fp32) == (False, True)
    # The smaller one too far below: the one that is near.
    assert choose_int8(candidates((1100, 99.79, 0.05), (1000, 99.70, 0.09)), fp32) == (True, True)
    # Neither near: the more accurate, then the smaller logit error.
    assert choose_int8(candidates((1100, 99.60, 0.05), (1000, 99.65, 0.09)), fp32) == (False, False)
    assert choose_int8(candidates((1100, 99.60, 0.05), (1000, 99.60, 0.09)), fp32) == (True, False)
    # Equal sizes: the smaller logit error.
    assert choose_int8(candidates((1000, 99.80, 0.09), (1000, 99.80, 0.05)), fp32) == (False, True)
