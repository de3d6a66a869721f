"""Net: the best network of mnist-search study 'levers-2k'

Exported by mnist-search from study 'levers-2k' trial #0 (sqlite:///results/budget-2k/study.db).

Parameters: 1,966
Receptive field: 28
Score (mean validation accuracy of the last epochs): 99.064%
Minimum validation accuracy over those epochs: 99.04%
Validation accuracy per epoch: 97.20, 97.35, 98.49, 98.59, 98.43, 98.76, 98.92, 98.98, 98.77, 99.03, 99.04, 99.04, 99.07, 99.10, 99.07
Confirmed on the MNIST test set (6 seeds, trained on all 60,000 training images):
  final test accuracy 99.16 +- 0.05%; last 5 epochs 99.13 +- 0.06%, minimum 99.01%; every last-5 epoch of every seed >= 99.4%: no
  seed 0: 98.35, 98.61, 98.63, 98.83, 98.86, 99.01, 98.83, 98.80, 99.14, 98.98, 99.04, 99.06, 99.14, 99.10, 99.13
  seed 1: 97.63, 98.48, 98.74, 98.73, 98.89, 98.85, 98.99, 99.10, 99.01, 99.10, 99.15, 99.12, 99.09, 99.18, 99.19
  seed 2: 97.51, 97.73, 98.47, 98.74, 98.85, 98.97, 99.13, 99.02, 99.07, 99.15, 99.11, 99.19, 99.18, 99.25, 99.23
  seed 3: 97.79, 98.43, 98.50, 98.81, 98.71, 98.54, 98.99, 98.85, 98.97, 99.02, 99.03, 99.11, 99.08, 99.02, 99.10
  seed 4: 97.66, 98.56, 98.64, 98.94, 98.97, 98.88, 99.05, 99.01, 99.06, 99.13, 99.14, 99.01, 99.15, 99.06, 99.13
  seed 5: 97.94, 98.45, 98.53, 98.73, 98.88, 98.89, 98.94, 99.18, 99.01, 99.06, 99.19, 99.14, 99.23, 99.22, 99.20
Weights (load_weights): confirmation seed 4, the median of 6 completed seeds, trained on all 60,000 training images; its final test accuracy is 99.13% (scored on the CPU).
Training recipe (mnist_search TrainConfig):
{
    "epochs": 15,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.14262648872015432,
    "momentum": 0.8223017363250852,
    "nesterov": true,
    "weight_decay": 1.806410264965772e-05,
    "scheduler": "cosine",
    "step_size": 6,
    "gamma": 0.1,
    "pct_start": 0.3,
    "div_factor": 25.0,
    "final_div_factor": 10000.0,
    "rotation": 3.6480667346083724,
    "translate": 0.0681800437280925,
    "scale_min": 1.0,
    "scale_max": 1.0,
    "label_smoothing": 0.015503881719542315,
    "ema_epochs": 0.0,
    "distill_weight": 0.0,
    "distill_temperature": 4.0,
    "seed": 0
}

Architecture (mnist_search ArchSpec):
{"layers": [{"op": "conv", "out": 8, "k": 3, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.02161892688451631, "dilation": 1, "groups": 1}, {"op": "conv", "out": 8, "k": 3, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 8}, {"op": "conv", "out": 11, "k": 1, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.02161892688451631, "dilation": 1, "groups": 1}, {"op": "maxpool", "k": 2}, {"op": "conv", "out": 7, "k": 1, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.02161892688451631, "dilation": 1, "groups": 1}, {"op": "conv", "out": 7, "k": 3, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 7}, {"op": "conv", "out": 17, "k": 1, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.02161892688451631, "dilation": 1, "groups": 1}, {"op": "conv", "out": 17, "k": 3, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 17}, {"op": "conv", "out": 18, "k": 1, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.02161892688451631, "dilation": 1, "groups": 1}, {"op": "conv", "out": 18, "k": 3, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 18}, {"op": "conv", "out": 18, "k": 1, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.02161892688451631, "dilation": 1, "groups": 1}, {"op": "conv", "out": 18, "k": 3, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 18, "share": 9}, {"op": "conv", "out": 18, "k": 1, "pad": 0, "bias": false, "post": ["bn", "relu"], "dropout": 0.02161892688451631, "dilation": 1, "groups": 1, "share": 10}, {"op": "gap"}, {"op": "conv", "out": 10, "k": 1, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 1}]}
"""

import functools
import json
import os

import torch
import torch.nn.functional as F
from torch import nn

MEAN = 0.1307
STD = 0.3081
# The weights written beside this module by `mnist-search export --weights`, relative to it
# (None: exported without weights; pass a model loaded with load_weights to predict).
WEIGHTS = 'best_net.safetensors'
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
    """1,966 parameters, receptive field 28; input N x 1 x 28 x 28 normalised with MEAN and STD (see preprocess)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(
            ConvBlock(1, 8, 3, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.02161892688451631),  # 0: -> 8x26x26, RF 3, 88 params
            ConvBlock(8, 8, 3, pad=0, dilation=1, groups=8, bias=False, order=('bn',), dropout=0.0),  # 1: -> 8x24x24, RF 5, 88 params
            ConvBlock(8, 11, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.02161892688451631),  # 2: -> 11x24x24, RF 5, 110 params
            nn.MaxPool2d(2),  # 3: -> 11x12x12, RF 6, 0 params
            ConvBlock(11, 7, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.02161892688451631),  # 4: -> 7x12x12, RF 6, 91 params
            ConvBlock(7, 7, 3, pad=0, dilation=1, groups=7, bias=False, order=('bn',), dropout=0.0),  # 5: -> 7x10x10, RF 10, 77 params
            ConvBlock(7, 17, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.02161892688451631),  # 6: -> 17x10x10, RF 10, 153 params
            ConvBlock(17, 17, 3, pad=0, dilation=1, groups=17, bias=False, order=('bn',), dropout=0.0),  # 7: -> 17x8x8, RF 14, 187 params
            ConvBlock(17, 18, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.02161892688451631),  # 8: -> 18x8x8, RF 14, 342 params
            ConvBlock(18, 18, 3, pad=0, dilation=1, groups=18, bias=False, order=('bn',), dropout=0.0),  # 9: -> 18x6x6, RF 18, 198 params
            ConvBlock(18, 18, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.02161892688451631),  # 10: -> 18x6x6, RF 18, 360 params
            ConvBlock(18, 18, 3, pad=0, dilation=1, groups=18, bias=False, order=('bn',), dropout=0.0, share=9),  # 11: -> 18x4x4, RF 22, 36 params
            ConvBlock(18, 18, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn', 'relu'), dropout=0.02161892688451631, share=10),  # 12: -> 18x4x4, RF 22, 36 params
            nn.AdaptiveAvgPool2d(1),  # 13: -> 18x1x1, RF 28, 0 params
            ConvBlock(18, 10, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn',), dropout=0.0),  # 14: -> 10x1x1, RF 28, 200 params
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
        raise ValueError(f"images shaped {shape} are not in an accepted form: one image 28x28 or 784, or N images "
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
            raise ValueError(f"float images must lie in [0, 1] (got {low:.3g} to {high:.3g}): pass uint8 0-255 "
                             "pixels, or divide by 255; do not normalise them yourself")
        images = images.float()
    else:
        raise ValueError(f"expected uint8 or float images, got {images.dtype}")
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
