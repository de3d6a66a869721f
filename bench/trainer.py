"""Training throughput: this trainer against the pipeline the seeds use, alternating in one run.

Same network (seed001-exp5), same augmentation (rotation +-7 degrees), batch 128, SGD.
(a) ``mnist_search.trainer.fit``: device-resident data, batched on-device augmentation;
    measured eager and with ``compile_model=True`` (compiled once before timing: a search
    pays the compile once per trial, see BENCHMARKS.md).
(b) the seeds' pipeline: ``torchvision.datasets.MNIST`` with per-image PIL transforms
    (RandomRotation, ToTensor, Normalize), a ``DataLoader`` (batch 128, shuffle), and the
    seeds' loop (log_softmax + nll_loss, ``.item()`` per step for the progress bar).

Prints images/s per side (median over rounds) and, last, ``speedup: X.XXx`` of the
trainer's compiled mode over (b). On CUDA both trainer rows replay a CUDA graph (the
trainer's CUDA path; bench/search_gpu.py measures it).

    python bench/trainer.py [--steps 200] [--rounds 3] [--device auto] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from mnist_search.models import build, get_preset
from mnist_search.trainer import Split, TrainConfig, fit, load_mnist, resolve_device
from mnist_search.trainer.data import MNIST_MEAN, MNIST_STD
from mnist_search.trainer.runtime import Runtime

BATCH = 128
ROTATION = 7.0


def run_trainer(spec, data: Split, probe: Split, device, compiled_model=None) -> float:
    """Seconds for one epoch of fit() over ``data`` (steps x 128 images)."""
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=0.01, momentum=0.9, rotation=ROTATION)
    model = compiled_model if compiled_model is not None else build(spec)
    started = time.perf_counter()
    fit(model, config, data, probe, runtime=Runtime(device=device, compile=compiled_model is not None))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def run_seeds_pipeline(spec, root: str, steps: int, device) -> float:
    """Seconds for ``steps`` training steps of the seeds' Dataset/DataLoader pipeline."""
    tf = transforms.Compose(
        [transforms.RandomRotation(ROTATION, fill=0), transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    dataset = datasets.MNIST(root, train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, pin_memory=device.type == "cuda")
    model = build(spec).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    started = time.perf_counter()
    correct = processed = 0
    for step, (images, labels) in enumerate(loader):
        if step == steps:
            break
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        output = F.log_softmax(model(images), dim=1)
        loss = F.nll_loss(output, labels)
        loss.backward()
        optimizer.step()
        correct += output.argmax(dim=1).eq(labels).sum().item()
        processed += len(images)
        _ = f"Loss={loss.item()} Batch_id={step} Accuracy={100 * correct / processed:0.2f}"
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_mnist(args.data_dir)
    spec = get_preset("seed001-exp5").spec
    images = args.steps * BATCH
    train = Split(data.train.images[:images], data.train.labels[:images])
    probe = Split(data.val.images[:BATCH], data.val.labels[:BATCH])
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; {args.steps} steps x batch {BATCH}, {args.rounds} rounds")

    compiled = build(spec)
    started = time.perf_counter()
    run_trainer(spec, train, probe, device, compiled_model=compiled)  # compiles and warms up
    print(f"compile + first epoch of the compiled trainer: {time.perf_counter() - started:.1f} s (not timed below)")
    run_trainer(spec, train, probe, device)  # warm-up eager kernels
    run_seeds_pipeline(spec, str(data.root), 10, device)

    times: dict[str, list[float]] = {"trainer (compiled)": [], "trainer (eager)": [], "seeds pipeline": []}
    for _ in range(args.rounds):
        times["trainer (compiled)"].append(run_trainer(spec, train, probe, device, compiled_model=compiled))
        times["trainer (eager)"].append(run_trainer(spec, train, probe, device))
        times["seeds pipeline"].append(run_seeds_pipeline(spec, str(data.root), args.steps, device))
    rate = {label: images / statistics.median(seconds) for label, seconds in times.items()}
    for label, per_second in rate.items():
        print(f"{label:>20}: {per_second:9.0f} images/s  (median of {args.rounds})")
    print(f"eager speedup: {rate['trainer (eager)'] / rate['seeds pipeline']:.2f}x")
    print(f"speedup: {rate['trainer (compiled)'] / rate['seeds pipeline']:.2f}x")


if __name__ == "__main__":
    main()
