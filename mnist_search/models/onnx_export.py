"""A trained network as ONNX, with its preprocessing inside the graph, and a static int8 version.

The graph takes what a camera or a browser canvas gives: ``images``, uint8 ``[N, 1, 28, 28]``
(white digit on black, as MNIST) with a dynamic N, and returns ``logits``, float32 ``[N, 10]``;
the scaling to 0-1 and the MEAN/STD normalisation are its first nodes, so no deployment can
forget them or apply another dataset's. Nothing is written here: the functions return bytes
and measurements, and the caller writes them (atomically, beside its other outputs).

onnx and onnxruntime are optional dependencies (``pip install 'mnist-search[onnx]'``); they are
imported only when a function here is called.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnist_search.errors import UserError, WorkFailed
from mnist_search.models.export import MEAN, STD

INSTALL_HINT = "pip install 'mnist-search[onnx]'"
# ONNX opset 17: what the TorchScript exporter writes best and every onnxruntime since 1.14
# (2023) runs, including onnxruntime-web and onnxruntime-mobile builds.
OPSET = 17
# fp32 logits from onnxruntime and from PyTorch differ by rounding only: about 1e-5 on logits of
# magnitude 10 (measured on the committed networks). A difference above this is a wrong graph.
LOGIT_TOLERANCE = 1e-4
BATCH = 1000  # images per onnxruntime / PyTorch call when checking and measuring: bounded memory


class MissingOnnx(UserError):
    """The optional ONNX packages are not installed."""


def require_onnx():
    """The onnx and onnxruntime modules, or a MissingOnnx that says what to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise MissingOnnx(f"ONNX export and evaluation need the packages onnx and onnxruntime ({exc.name} is not"
                          f" installed): {INSTALL_HINT}") from None
    return onnx, onnxruntime


class WithPreprocessing(nn.Module):
    """``net`` behind the exported module's own preprocessing: uint8 pixels in, logits out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The same operations, in the same order, as the exported module's preprocess.
        return self.net((images.float() / 255.0 - MEAN) / STD)


def to_onnx(net: nn.Module) -> bytes:
    """The ONNX model of ``net`` (an eval-mode network over normalised N x 1 x 28 x 28 input)
    with the uint8 preprocessing in front, compacted (see :func:`compact`)."""
    onnx, _ = require_onnx()
    wrapped = WithPreprocessing(net).eval().cpu()
    buffer = io.BytesIO()
    # The TorchScript-based exporter (dynamo=False): it traces these plain convolution stacks
    # exactly, folds each BatchNorm into its convolution (the graph is the four preprocessing
    # nodes, then Conv, Relu, MaxPool, GlobalAveragePool, Flatten), supports opset 17, and needs
    # neither onnxscript nor torch.export's graph capture. It warns that it is deprecated in
    # favour of the dynamo exporter; the warning is about PyTorch's plans, not this model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (torch.zeros(2, 1, 28, 28, dtype=torch.uint8),), buffer, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "N"}, "logits": {0: "N"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    compact(model)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def compact(model) -> None:
    """Rename the graph's inner tensors t0, t1, ... and drop node names, doc strings and the
    intermediate shape annotations (onnxruntime infers them), in place.

    For networks of a few thousand parameters the exporter's tensor names
    ("/net/blocks/blocks.3/conv/Conv_output_0") were a tenth of the fp32 file and over a third of
    the int8 one. Both files are compacted alike, so their sizes compare fairly.
    """
    keep = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        return name if not name or name in keep else names.setdefault(name, f"t{len(names)}")

    for tensor in model.graph.initializer:
        tensor.name = short(tensor.name)
    for node in model.graph.node:
        node.name, node.doc_string = "", ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del model.graph.value_info[:]
    model.doc_string = ""


def session(model: bytes):
    """An onnxruntime CPU session for ``model``, one thread (as the project's CPU workers run)."""
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the quantiser's graphs draw harmless warnings
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _uint8_batch(images) -> np.ndarray:
    array = np.asarray(images.numpy() if isinstance(images, torch.Tensor) else images)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-2:] != (28, 28):
        raise ValueError(f"expected uint8 images shaped Nx28x28 or Nx1x28x28, got {array.dtype} {array.shape}")
    return array.reshape(len(array), 1, 28, 28)


def onnx_logits(model_or_session, images) -> np.ndarray:
    """onnxruntime's logits for uint8 ``images`` (N x 28 x 28 or N x 1 x 28 x 28), BATCH at a time."""
    run = model_or_session if hasattr(model_or_session, "run") else session(model_or_session)
    array = _uint8_batch(images)
    parts = [run.run(["logits"], {"images": array[i : i + BATCH]})[0] for i in range(0, len(array), BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 10), dtype=np.float32)


def torch_logits(net: nn.Module, images) -> np.ndarray:
    """PyTorch's logits for uint8 ``images`` through the same preprocessing, on the CPU, BATCH at a time."""
    wrapped = WithPreprocessing(net).eval().cpu()
    array = torch.from_numpy(_uint8_batch(images))
    with torch.no_grad():
        parts = [wrapped(array[i : i + BATCH]).numpy() for i in range(0, len(array), BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 10), dtype=np.float32)


@dataclass(frozen=True)
class Agreement:
    """How an ONNX model's logits compare with PyTorch's on the same images."""

    images: int
    same_argmax: int
    max_logit_difference: float
    near_ties: int  # images whose top two PyTorch logits are within LOGIT_TOLERANCE: either class is right

    def to_dict(self) -> dict:
        return {"images": self.images, "same_argmax": self.same_argmax,
                "max_logit_difference": self.max_logit_difference, "near_ties": self.near_ties,
                "tolerance": LOGIT_TOLERANCE}


def compare(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    top2 = np.sort(reference, axis=1)[:, -2:] if len(reference) else np.zeros((0, 2))
    return Agreement(images=len(reference), same_argmax=int((reference.argmax(1) == candidate.argmax(1)).sum()),
                     max_logit_difference=float(np.abs(reference - candidate).max()) if len(reference) else 0.0,
                     near_ties=int((top2[:, 1] - top2[:, 0] <= LOGIT_TOLERANCE).sum()))


def check_agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Compare fp32 ONNX logits with PyTorch's; raise WorkFailed unless every logit is within
    LOGIT_TOLERANCE and every argmax agrees (an image whose top two logits tie within the
    tolerance may fall either way)."""
    found = compare(reference, candidate)
    if found.max_logit_difference > LOGIT_TOLERANCE or found.images - found.same_argmax > found.near_ties:
        raise WorkFailed(f"the ONNX model disagrees with the PyTorch network: logits differ by up to"
                         f" {found.max_logit_difference:.3g} (tolerance {LOGIT_TOLERANCE:g}), argmax agrees on"
                         f" {found.same_argmax:,} of {found.images:,} images; nothing was written")
    return found


def accuracy(logits: np.ndarray, labels) -> float:
    """Percent of ``labels`` the logits' argmax gets right."""
    labels = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
    # Rounded to 1e-6: a count over a few thousand images, without float noise (99.53999999999999) in the card.
    return round(100.0 * float((logits.argmax(1) == labels).mean()), 6) if len(labels) else float("nan")


def quantize(model: bytes, calibration_images, per_channel: bool) -> bytes:
    """``model`` statically quantised to int8 (QOperator format: QLinearConv and friends),
    its activation ranges calibrated (min/max) on ``calibration_images`` (uint8, N x 28 x 28).

    QOperator rather than QDQ: for these networks the QDQ graph (a quantise/dequantise pair
    around every tensor) was about as large as the fp32 model it came from (33-38 kB against
    34 kB for the 8k network, before compaction), QOperator's two thirds of it; onnxruntime's
    CPU provider runs both. The preprocessing nodes stay float (Cast, Div, Sub, Div), as does the
    input. Weights are signed int8 and activations unsigned, onnxruntime's default for CPUs.
    """
    onnx, _ = require_onnx()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    array = _uint8_batch(calibration_images)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": array[i : i + 100]} for i in range(0, len(array), 100)])

        def get_next(self):
            return next(self.batches, None)

    # The quantiser reads and writes files only; a private directory holds them for the moment it runs.
    with tempfile.TemporaryDirectory(prefix="mnist-search-int8-") as work:
        source, prepared, target = (os.path.join(work, name) for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        with open(source, "wb") as f:
            f.write(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # onnxruntime's recommended preparation: shapes inferred, constants made initializers
            # (the quantiser finds a conv's bias only as an initializer).
            quant_pre_process(source, prepared)
            quantize_static(prepared, target, Reader(), quant_format=QuantFormat.QOperator, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        quantized = onnx.load(target)
    compact(quantized)
    onnx.checker.check_model(quantized)
    return quantized.SerializeToString()


def evaluate_file(path: str | os.PathLike, images, labels) -> float:
    """Test accuracy of the ONNX model at ``path`` on uint8 ``images``, as deployed: onnxruntime, CPU."""
    _, onnxruntime = require_onnx()
    with open(path, "rb") as f:
        model = f.read()
    try:
        run = session(model)
    except Exception as exc:  # onnxruntime raises its own types for unreadable or foreign models
        raise UserError(f"onnxruntime cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                        ) from None
    inputs = [(i.name, i.type) for i in run.get_inputs()]
    if inputs != [("images", "tensor(uint8)")]:
        raise UserError(f"{path} takes {inputs}, not uint8 'images': it is not an ONNX model exported by mnist-search")
    return accuracy(onnx_logits(run, images), labels)
