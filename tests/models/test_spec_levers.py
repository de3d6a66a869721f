"""Shared conv weights and per-sample norms (InstanceNorm, GroupNorm) in the spec, build and count."""

import copy

import pytest
import torch

from mnist_search.errors import SpecError
from mnist_search.models import (
    GAP,
    ArchSpec,
    Conv,
    MaxPool,
    analyse,
    build,
    count_params,
)
from mnist_search.models.weights import load_weights, save_weights
from mnist_search.trainer.averaging import WeightAverage


def shared_separable(norm: str = "in", repeats: int = 3) -> ArchSpec:
    """One depthwise-separable conv (depthwise 3x3 + pointwise 1x1) applied ``repeats`` times."""
    layers = [Conv(12, post=(norm, "relu")), MaxPool(2), Conv(12, k=3, pad=1, groups=12, post=(norm,)),
              Conv(12, k=1, post=(norm, "relu"))]
    for _ in range(repeats - 1):
        layers += [Conv(12, k=3, pad=1, groups=12, post=(norm,), share=2), Conv(12, k=1, post=(norm, "relu"), share=3)]
    return ArchSpec(tuple(layers) + (Conv(10, k=1, post=()), GAP()))


def test_shared_weights_count_once_and_the_module_agrees():
    spec = shared_separable(repeats=3)
    once = 12 * 9 + 2 * 12  # first conv + its norm
    separable = 12 * 9 + 2 * 12 + 12 * 12 + 2 * 12
    norms_of_repeats = 2 * (2 * 12 + 2 * 12)
    assert count_params(spec) == once + separable + norms_of_repeats + 120
    model = build(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec)
    assert analyse(spec).layers[4].params == 24  # a sharing layer adds only its norm


def test_a_shared_conv_is_one_tensor_trained_once_and_saved_once(tmp_path):
    model = build(shared_separable("bn"))
    owner, sharer = model.blocks[2], model.blocks[4]
    assert sharer.shared[0] is owner.conv
    keys = list(model.state_dict())
    assert "blocks.2.conv.weight" in keys and not any(k.startswith("blocks.4.conv") for k in keys)
    save_weights(model, tmp_path / "w.safetensors")  # safetensors refuses tensors saved twice
    again = load_weights(build(shared_separable("bn")), tmp_path / "w.safetensors")
    assert torch.equal(again.blocks[4].shared[0].weight, model.blocks[2].conv.weight)
    assert again.blocks[4].shared[0] is again.blocks[2].conv


def test_sharing_applies_the_owners_weights_and_both_applications_train_them():
    spec = ArchSpec((Conv(1, pad=1, post=()), Conv(1, pad=1, post=(), share=0), Conv(10, k=1, post=()), GAP()))
    model = build(spec)
    x = torch.randn(2, 1, 28, 28)
    once = model.blocks[0](x)
    assert torch.allclose(model.blocks[1](once), model.blocks[0](once))
    # d(loss)/d(shared weights) sums over both applications: autograd through one tensor used twice
    model(x).sum().backward()
    weight = model.blocks[0].conv.weight
    first = torch.autograd.grad(model.blocks[2](model.blocks[1](model.blocks[0](x).detach())).sum(), weight)[0]
    assert not torch.allclose(weight.grad, first)  # the first application contributes too


def test_a_shared_conv_may_use_its_own_padding_and_dilation():
    spec = ArchSpec((Conv(4, post=()), Conv(4, pad=1, post=()), Conv(4, pad=2, dilation=2, post=(), share=1),
                     Conv(10, k=1, post=()), GAP()))
    model = build(spec)
    assert [info.out_shape for info in analyse(spec).layers[:3]] == [(4, 26, 26)] * 3
    assert [info.receptive_field for info in analyse(spec).layers[:3]] == [3, 5, 9]
    assert model.blocks[2](torch.zeros(1, 4, 26, 26)).shape == (1, 4, 26, 26)
    assert count_params(spec) == 36 + 144 + 40 == sum(p.numel() for p in model.parameters())


def test_a_copy_keeps_the_sharing_within_itself():
    model = build(shared_separable())
    twin = copy.deepcopy(model)
    assert twin.blocks[4].shared[0] is twin.blocks[2].conv
    assert twin.blocks[4].shared[0] is not model.blocks[2].conv


@pytest.mark.parametrize(
    "layers, message",
    [
        ((Conv(8), Conv(8, share=1), Conv(10, k=1, post=()), GAP()), "must name an earlier layer"),
        ((Conv(8), Conv(8, share=5), Conv(10, k=1, post=()), GAP()), "must name an earlier layer"),
        ((Conv(8), MaxPool(2), Conv(8, share=1), Conv(10, k=1, post=()), GAP()), "which is a maxpool, not a conv"),
        ((Conv(8), Conv(8), Conv(8, share=1), Conv(8, share=2), Conv(10, k=1, post=()), GAP()),
         "which itself shares layer 1; name layer 1"),
    ],
)
def test_bad_share_references_are_clear(layers, message):
    with pytest.raises(SpecError, match=message):
        ArchSpec(layers)


@pytest.mark.parametrize(
    "layers, message",
    [
        ((Conv(8), Conv(12, share=0), Conv(10, k=1, post=()), GAP()), r"conv is 8->12 k3 .*layer 0's is 1->8 k3"),
        ((Conv(8), Conv(8), Conv(8, k=1, share=1), Conv(10, k=1, post=()), GAP()), "need the same shape"),
        ((Conv(8), Conv(8), Conv(8, bias=True, share=1), Conv(10, k=1, post=()), GAP()), "need the same shape"),
        ((Conv(8), Conv(8, groups=8), Conv(8, share=1), Conv(10, k=1, post=()), GAP()), "need the same shape"),
    ],
)
def test_sharing_weights_of_another_shape_is_refused(layers, message):
    with pytest.raises(SpecError, match=message):
        analyse(ArchSpec(layers))


@pytest.mark.parametrize("norm, module", [("in", torch.nn.InstanceNorm2d), ("gn", torch.nn.GroupNorm)])
def test_per_sample_norms_build_with_an_affine_pair_per_channel_and_no_running_statistics(norm, module):
    groups = {"norm_groups": 2} if norm == "gn" else {}
    spec = ArchSpec((Conv(8, post=(norm, "relu"), **groups), Conv(10, k=1, post=()), GAP()))
    model = build(spec)
    block = model.blocks[0]
    assert isinstance(block.norm, module) and block.bn is None
    assert block.norm.weight.shape == (8,) and block.norm.bias.shape == (8,)
    assert list(model.buffers()) == []
    assert count_params(spec) == 8 * 9 + 16 + 80 == sum(p.numel() for p in model.parameters())
    if norm == "gn":
        assert block.norm.num_groups == 2
    # per sample: an image's output does not depend on the other images of the batch, in training too
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(model.train()(x)[:1], model(x[:1]), atol=1e-6)


@pytest.mark.parametrize(
    "conv, message",
    [
        ({"out": 8, "post": ("bn", "in")}, "more than one norm"),
        ({"out": 8, "post": ("gn",), "norm_groups": 3}, "multiple of 'norm_groups'"),
        ({"out": 8, "post": ("in",), "norm_groups": 2}, "only used by a \"gn\""),
        ({"out": 8, "post": ("gn",), "norm_groups": 0}, "'norm_groups' must be an integer"),
    ],
)
def test_norm_field_errors_are_clear(conv, message):
    with pytest.raises(SpecError, match=message):
        Conv(**conv)


def test_a_per_sample_norm_over_one_value_is_refused():
    with pytest.raises(SpecError, match="outputs a constant"):
        analyse(ArchSpec((Conv(8), GAP(), Conv(10, k=1, post=("in",)))))
    analyse(ArchSpec((Conv(8), GAP(), Conv(10, k=1, post=("gn",), norm_groups=2))))  # 5 values per group: fine


def test_the_weight_average_handles_shared_weights_and_per_sample_norms():
    """WeightAverage walks parameters() (each shared tensor once) and buffers(). InstanceNorm and
    GroupNorm hold no buffers: their scale and shift are averaged like any parameter and there are
    no running statistics to copy. The averaged copy keeps its own sharing (one deepcopy)."""
    model = build(shared_separable("in"))
    average = WeightAverage(model, decay=0.5)
    assert len(average._averaged) == len(list(model.parameters())) and average._copied == []
    assert average.model.blocks[4].shared[0] is average.model.blocks[2].conv
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = average.model.blocks[2].conv.weight.clone()
    average.prepare(step=10**6)
    average.update()
    moved = average.model.blocks[2].conv.weight
    assert torch.allclose(moved, before + 0.5)  # moved halfway, once (not twice for two applications)
    assert torch.equal(average.model.blocks[4].shared[0].weight, moved)
    average.copy_into_source()
    assert torch.equal(model.blocks[4].shared[0].weight, moved)
