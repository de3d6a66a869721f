"""Inference speed of an export's three forms on the 10,000 MNIST test images, one CPU thread,
and the exported module's peak memory classifying all 60,000 training images.

For each export directory (holding best_net.py, best_net.safetensors, best_net.onnx and
best_net.int8.onnx): the module's own ``predict`` (PyTorch, its default batches of 1,000), and
onnxruntime on the fp32 and int8 models (batches of 1,000 uint8 images), alternating, ``--rounds``
times each; prints the median images per second of each and the accuracies. ``--memory`` then
runs the first directory's ``predict`` on the 60,000 training images in a fresh process and
prints its peak resident set size.

``--bytes`` prints where each directory's ONNX files' bytes go (weights, biases, scales and
zero points, graph nodes, the tensors' own framing, the rest), the floor of an int8 file
holding nothing but its int8 weights and int32 biases (against the fp32 weights and biases),
and what each step of the export's compaction, folding the normalisation into the first
convolution, and QDQ instead of QOperator do to both files, rebuilt from the module's weights
and calibrated as ``export`` calibrates them (sizes, and the int8 test accuracy at each step).

    OMP_NUM_THREADS=1 python bench/deploy.py results/search-gpu [...] [--rounds 3 (0: none)] [--memory] [--bytes]
        [--data-dir DATA]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from mnist_search.models import onnx_export as ox
from mnist_search.search import deploying
from mnist_search.trainer import load_mnist


def load_module(directory: Path):
    spec = importlib.util.spec_from_file_location("best_net", directory / "best_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(run) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    labels = run()
    return time.perf_counter() - started, labels


# Bytes per element of the ONNX tensor types these models use.
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 6: 4, 7: 8}  # float, uint8, int8, int32, int64
# The inputs of a QLinearConv: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias.
QLINEARCONV_ROLES = {1: "activation scales and zero points", 2: "activation scales and zero points", 3: "weights",
                     4: "weight scales and zero points", 5: "weight scales and zero points",
                     6: "activation scales and zero points", 7: "activation scales and zero points", 8: "biases"}


def payload(tensor) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64)) * ELEMENT_BYTES.get(tensor.data_type, 4)


def breakdown(model) -> dict[str, int]:
    """The serialised model's bytes by what they hold; the values sum to the file's size."""
    graph = model.graph
    users = defaultdict(list)
    for node in graph.node:
        for slot, name in enumerate(node.input):
            users[name].append((node, slot))
    first_conv = next(i for i, node in enumerate(graph.node) if node.op_type in ("Conv", "QLinearConv",
                                                                                 "QuantizeLinear", "DequantizeLinear"))
    preprocessing = {id(node) for node in graph.node[:first_conv]}
    parts: dict[str, int] = defaultdict(int)
    for tensor in graph.initializer:
        role = "other constants"
        for node, slot in users[tensor.name]:
            if id(node) in preprocessing:
                role = "preprocessing"
            elif node.op_type == "Conv":
                role = {1: "weights", 2: "biases"}[slot]
            elif node.op_type == "QLinearConv":
                role = QLINEARCONV_ROLES[slot]
            elif node.op_type == "DequantizeLinear" and slot == 0:  # QDQ: a quantised weight or bias
                after = users[node.output[0]]
                role = {1: "weights", 2: "biases"}.get(after[0][1] if after else None, "other constants")
            elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                role = ("weight scales and zero points" if node.input[0] in {t.name for t in graph.initializer}
                        else "activation scales and zero points")
            elif node.op_type.startswith("QLinear"):
                role = "activation scales and zero points"
            break
        size = len(tensor.SerializeToString()) + 2  # its own bytes, and its field tag and length in the graph
        parts[f"payload: {role}"] += payload(tensor)
        parts["tensors' framing (names, types, shapes)"] += size - payload(tensor)
    for node in graph.node:
        kind = "preprocessing" if id(node) in preprocessing else node.op_type
        parts[f"nodes: {kind}"] += len(node.SerializeToString()) + 2
    parts["the rest (opset imports, producer, graph name, input and output types)"] = (
        len(model.SerializeToString()) - sum(parts.values()))
    return dict(parts)


def bytes_report(directory: Path, data) -> None:
    import onnx

    print(f"\n{directory}:")
    files = {name: onnx.load(directory / f"best_net{suffix}") for name, suffix in (("fp32", ".onnx"),
                                                                                 ("int8", ".int8.onnx"))}
    sizes = {name: (directory / f"best_net{suffix}").stat().st_size for name, suffix in (("fp32", ".onnx"),
                                                                                          ("int8", ".int8.onnx"))}
    shares = {name: breakdown(model) for name, model in files.items()}
    print(f"  the committed files: fp32 {sizes['fp32']:,} B, int8 {sizes['int8']:,} B"
          f" ({sizes['int8'] / sizes['fp32']:.3f}x; a quarter is {sizes['fp32'] / 4:,.0f} B)")
    def cell(name: str, what: str) -> str:
        value = shares[name].get(what, 0)
        return f"{value:7,d} B {100 * value / sizes[name]:5.1f}%" if value else f"{'-':>16s}"

    print(f"    {'':72s} {'fp32':>16s}   {'int8':>16s}")
    for what in sorted(set(shares["fp32"]) | set(shares["int8"]),
                       key=lambda k: (-shares["int8"].get(k, 0), -shares["fp32"].get(k, 0))):
        print(f"    {what:72s} {cell('fp32', what)}   {cell('int8', what)}")
    weights, biases = shares["fp32"].get("payload: weights", 0) // 4, shares["fp32"].get("payload: biases", 0) // 4
    print(f"  {weights:,} weights and {biases:,} biases: int8 weights and int32 biases alone are {weights + 4 * biases:,} B,"
          f" {(weights + 4 * biases) / (4 * weights + 4 * biases):.3f}x the fp32 weights and biases"
          f" ({4 * (weights + biases):,} B)")

    module = load_module(directory)
    net = module.load_weights(str(directory / "best_net.safetensors"))
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(deploying.SPLIT_SEED))
    calibration = data.train.images[order[:min(deploying.CALIBRATION_IMAGES, len(data.train) // 2)]]
    test = data.test

    def row(label: str, fp32: bytes, fmt: str = "QOperator", steps: int | None = None) -> None:
        int8 = {pc: ox.quantize(fp32, calibration, per_channel=pc, quant_format=fmt, steps=steps) for pc in (True, False)}
        accuracy = {pc: ox.accuracy(ox.onnx_logits(model, test.images), test.labels) for pc, model in int8.items()}
        print(f"    {label:68s} fp32 {len(fp32):7,d} | int8 per-channel {len(int8[True]):7,d}"
              f" ({len(int8[True]) / len(fp32):.3f}x, test {accuracy[True]:.2f}%) | per-tensor {len(int8[False]):7,d}"
              f" ({len(int8[False]) / len(fp32):.3f}x, test {accuracy[False]:.2f}%)")

    print("  rebuilt from the weights, bytes:")
    plain = {"batchnorm": False, "normalisation": False}
    row("as the exporter and the quantiser write them", ox.to_onnx(net, **plain, steps=0), steps=0)
    for steps, (what, _) in enumerate(ox.COMPACTION, start=1):
        row(f"+ {what}", ox.to_onnx(net, **plain, steps=steps), steps=steps)
    row("+ BatchNorms after a ReLU and linear biases moved into the next conv", ox.to_onnx(net, normalisation=False))
    folded = ox.to_onnx(net)
    row("+ the normalisation folded into the first convolution", folded)
    row("  the same in QDQ format instead of QOperator", folded, fmt="QDQ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--bytes", action="store_true")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_mnist(args.data_dir, val_size=0)
    images, labels = data.test.images, data.test.labels.numpy()
    print(f"torch {torch.__version__}, onnxruntime {ox.require_onnx()[1].__version__}, one thread, "
          f"{len(labels):,} test images, median of {args.rounds}")
    for directory in args.exports if args.rounds else ():  # --rounds 0: only the memory figure
        module = load_module(directory)
        net = module.load_weights(str(directory / "best_net.safetensors"))
        sessions = {name: ox.session((directory / f"best_net{suffix}").read_bytes())
                    for name, suffix in (("onnx fp32", ".onnx"), ("onnx int8", ".int8.onnx"))}
        runs = {"pytorch predict": lambda: module.predict(images, model=net).numpy()}
        runs |= {name: (lambda s=s: ox.onnx_logits(s, images).argmax(1)) for name, s in sessions.items()}
        for run in runs.values():  # warm-up: first-call allocations and kernel selection
            run()
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        accuracy = {}
        for _ in range(args.rounds):
            for name, run in runs.items():
                took, predicted = timed(run)
                seconds[name].append(took)
                accuracy[name] = 100.0 * float((predicted == labels).mean())
        base = len(labels) / statistics.median(seconds["pytorch predict"])
        for name in runs:
            rate = len(labels) / statistics.median(seconds[name])
            print(f"{directory}: {name:16s} {rate:9,.0f} images/s ({rate / base:.2f}x PyTorch), "
                  f"test accuracy {accuracy[name]:.2f}%")
    if args.bytes:
        for directory in args.exports:
            bytes_report(directory, data)
    if args.memory:
        directory = args.exports[0]
        # The images as a user has them: the raw IDX file read with numpy (47 MB of uint8), not
        # through the trainer's loader, whose own peak (the decoded splits) would hide predict's.
        raw = data.root / "MNIST" / "raw" / "train-images-idx3-ubyte"
        script = textwrap.dedent(f"""
            import importlib.util
            import numpy as np
            import torch
            spec = importlib.util.spec_from_file_location("best_net", {str(directory / 'best_net.py')!r})
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            images = np.fromfile({str(raw)!r}, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
            def peak_kib():  # this process's own peak (ru_maxrss would include the parent's, over exec)
                status = dict(line.split(":", 1) for line in open("/proc/self/status"))
                return int(status["VmHWM"].split()[0])
            before = peak_kib()
            labels = module.predict(images)
            peak = peak_kib()
            print(f"{directory}: predict on {{len(labels):,}} training images: peak RSS {{peak / 1024:.0f}} MiB"
                  f" (before predict {{before / 1024:.0f}} MiB)")
        """)
        subprocess.run([sys.executable, "-c", script], check=True)


if __name__ == "__main__":
    main()
