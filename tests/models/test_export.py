import ast

import torch
from hypothesis import given
from hypothesis import strategies as st

from mnist_search.models import GAP, ArchSpec, Conv, MaxPool, build
from mnist_search.models.export import docstring_literal, export_source


def test_the_exported_module_computes_what_the_built_network_computes_with_depthwise_convs():
    """A depthwise-separable spec (as the search space emits it) exports to the same function."""
    spec = ArchSpec((
        Conv(8, post=("bn", "relu")),
        Conv(8, k=3, groups=8, post=("bn",)), Conv(12, k=1, post=("bn", "relu"), dropout=0.05),
        MaxPool(2),
        Conv(12, k=3, pad=1, groups=12, post=("bn",)), Conv(16, k=1, post=("relu", "bn")),
        GAP(), Conv(10, k=1, post=()),
    ))
    torch.manual_seed(0)
    built = build(spec)
    for module in built.modules():  # non-trivial BatchNorm statistics, so eval mode is really tested
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    namespace: dict = {}
    exec(compile(export_source(spec, "test"), "best_net.py", "exec"), namespace)
    exported = namespace["Net"]()
    exported.load_state_dict(built.state_dict())
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(exported.eval()(x), built.eval()(x))


@given(st.text(alphabet=st.sampled_from(['"', "'", "\\", "\n", "\r", "\u2028", "\x00", "a", " ", "{", "}", "#"])
               | st.characters(), max_size=60))
def test_a_docstring_literal_evaluates_to_its_text_and_nothing_else(text):
    literal = docstring_literal(text)
    tree = ast.parse(literal)
    assert len(tree.body) == 1 and isinstance(tree.body[0].value, ast.Constant)
    assert tree.body[0].value.value == text


def test_the_exported_module_computes_what_the_built_network_computes_with_shared_convs_and_per_sample_norms():
    spec = ArchSpec((
        Conv(8, post=("in", "relu")),
        Conv(8, k=3, pad=1, groups=8, post=("gn",), norm_groups=2), Conv(8, k=1, post=("bn", "relu")),
        Conv(8, k=3, pad=1, groups=8, post=("gn",), norm_groups=4, share=1), Conv(8, k=1, post=("relu", "bn"), share=2),
        MaxPool(2), GAP(), Conv(10, k=1, post=()),
    ))
    torch.manual_seed(0)
    built = build(spec)
    namespace: dict = {}
    source = export_source(spec, "test")
    assert "share=1)" in source and "share=2)" in source  # the sharing is explicit in the module
    exec(compile(source, "best_net.py", "exec"), namespace)
    exported = namespace["Net"]()
    exported.load_state_dict(built.state_dict())  # strict: the same keys, shared weights stored once
    assert sum(p.numel() for p in exported.parameters()) == sum(p.numel() for p in built.parameters())
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(exported.eval()(x), built.eval()(x))
