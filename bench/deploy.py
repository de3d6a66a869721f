"""Inference speed of an export's three forms on the 10,000 MNIST test images, one CPU thread,
and the exported module's peak memory classifying all 60,000 training images.

For each export directory (holding best_net.py, best_net.safetensors, best_net.onnx and
best_net.int8.onnx): the module's own ``predict`` (PyTorch, its default batches of 1,000), and
onnxruntime on the fp32 and int8 models (batches of 1,000 uint8 images), alternating, ``--rounds``
times each; prints the median images per second of each and the accuracies. ``--memory`` then
runs the first directory's ``predict`` on the 60,000 training images in a fresh process and
prints its peak resident set size.

    OMP_NUM_THREADS=1 python bench/deploy.py results/search-gpu [...] [--rounds 3 (0: none)] [--memory] [--data-dir DATA]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from mnist_search.models import onnx_export as ox
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", action="store_true")
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
