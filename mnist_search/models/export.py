"""Write a spec as a standalone Python module that imports only torch.

The module's ``Net`` has the same submodule names as ``SpecNet`` (``blocks.N.conv``,
``blocks.N.bn``), so weights saved from a trained network load into it unchanged.
``load_weights`` reads safetensors with torch alone (an 8-byte header length, a JSON
header, raw little-endian tensors): no pickle is ever run.
"""

from __future__ import annotations

from mnist_search.models.analysis import analyse
from mnist_search.models.spec import ArchSpec, Conv, MaxPool

_TEMPLATE = '''"""{title}

{details}
"""

import json

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv, then BatchNorm/ReLU in the given order, then dropout."""

    def __init__(self, cin, cout, k, pad=0, dilation=1, groups=1, bias=False, order=(), dropout=0.0):
        super().__init__()
        self.order = tuple(order)
        self.conv = nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout) if "bn" in self.order else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x):
        x = self.conv(x)
        for op in self.order:
            x = self.bn(x) if op == "bn" else torch.relu(x)
        return self.dropout(x) if self.dropout is not None else x


class Net(nn.Module):
    """{params:,} parameters, receptive field {rf}; input N x 1 x 28 x 28 normalised with mean 0.1307, std 0.3081."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(
{layers}
        )

    def forward(self, x):
        return self.blocks(x).flatten(1)  # N x 10 logits


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


def export_source(spec: ArchSpec, title: str, details: str = "") -> str:
    """Python source of a standalone module defining ``Net`` for ``spec`` and ``load_weights``."""
    analysis = analyse(spec)
    lines = []
    channels = 1
    for layer, info in zip(spec.layers, analysis.layers):
        shape = "x".join(map(str, info.out_shape))
        comment = f"  # {info.index}: -> {shape}, RF {info.receptive_field}, {info.params} params"
        if isinstance(layer, Conv):
            code = (
                f"ConvBlock({channels}, {layer.out}, {layer.k}, pad={layer.pad}, dilation={layer.dilation}, "
                f"groups={layer.groups}, bias={layer.bias}, order={tuple(layer.post)!r}, dropout={layer.dropout!r}),"
            )
            channels = layer.out
        elif isinstance(layer, MaxPool):
            code = f"nn.MaxPool2d({layer.k}),"
        else:
            code = "nn.AdaptiveAvgPool2d(1),"
        lines.append(" " * 12 + code + comment)
    return _TEMPLATE.format(
        title=title, details=details.strip(), params=analysis.params, rf=analysis.receptive_field,
        layers="\n".join(lines),
    )
