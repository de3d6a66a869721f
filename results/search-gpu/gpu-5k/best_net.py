"""Net: the best network of mnist-search study 'gpu-5k'

Exported by mnist-search from study 'gpu-5k' trial #35 (sqlite:///results/search-gpu/study.db).

Parameters: 4,663
Receptive field: 28
Score (mean validation accuracy of the last epochs): 99.386%, the mean over 2 training seeds (99.324, 99.448)
Minimum validation accuracy over those epochs: 99.27%
Validation accuracy per epoch (first seed): 97.47, 98.71, 98.71, 98.63, 98.82, 98.88, 98.99, 99.11, 99.18, 99.18, 99.31, 99.27, 99.36, 99.33, 99.35
Confirmed on the MNIST test set (6 seeds, trained on all 60,000 training images):
  final test accuracy 99.46 +- 0.03%; last 5 epochs 99.44 +- 0.04%, minimum 99.32%; every last-5 epoch of every seed >= 99.4%: no
  seed 0: 98.67, 99.05, 98.79, 98.79, 99.09, 99.31, 99.18, 99.26, 99.34, 99.38, 99.41, 99.44, 99.47, 99.49, 99.49
  seed 1: 98.33, 98.69, 98.62, 99.18, 99.25, 99.10, 99.18, 99.39, 99.34, 99.49, 99.39, 99.44, 99.48, 99.53, 99.52
  seed 2: 98.41, 98.95, 99.06, 98.99, 99.29, 99.22, 99.29, 99.36, 99.51, 99.49, 99.49, 99.48, 99.49, 99.48, 99.47
  seed 3: 97.55, 98.34, 98.93, 99.00, 99.20, 99.17, 99.11, 99.15, 99.30, 99.44, 99.32, 99.40, 99.46, 99.37, 99.45
  seed 4: 98.19, 98.51, 99.07, 98.89, 99.05, 99.18, 99.26, 99.29, 99.35, 99.31, 99.40, 99.42, 99.43, 99.45, 99.42
  seed 5: 98.50, 98.53, 98.75, 98.99, 99.23, 99.14, 99.29, 99.29, 99.29, 99.38, 99.42, 99.47, 99.43, 99.40, 99.44
Weights (load_weights): confirmation seed 3, the median of 6 completed seeds, trained on all 60,000 training images; its final test accuracy is 99.45% (scored on a CUDA GPU, where PyTorch runs convolutions in TF32: on a CPU an image whose top two logits nearly tie can fall the other way).
Training recipe (mnist_search TrainConfig):
{
    "epochs": 15,
    "batch_size": 256,
    "optimizer": "adamw",
    "lr": 0.007755849388077094,
    "momentum": 0.9,
    "nesterov": false,
    "weight_decay": 9.860776919665586e-05,
    "scheduler": "cosine",
    "step_size": 6,
    "gamma": 0.1,
    "pct_start": 0.3,
    "div_factor": 25.0,
    "final_div_factor": 10000.0,
    "rotation": 3.403828525980276,
    "translate": 0.04591669088155284,
    "scale_min": 1.0,
    "scale_max": 1.0,
    "label_smoothing": 0.0005118557125703108,
    "ema_epochs": 0.0,
    "distill_weight": 0.0,
    "distill_temperature": 4.0,
    "seed": 0
}

Architecture (mnist_search ArchSpec):
{"layers": [{"op": "conv", "out": 16, "k": 3, "pad": 0, "bias": false, "post": ["relu", "bn"], "dropout": 0.04276558941131761, "dilation": 1, "groups": 1}, {"op": "conv", "out": 16, "k": 3, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 16}, {"op": "conv", "out": 17, "k": 1, "pad": 0, "bias": false, "post": ["relu", "bn"], "dropout": 0.04276558941131761, "dilation": 1, "groups": 1}, {"op": "maxpool", "k": 2}, {"op": "conv", "out": 17, "k": 3, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 17}, {"op": "conv", "out": 40, "k": 1, "pad": 0, "bias": false, "post": ["relu", "bn"], "dropout": 0.04276558941131761, "dilation": 1, "groups": 1}, {"op": "conv", "out": 40, "k": 3, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 40}, {"op": "conv", "out": 30, "k": 1, "pad": 0, "bias": false, "post": ["relu", "bn"], "dropout": 0.04276558941131761, "dilation": 1, "groups": 1}, {"op": "conv", "out": 30, "k": 3, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 30}, {"op": "conv", "out": 24, "k": 1, "pad": 0, "bias": false, "post": ["relu", "bn"], "dropout": 0.04276558941131761, "dilation": 1, "groups": 1}, {"op": "gap"}, {"op": "conv", "out": 10, "k": 1, "pad": 0, "bias": false, "post": ["bn"], "dropout": 0.0, "dilation": 1, "groups": 1}]}
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
    """4,663 parameters, receptive field 28; input N x 1 x 28 x 28 normalised with MEAN and STD (see preprocess)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(
            ConvBlock(1, 16, 3, pad=0, dilation=1, groups=1, bias=False, order=('relu', 'bn'), dropout=0.04276558941131761),  # 0: -> 16x26x26, RF 3, 176 params
            ConvBlock(16, 16, 3, pad=0, dilation=1, groups=16, bias=False, order=('bn',), dropout=0.0),  # 1: -> 16x24x24, RF 5, 176 params
            ConvBlock(16, 17, 1, pad=0, dilation=1, groups=1, bias=False, order=('relu', 'bn'), dropout=0.04276558941131761),  # 2: -> 17x24x24, RF 5, 306 params
            nn.MaxPool2d(2),  # 3: -> 17x12x12, RF 6, 0 params
            ConvBlock(17, 17, 3, pad=0, dilation=1, groups=17, bias=False, order=('bn',), dropout=0.0),  # 4: -> 17x10x10, RF 10, 187 params
            ConvBlock(17, 40, 1, pad=0, dilation=1, groups=1, bias=False, order=('relu', 'bn'), dropout=0.04276558941131761),  # 5: -> 40x10x10, RF 10, 760 params
            ConvBlock(40, 40, 3, pad=0, dilation=1, groups=40, bias=False, order=('bn',), dropout=0.0),  # 6: -> 40x8x8, RF 14, 440 params
            ConvBlock(40, 30, 1, pad=0, dilation=1, groups=1, bias=False, order=('relu', 'bn'), dropout=0.04276558941131761),  # 7: -> 30x8x8, RF 14, 1260 params
            ConvBlock(30, 30, 3, pad=0, dilation=1, groups=30, bias=False, order=('bn',), dropout=0.0),  # 8: -> 30x6x6, RF 18, 330 params
            ConvBlock(30, 24, 1, pad=0, dilation=1, groups=1, bias=False, order=('relu', 'bn'), dropout=0.04276558941131761),  # 9: -> 24x6x6, RF 18, 768 params
            nn.AdaptiveAvgPool2d(1),  # 10: -> 24x1x1, RF 28, 0 params
            ConvBlock(24, 10, 1, pad=0, dilation=1, groups=1, bias=False, order=('bn',), dropout=0.0),  # 11: -> 10x1x1, RF 28, 260 params
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
