"""Write a spec as a standalone Python module that imports only torch.

The module's ``Net`` has the same submodule names as ``SpecNet`` (``blocks.N.conv``,
``blocks.N.bn``), so weights saved from a trained network load into it unchanged.
``load_weights`` reads safetensors with torch alone (an 8-byte header length, a JSON
header, raw little-endian tensors): no pickle is ever run. ``preprocess`` and ``predict``
take images as people have them (uint8 0-255 or float 0-1, one or many, 28x28 or flattened
to 784) and refuse the input that would otherwise fail silently (raw 0-255 floats,
already-normalised images); ``predict`` classifies ``BATCH`` images at a time, so a whole
dataset needs no more memory than one batch.

Generated code is the one place where stored values (a study name typed by anyone who can
reach the store, a spec edited by hand) could become code. So nothing is pasted into the
source: every value is written by an encoder (``repr`` of checked ints, floats, bools and
strings; docstrings escaped), and the finished source is parsed back and compared with the
template, node by node, before anyone can write it (:func:`check_source`).
"""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Callable

from mnist_search.errors import UserError
from mnist_search.levers import LEVER_CONV_FIELDS
from mnist_search.models.analysis import analyse
from mnist_search.models.spec import ArchSpec, Conv, MaxPool

MEAN, STD = 0.1307, 0.3081  # torchvision's MNIST normalisation, as the trainer uses it

_TEMPLATE = '''{doc}

import functools
import json
import os

import torch
import torch.nn.functional as F
from torch import nn

MEAN = {mean!r}
STD = {std!r}
# The weights written beside this module by `mnist-search export --weights`, relative to it
# (None: exported without weights; pass a model loaded with load_weights to predict).
WEIGHTS = {weights!r}
# Images per forward pass in predict: the activations of a whole dataset at once would need
# gigabytes, those of 1,000 images a few megabytes.
BATCH = 1000


class ConvBlock(nn.Module):
    """Conv, then its norm and ReLU in the given order, then dropout.

    A block with ``share=N`` has no conv of its own: it applies block N's conv weights again
    (linked by Net), so they are stored and counted once.
    """

    def __init__(self, cin, cout, k, pad=0, dilation=1, groups=1, bias=False, order=(), dropout=0.0, norm_groups=1,
                 share=None):
        super().__init__()
        self.order, self.share = tuple(order), share
        self.padding, self.dilation, self.groups = pad, dilation, groups
        self.conv = nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, groups=groups, bias=bias) if share is None else None
        self.shared = ()
        self.bn = nn.BatchNorm2d(cout) if "bn" in self.order else None
        self.norm = (nn.InstanceNorm2d(cout, affine=True) if "in" in self.order
                     else nn.GroupNorm(norm_groups, cout) if "gn" in self.order else None)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x):
        if self.conv is not None:
            x = self.conv(x)
        else:
            conv = self.shared[0]
            x = F.conv2d(x, conv.weight, conv.bias, padding=self.padding, dilation=self.dilation, groups=self.groups)
        for op in self.order:
            x = torch.relu(x) if op == "relu" else self.bn(x) if op == "bn" else self.norm(x)
        return self.dropout(x) if self.dropout is not None else x


class Net(nn.Module):
    {net_doc}

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(
{layers}
        )
        for block in self.blocks:  # a block with share=N applies block N's conv
            if isinstance(block, ConvBlock) and block.share is not None:
                block.shared = (self.blocks[block.share].conv,)

    def forward(self, x):
        return self.blocks(x).flatten(1)  # N x 10 logits


def as_batch(images):
    """``images`` as an N x 1 x 28 x 28 tensor (a view where it can be), without converting pixels.

    Accepted: one image shaped 28x28 or 784, or N of them shaped Nx28x28, Nx1x28x28 or Nx784.
    """
    images = torch.as_tensor(images)
    shape = tuple(images.shape)
    if shape in ((28, 28), (784,)):
        images = images.reshape(1, 1, 28, 28)
    elif len(shape) == 2 and shape[1] == 784:
        images = images.reshape(shape[0], 1, 28, 28)
    elif len(shape) == 3 and shape[1:] == (28, 28):
        images = images.unsqueeze(1)
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images shaped {{shape}} are not in an accepted form: one image 28x28 or 784, or N images "
                         "Nx28x28, Nx1x28x28 or Nx784")
    return images


def preprocess(images):
    """The normalised N x 1 x 28 x 28 float batch for ``images``.

    ``images``: a tensor (or array) in a form ``as_batch`` accepts (28x28, 784, Nx28x28,
    Nx1x28x28 or Nx784), either uint8 pixels 0-255 or floats 0-1 (white digit on black, as in
    MNIST).
    """
    images = as_batch(images)
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif images.is_floating_point():
        low, high = (images.min().item(), images.max().item()) if images.numel() else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float images must lie in [0, 1] (got {{low:.3g}} to {{high:.3g}}): pass uint8 0-255 "
                             "pixels, or divide by 255; do not normalise them yourself")
        images = images.float()
    else:
        raise ValueError(f"expected uint8 or float images, got {{images.dtype}}")
    return (images - MEAN) / STD


@functools.lru_cache(maxsize=1)
def shipped_model():
    """``Net`` with the weights exported beside this module, loaded once."""
    if WEIGHTS is None:
        raise RuntimeError("this module was exported without weights: pass model=load_weights(PATH) to predict")
    return load_weights(os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS))


def predict(images, model=None, batch_size=BATCH):
    """Class indices (0-9), one per image, as a CPU int64 tensor, for ``images`` as ``preprocess``
    takes them.

    ``model``: a ``Net`` with weights (default: the weights shipped beside this module). It is
    put in evaluation mode, and nothing is differentiated. The images are normalised and
    classified ``batch_size`` at a time, so memory stays bounded however many are passed.
    """
    model = (model if model is not None else shipped_model()).eval()
    device = next(model.parameters()).device
    images = as_batch(images)
    labels = torch.empty(len(images), dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = preprocess(images[start : start + batch_size]).to(device)
            labels[start : start + batch_size] = model(chunk).argmax(1).cpu()
    return labels


_DTYPES = {{"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}}


def load_weights(path, model=None):
    """Load safetensors weights into ``model`` (a new Net by default) without unpickling anything."""
    model = model if model is not None else Net()
    with open(path, "rb") as f:
        blob = f.read()
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    header.pop("__metadata__", None)
    start = 8 + header_len
    state = {{}}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(blob[start + begin : start + end])
        tensor = torch.frombuffer(raw, dtype=_DTYPES[info["dtype"]]) if raw else torch.empty(0, dtype=_DTYPES[info["dtype"]])
        state[name] = tensor.reshape(info["shape"])
    model.load_state_dict(state)
    return model.eval()
'''

def _int(value: object) -> bool:
    return type(value) is int and value >= 0


def _float(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _bool(value: object) -> bool:
    return type(value) is bool


def _order(value: object) -> bool:
    return type(value) is tuple and all(op in ("relu", "bn", "in", "gn") for op in value)


def _int_or_none(value: object) -> bool:
    return value is None or _int(value)


# What may stand in the layer list, and the literal types each argument may take (positional
# ones by index): the check refuses any other call, name or value.
_LAYER_CALLS: dict[str, dict[str, Callable[[object], bool]]] = {
    "ConvBlock": {"0": _int, "1": _int, "2": _int, "pad": _int, "dilation": _int, "groups": _int, "bias": _bool,
                  "order": _order, "dropout": _float,
                  # the levers' fields, written when a network uses them
                  **{name: _int if default is not None else _int_or_none for name, default in LEVER_CONV_FIELDS.items()}},
    "nn.MaxPool2d": {"0": _int},
    "nn.AdaptiveAvgPool2d": {"0": _int},
}


def _layer_call(layer, channels: int) -> tuple[str, tuple, dict]:
    """The constructor call that builds ``layer`` in the exported module: name, args, keywords."""
    if isinstance(layer, Conv):
        keywords = {"pad": layer.pad, "dilation": layer.dilation, "groups": layer.groups, "bias": layer.bias,
                    "order": tuple(layer.post), "dropout": float(layer.dropout)}
        for name, default in LEVER_CONV_FIELDS.items():  # the levers' fields, when used
            if getattr(layer, name) != default:
                keywords[name] = getattr(layer, name)
        return "ConvBlock", (channels, layer.out, layer.k), keywords
    if isinstance(layer, MaxPool):
        return "nn.MaxPool2d", (layer.k,), {}
    return "nn.AdaptiveAvgPool2d", (1,), {}


def docstring_literal(text: str, indent: str = "") -> str:
    """``text`` as a triple-quoted Python string literal that evaluates to exactly ``text``.

    Backslashes are escaped, and so is every double quote that follows an unescaped one or
    ends the text, so no run of quotes can close the literal early; characters that are not
    printable (carriage returns, line separators, control characters) are written as escapes,
    so the literal spans only real newlines. JSON's quotes stay readable.
    """
    body: list[str] = []
    for index, char in enumerate(text):
        if char == "\\":
            body.append("\\\\")
        elif char == '"':
            follows_quote = bool(body) and body[-1] == '"'
            body.append('\\"' if follows_quote or index == len(text) - 1 else '"')
        elif char == "\n" or char.isprintable():
            body.append(char)
        else:
            body.append(f"\\U{ord(char):08x}")
    lines = "".join(body).split("\n")
    return '"""' + ("\n" + indent).join(lines) + '"""'


def export_source(spec: ArchSpec, title: str, details: str = "", weights: str | None = None) -> str:
    """Python source of a standalone module defining ``Net`` for ``spec``, ``load_weights``,
    ``preprocess`` and ``predict``; ``weights`` is the weights file's path relative to the module.

    The source is checked (:func:`check_source`) before it is returned.
    """
    analysis = analyse(spec)
    doc = f"{title}\n\n{details.strip()}\n" if details.strip() else f"{title}\n"
    net_doc = (f"{analysis.params:,} parameters, receptive field {analysis.receptive_field:d}; input N x 1 x 28 x 28"
               " normalised with MEAN and STD (see preprocess).")
    lines, calls, channels = [], [], 1
    for layer, info in zip(spec.layers, analysis.layers):
        name, args, keywords = _layer_call(layer, channels)
        calls.append((name, args, keywords))
        if isinstance(layer, Conv):
            channels = layer.out
        code = f"{name}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in keywords.items())])}),"
        shape = "x".join("%d" % d for d in info.out_shape)  # ints only: a comment cannot end early
        comment = "  # %d: -> %s, RF %d, %d params" % (info.index, shape, info.receptive_field, info.params)
        lines.append(" " * 12 + code + comment)
    if weights is not None and not isinstance(weights, str):
        raise TypeError("weights must be a relative path string or None")
    source = _TEMPLATE.format(doc=docstring_literal(doc), net_doc=docstring_literal(net_doc, " " * 4), mean=MEAN,
                              std=STD, weights=weights, layers="\n".join(lines))
    check_source(source, doc, net_doc, calls, weights)
    return source


class GeneratedCodeError(UserError):
    """The generated module does not have exactly the shape of the template (a value escaped its literal)."""


def check_source(source: str, doc: str, net_doc: str, calls: list[tuple[str, tuple, dict]],
                 weights: str | None) -> None:
    """Parse ``source`` back and check that it is the template with only the intended values in it:
    the two docstrings equal ``doc`` and ``net_doc``, the layer list holds exactly ``calls`` with
    literal arguments of the allowed types, ``WEIGHTS`` is ``weights``, and every other node is the
    template's own."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise GeneratedCodeError(f"the generated module does not parse ({exc.msg}); nothing was written") from None
    found = _variable_parts(tree)
    if found["doc"] != doc or found["net_doc"] != net_doc:
        raise GeneratedCodeError("a docstring of the generated module differs from the text meant for it")
    if found["weights"] != weights:
        raise GeneratedCodeError("the generated module's WEIGHTS differs from the path meant for it")
    if found["calls"] != calls:
        raise GeneratedCodeError("the generated module's layers differ from the spec's")
    for name, args, keywords in found["calls"]:
        allowed = _LAYER_CALLS[name]
        for key, value in [*((str(i), a) for i, a in enumerate(args)), *keywords.items()]:
            if key not in allowed or not allowed[key](value):
                raise GeneratedCodeError(f"layer {name} has an argument {key} of a kind the template does not allow")
    skeleton = ast.parse(_TEMPLATE.format(doc='""', net_doc='""', mean=MEAN, std=STD, weights=None, layers=""))
    _variable_parts(skeleton)
    if ast.dump(tree) != ast.dump(skeleton):
        raise GeneratedCodeError("the generated module contains code that is not in the template; nothing was written")


def _variable_parts(tree: ast.Module) -> dict:
    """Take the values out of a generated module's variable places (blanking them in ``tree``)."""
    parts: dict = {"doc": None, "net_doc": None, "weights": object(), "calls": None}
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        parts["doc"], body[0].value.value = body[0].value.value, ""
    for node in body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["WEIGHTS"]:
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, (str, type(None))):
                parts["weights"], node.value.value = node.value.value, None
        if isinstance(node, ast.ClassDef) and node.name == "Net":
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                parts["net_doc"], first.value.value = first.value.value, ""
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and ast.unparse(sub.func) == "nn.Sequential":
                    parts["calls"] = [_literal_call(c) for c in sub.args]
                    sub.args = []
    return parts


def _literal_call(node: ast.expr) -> tuple[str, tuple, dict]:
    """(callee, positional literals, keyword literals) of a layer call; anything else is refused."""
    if not isinstance(node, ast.Call) or ast.unparse(node.func) not in _LAYER_CALLS:
        raise GeneratedCodeError("the generated module's layer list holds something other than a layer")
    try:
        args = tuple(ast.literal_eval(a) for a in node.args)
        keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        raise GeneratedCodeError("a layer argument in the generated module is not a literal") from None
    return ast.unparse(node.func), args, keywords


def relative_weights_path(module: str | os.PathLike, weights: str | os.PathLike) -> str:
    """``weights`` relative to the directory of ``module``: how the module finds them wherever both move."""
    return os.path.relpath(os.path.abspath(weights), os.path.dirname(os.path.abspath(module)))
