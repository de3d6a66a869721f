"""What the weight average costs: one epoch of fit() with and without ``ema_epochs``, alternating.

Same network (seed001-exp5) and recipe, one epoch over ``--train`` training images and an
evaluation of the 10k validation split, as a search trial's epoch does. The averaged run
does two things more: the average's update after every step (three foreach kernels over
the weights) and a second evaluation per epoch (the raw weights' accuracy). Prints the
median seconds per epoch of each and, last, ``averaging costs: X.XXx`` (averaged / plain).
On CUDA both replay the trainer's CUDA graph, with the update inside it.

    python bench/averaging.py [--train 50000] [--rounds 3] [--device auto] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnist_search.models import build, get_preset
from mnist_search.trainer import Split, TrainConfig, fit, load_mnist, resolve_device
from mnist_search.trainer.runtime import Runtime


def epoch_seconds(spec, config: TrainConfig, train: Split, val: Split, device: torch.device) -> float:
    model = build(spec)
    started = time.perf_counter()
    fit(model, config, train, val, runtime=Runtime(device=device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50_000, help="training images per epoch (default 50000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_mnist(args.data_dir, download=False)
    train = Split(data.train.images[: args.train], data.train.labels[: args.train])
    spec = get_preset("seed001-exp5").spec
    plain = TrainConfig(epochs=1, batch_size=128, lr=0.01, momentum=0.9, rotation=7.0)
    averaged = plain.replace(ema_epochs=1.0)
    print(f"one epoch of {len(train):,} images + {len(data.val):,} evaluated, seed001-exp5, batch 128, on {device}")
    epoch_seconds(spec, averaged, Split(train.images[:1280], train.labels[:1280]), data.val, device)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "averaged": []}
    for round_ in range(args.rounds):
        for name, config in (("plain", plain), ("averaged", averaged)):
            times[name].append(epoch_seconds(spec, config, train, data.val, device))
            print(f"round {round_ + 1}: {name:<8} {times[name][-1]:.2f} s", flush=True)
    plain_s, averaged_s = statistics.median(times["plain"]), statistics.median(times["averaged"])
    print(f"median: plain {plain_s:.2f} s, averaged {averaged_s:.2f} s per epoch")
    print(f"averaging costs: {averaged_s / plain_s:.2f}x")


if __name__ == "__main__":
    main()
