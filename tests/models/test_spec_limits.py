"""A spec read from a file cannot exhaust memory or end in a traceback: every bad one is one SpecError line."""

import json

import pytest

from mnist_search.errors import SpecError
from mnist_search.models import GAP, ArchSpec, Conv, MaxPool, analyse, build
from mnist_search.models.analysis import MAX_ACTIVATIONS
from mnist_search.models.spec import MAX_LAYERS, MAX_SPEC_BYTES, MAX_WIDTH


def spec_json(*layers: dict) -> str:
    return json.dumps({"layers": list(layers)})


HEAD = ({"op": "conv", "out": 10, "k": 1, "post": []}, {"op": "gap"})


@pytest.mark.parametrize(
    "text, message",
    [
        (spec_json({"op": "conv", "out": MAX_WIDTH + 1}, *HEAD), "conv 'out' must be an integer from 1 to 1024"),
        (spec_json({"op": "conv", "out": 10**100}, *HEAD), "conv 'out' must be an integer from 1 to 1024"),
        (spec_json({"op": "conv", "out": 8, "k": 1000}, *HEAD), "conv 'k' must be an integer from 1 to 64"),
        (spec_json({"op": "conv", "out": 8, "pad": 10**6}, *HEAD), "conv 'pad' must be an integer"),
        (spec_json({"op": "conv", "out": 8, "dilation": 10**6}, *HEAD), "conv 'dilation' must be an integer"),
        (spec_json({"op": "conv", "out": 8, "groups": 10**9}, *HEAD), "conv 'groups' must be an integer"),
        (spec_json({"op": "maxpool", "k": 10**9}, *HEAD), "maxpool 'k' must be an integer"),
        (spec_json({"op": "conv", "out": 8, "share": 10**9}, *HEAD), "conv 'share' must be an integer"),
        (spec_json(*[{"op": "conv", "out": 10, "k": 1, "post": []}] * (MAX_LAYERS + 1), {"op": "gap"}),
         "layers; at most 64 are allowed"),
        ('{"layers": [{"op": "conv", "out": 1e400}]}', "conv 'out' must be an integer .* got inf"),
        ('{"layers": [{"op": "conv", "out": 8, "dropout": 1e400}]}', "conv 'dropout' must be a number"),
        ('{"layers": [{"op": "conv", "out": 8, "dropout": NaN}]}', "conv 'dropout' must be a number"),
        ('{"layers": [{"op": "conv", "out": 8, "dropout": false}]}', "conv 'dropout' must be a number"),
        ('{"layers": [{"op": "conv", "out": true}]}', "conv 'out' must be an integer .* got True"),
        ('{"layers": [{"op": "conv", "out": 8, "k": 3.0}]}', "conv 'k' must be an integer"),
        ('{"layers": [{"op": "conv", "out": 8, "bias": 1}]}', "conv 'bias' must be true or false"),
        ('{"layers": [{"op": "conv", "out": ' + "9" * 5000 + "}]}", "holds a value Python cannot read"),
        ('{"layers": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"layers": [{"op": ["conv"], "out": 8}]}', "unknown op \\['conv'\\]"),
        ('{"layers": [{"op": "conv", "out": 8, "post": "bnrelu"}]}', "conv 'post' must be a list"),
        ('{"layers": [{"op": "conv", "out": 8, "post": [["bn"]]}]}', "unknown post op \\['bn'\\] in conv"),
        ('{"layers": [{"op": "conv", "out": 8, "post": [' + "[" * 900 + "]" * 900 + "]}]}",
         "unknown post op \\[\\[\\[\\.\\.\\.\\]\\]\\] in conv"),
        ('{"layers": [{"op": "conv", "out": [' + "[" * 900 + "]" * 900 + "]}]}", "conv 'out' must be an integer"),
    ],
)
def test_malformed_or_huge_specs_are_one_spec_error(text, message):
    with pytest.raises(SpecError, match=message) as caught:
        ArchSpec.from_json(text)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_a_spec_text_or_file_over_the_size_limit_is_refused_before_parsing(tmp_path):
    huge = '{"layers": [' + " " * MAX_SPEC_BYTES + "]}"
    with pytest.raises(SpecError, match="characters long"):
        ArchSpec.from_json(huge)
    path = tmp_path / "spec.json"
    path.write_text(huge)
    with pytest.raises(SpecError, match="spec.json: the spec is 1,000,001 characters long"):
        ArchSpec.from_file(path)


def test_an_endless_spec_file_is_read_only_up_to_the_limit():
    with pytest.raises(SpecError, match="characters long|not valid JSON"):
        ArchSpec.from_file("/dev/zero")


def test_a_kernel_larger_than_its_feature_map_is_refused():
    with pytest.raises(SpecError, match="kernel spans 14 pixels but the padded feature map is only 13"):
        analyse(ArchSpec((Conv(8), MaxPool(2), Conv(8, k=14), Conv(10, k=1, post=()), GAP())))


def test_a_spec_holding_too_many_activations_is_refused_before_it_is_built():
    wide = ArchSpec((Conv(1024, pad=1, post=()), Conv(1024, k=1, post=()), Conv(1024, k=1, post=()),
                     Conv(10, k=1, post=()), GAP()))
    assert 3 * 1024 * 28 * 28 > MAX_ACTIVATIONS
    with pytest.raises(SpecError, match="activations per image"):
        build(wide)


def test_padding_cannot_grow_the_map_without_bound():
    growing = ArchSpec(tuple(Conv(64, k=1, pad=32, post=()) for _ in range(20)) + (Conv(10, k=1, post=()), GAP()))
    with pytest.raises(SpecError, match="activations per image"):
        analyse(growing)


def test_too_many_parameters_are_refused():
    heavy = ArchSpec((Conv(256, pad=1, post=()), *[Conv(1024, pad=1, post=())] * 2, Conv(10, k=1, post=()), GAP()))
    with pytest.raises(SpecError, match="activations per image|parameters"):
        analyse(heavy)
    heavy = ArchSpec((Conv(64), MaxPool(2), MaxPool(2), *[Conv(1024, pad=1, post=())] * 6, Conv(10, k=1, post=()), GAP()))
    with pytest.raises(SpecError, match="over 5,000,000 parameters"):
        analyse(heavy)
