import json
from dataclasses import replace

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mnist_search.errors import SpecError
from mnist_search.models import GAP, PRESETS, ArchSpec, Conv, MaxPool, analyse, build, count_params


def test_json_round_trip_keeps_every_field():
    spec = ArchSpec((Conv(8, k=3, pad=1, bias=True, post=("bn", "relu"), dropout=0.05, dilation=2),
                     MaxPool(2), Conv(10, k=1, post=()), GAP()))
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["layers"][0] == {
        "op": "conv", "out": 8, "k": 3, "pad": 1, "bias": True, "post": ["bn", "relu"],
        "dropout": 0.05, "dilation": 2, "groups": 1,
    }


def test_sharing_and_group_norm_round_trip_and_are_written_only_when_used():
    spec = ArchSpec((Conv(8, post=("gn", "relu"), norm_groups=4), Conv(8, pad=1, post=("in",)),
                     Conv(8, pad=1, post=("in",), share=1), Conv(10, k=1, post=()), GAP()))
    assert ArchSpec.from_json(spec.to_json()) == spec
    layers = json.loads(spec.to_json())["layers"]
    assert layers[0]["norm_groups"] == 4 and layers[2]["share"] == 1
    # a spec without the new fields serialises exactly as before they existed
    assert "share" not in layers[1] and "norm_groups" not in layers[1] and "norm_groups" not in layers[3]


@pytest.mark.parametrize(
    "layers, message",
    [
        ([{"op": "dense", "out": 10}], "unknown op 'dense'"),
        ([{"op": "conv", "out": 0}], "conv 'out' must be an integer from 1 to 1024"),
        ([{"op": "conv", "out": -3}], "conv 'out' must be an integer from 1 to 1024"),
        ([{"op": "conv", "out": 10, "post": ["tanh"]}], "unknown post op 'tanh'"),
        ([{"op": "conv", "out": 10, "dropout": 1.5}], "dropout"),
        ([{"op": "conv", "out": 10, "kernel": 3}], "unknown field 'kernel'"),
        ([{"op": "conv"}], "missing required field"),
        ([{"out": 10}], 'must be an object with an "op" field'),
        ([], "no layers"),
    ],
)
def test_field_errors_are_clear(layers, message):
    with pytest.raises(SpecError, match=message):
        ArchSpec.from_dict({"layers": layers})


def test_not_json_is_a_spec_error():
    with pytest.raises(SpecError, match="not valid JSON"):
        ArchSpec.from_json("{layers: ")


@pytest.mark.parametrize(
    "layers, message",
    [
        ((Conv(10, k=29), GAP()), "kernel spans 29 pixels"),
        ((Conv(8), MaxPool(2), MaxPool(2), MaxPool(2), MaxPool(2), MaxPool(2), Conv(10), GAP()),
         "smaller than the pooling window"),
        ((Conv(16), GAP()), "must end in 10x1x1"),
        ((Conv(10),), "ends in 10x26x26"),
        ((Conv(9), Conv(10, groups=2)), "multiple of 'groups'|multiple of groups"),
    ],
)
def test_geometry_errors_are_clear(layers, message):
    with pytest.raises(SpecError, match=message):
        analyse(ArchSpec(layers))


def test_shapes_and_receptive_fields_match_a_hand_computation():
    spec = ArchSpec((Conv(8), Conv(8), MaxPool(2), Conv(16, pad=1), Conv(10, k=1, post=()), GAP()))
    analysis = analyse(spec)
    assert [i.out_shape for i in analysis.layers] == [(8, 26, 26), (8, 24, 24), (8, 12, 12), (16, 12, 12),
                                                     (10, 12, 12), (10, 1, 1)]
    assert [i.receptive_field for i in analysis.layers] == [3, 5, 6, 10, 10, 10 + 11 * 2]


def test_analysed_shapes_match_the_built_module():
    for preset in PRESETS.values():
        model = build(preset.spec).eval()
        x = torch.zeros(2, 1, 28, 28)
        for block, info in zip(model.blocks, analyse(preset.spec).layers):
            x = block(x)
            assert tuple(x.shape[1:]) == info.out_shape


@pytest.mark.parametrize(
    "name, params", [("seed001-exp4", 7288), ("seed001-exp5", 7753), ("seed002", 7684), ("seed003", 7884)]
)
def test_presets_have_the_write_ups_parameter_counts(name, params):
    spec = PRESETS[name].spec
    assert count_params(spec) == params
    assert sum(p.numel() for p in build(spec).parameters()) == params
    assert analyse(spec).receptive_field == 28


# Random specs: a few conv/pool stages over the input, then a 10-way head; any norm kind, and
# optionally a conv applied again with shared weights.
@st.composite
def conv_layers(draw, out=None):
    out = out or draw(st.integers(1, 12))
    post = draw(st.sampled_from([(), ("relu",), ("relu", "bn"), ("bn", "relu"), ("in", "relu"), ("gn",), ("relu", "gn")]))
    norm_groups = draw(st.sampled_from([g for g in range(1, out + 1) if out % g == 0])) if "gn" in post else 1
    return Conv(out=out, k=draw(st.sampled_from([1, 3, 5])), pad=draw(st.integers(0, 2)), bias=draw(st.booleans()),
                post=post, dropout=draw(st.sampled_from([0.0, 0.1])), dilation=draw(st.sampled_from([1, 2])),
                norm_groups=norm_groups)


body = st.lists(st.one_of(conv_layers(), conv_layers(), st.just(MaxPool(2))), min_size=1, max_size=6)
heads = st.sampled_from([
    (Conv(10, k=1, post=()), GAP()),
    (GAP(), Conv(10, k=1, post=())),
    (GAP(), Conv(10, k=1, bias=True, post=("bn",))),
])


def channels_after(layers):
    return next((layer.out for layer in reversed(layers) if isinstance(layer, Conv)), 1)


@settings(max_examples=150, deadline=None)
@given(body=body, head=heads, depthwise=st.booleans(), shared=st.one_of(st.none(), st.integers(0, 6)), data=st.data())
def test_count_params_equals_the_built_module_for_random_specs(body, head, depthwise, shared, data):
    layers = list(body)
    if depthwise:  # a depthwise conv over whatever the body ends with
        channels = channels_after(layers)
        layers.append(Conv(channels * 2, k=3, pad=1, groups=channels))
    if shared is not None:  # a square conv at some depth, then up to two more applications of its weights
        at = min(shared, len(layers))
        owner = data.draw(conv_layers(out=channels_after(layers[:at])))
        again = [replace(data.draw(conv_layers(out=owner.out)), k=owner.k, bias=owner.bias, share=at)
                 for _ in range(data.draw(st.integers(1, 2)))]
        layers[at:at] = [owner, *again]
    spec = ArchSpec(tuple(layers) + head)
    try:
        analyse(spec)
    except SpecError:
        return  # geometrically impossible spec (e.g. collapsed map): nothing to build
    event("shared weights" if shared is not None else "no sharing")
    event("norms: " + ",".join(sorted({layer.norm or "-" for layer in spec.layers if isinstance(layer, Conv)})))
    model = build(spec)
    assert count_params(spec) == sum(p.numel() for p in model.parameters())
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_macs_count_every_convolution_application_as_the_built_network_runs_it():
    """Analysis.macs equals the multiply-adds the built network's convolutions do on one image,
    a shared conv once per application; training_flops is 6 per MAC."""
    import torch.nn.functional as F

    spec = ArchSpec((Conv(6), Conv(6, groups=6, dilation=2), Conv(8, k=1), MaxPool(2), Conv(8, pad=1),
                     Conv(8, pad=1, share=4), GAP(), Conv(10, k=1, post=())))
    counted = 0
    real_conv2d = F.conv2d

    def conv2d(x, weight, *args, **kwargs):
        nonlocal counted
        out = real_conv2d(x, weight, *args, **kwargs)
        counted += out[0].numel() * weight[0].numel()
        return out

    model = build(spec).eval()
    torch.nn.functional.conv2d = conv2d
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28))
    finally:
        torch.nn.functional.conv2d = real_conv2d
    analysis = analyse(spec)
    assert analysis.macs == counted > 0
    assert analysis.training_flops == 6 * counted
