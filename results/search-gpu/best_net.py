"""Net: the best network of mnist-search study 'ema-8k'

Exported by mnist-search from study 'ema-8k' trial #0 (sqlite:///results/search-gpu/study.db).

Parameters: 7,712
Receptive field: 28
Score (mean validation accuracy of the last epochs): 99.450%
Minimum validation accuracy over those epochs: 99.42%
Validation accuracy per epoch: 98.26, 98.90, 99.08, 99.27, 99.30, 99.37, 99.45, 99.46, 99.40, 99.42, 99.42, 99.47, 99.46, 99.45, 99.45
Confirmed on the MNIST test set (6 seeds, trained on all 60,000 training images):
  final test accuracy 99.50 +- 0.04%; last 5 epochs 99.49 +- 0.04%, minimum 99.40%; every last-5 epoch of every seed >= 99.4%: yes
  seed 0: 98.65, 99.14, 99.27, 99.36, 99.43, 99.50, 99.44, 99.44, 99.46, 99.41, 99.40, 99.42, 99.41, 99.43, 99.43
  seed 1: 98.70, 99.21, 99.32, 99.32, 99.34, 99.43, 99.44, 99.46, 99.48, 99.53, 99.51, 99.51, 99.51, 99.54, 99.53
  seed 2: 99.04, 99.25, 99.33, 99.41, 99.40, 99.46, 99.42, 99.46, 99.45, 99.47, 99.46, 99.46, 99.51, 99.49, 99.49
  seed 3: 98.88, 99.21, 99.20, 99.30, 99.42, 99.43, 99.48, 99.50, 99.50, 99.53, 99.49, 99.50, 99.50, 99.51, 99.52
  seed 4: 98.92, 99.25, 99.34, 99.45, 99.47, 99.44, 99.52, 99.55, 99.54, 99.51, 99.54, 99.48, 99.50, 99.51, 99.52
  seed 5: 98.82, 99.33, 99.27, 99.46, 99.57, 99.52, 99.51, 99.49, 99.52, 99.53, 99.52, 99.52, 99.53, 99.52, 99.54
  the same runs' raw (unaveraged) weights: final 99.52 +- 0.04%, minimum of the last 5 99.35%
Weights (load_weights): confirmation seed 3, the median of 6 completed seeds, trained on all 60,000 training images; its final test accuracy is 99.52%.
The network evaluated above and shipped is an exponential moving average of the training weights over about 1 epoch(s) of steps (TrainConfig.ema_epochs), not the last step's.
Training recipe (mnist_search TrainConfig):
{
    "epochs": 15,
    "batch_size": 256,
    "optimizer": "adamw",
    "lr": 0.00822550851112321,
    "momentum": 0.9,
    "nesterov": false,
    "weight_decay": 0.0005540437701526845,
    "scheduler": "cosine",
    "step_size": 6,
    "gamma": 0.1,
    "pct_start": 0.3,
    "div_factor": 25.0,
    "final_div_factor": 10000.0,
    "rotation": 1.3434996628181788,
    "translate": 0.04358580849716367,
    "scale_min": 1.0,
    "scale_max": 1.0,
    "label_smoothing": 0.012047905979579204,
    "ema_epochs": 1.0,
    "seed": 0
}

Architecture (mnist_search ArchSpec):
{"layers": [{"op": "conv", "out": 12, "k": 3, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.004833428705929923, "dilation": 1, "groups": 1}, {"op": "conv", "out": 14, "k": 3, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.004833428705929923, "dilation": 1, "groups": 1}, {"op": "conv", "out": 8, "k": 1, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.004833428705929923, "dilation": 1, "groups": 1}, {"op": "maxpool", "k": 2}, {"op": "conv", "out": 19, "k": 3, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.004833428705929923, "dilation": 1, "groups": 1}, {"op": "conv", "out": 10, "k": 3, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.004833428705929923, "dilation": 1, "groups": 1}, {"op": "conv", "out": 10, "k": 3, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.004833428705929923, "dilation": 1, "groups": 1}, {"op": "conv", "out": 18, "k": 3, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.004833428705929923, "dilation": 1, "groups": 1}, {"op": "gap"}, {"op": "conv", "out": 10, "k": 1, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 1}]}
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
    """7,712 parameters, receptive field 28; input N x 1 x 28 x 28 normalised with mean 0.1307, std 0.3081."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(
            ConvBlock(1, 12, 3, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.004833428705929923),  # 0: -> 12x26x26, RF 3, 132 params
            ConvBlock(12, 14, 3, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.004833428705929923),  # 1: -> 14x24x24, RF 5, 1540 params
            ConvBlock(14, 8, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn',), dropout=0.004833428705929923),  # 2: -> 8x24x24, RF 5, 128 params
            nn.MaxPool2d(2),  # 3: -> 8x12x12, RF 6, 0 params
            ConvBlock(8, 19, 3, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.004833428705929923),  # 4: -> 19x10x10, RF 10, 1406 params
            ConvBlock(19, 10, 3, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.004833428705929923),  # 5: -> 10x8x8, RF 14, 1730 params
            ConvBlock(10, 10, 3, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.004833428705929923),  # 6: -> 10x6x6, RF 18, 920 params
            ConvBlock(10, 18, 3, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.004833428705929923),  # 7: -> 18x4x4, RF 22, 1656 params
            nn.AdaptiveAvgPool2d(1),  # 8: -> 18x1x1, RF 28, 0 params
            ConvBlock(18, 10, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn',), dropout=0.0),  # 9: -> 10x1x1, RF 28, 200 params
        )

    def forward(self, x):
        return self.blocks(x).flatten(1)  # N x 10 logits


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def load_weights(path, model=None):
    """Load safetensors weights into ``model`` (a new Net by default) without unpickling anything."""
    model = model if model is not None else Net()
    with open(path, "rb") as f:
        blob = f.read()
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    header.pop("__metadata__", None)
    start = 8 + header_len
    state = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(blob[start + begin : start + end])
        tensor = torch.frombuffer(raw, dtype=_DTYPES[info["dtype"]]) if raw else torch.empty(0, dtype=_DTYPES[info["dtype"]])
        state[name] = tensor.reshape(info["shape"])
    model.load_state_dict(state)
    return model.eval()
