"""Memory layout on the CPU: contiguous against channels_last, for evaluation and for a compiled step.

Backs two choices in mnist_search/trainer/loop.py: evaluation runs on a channels_last
copy of the model on the CPU, and a compiled CPU training step runs in channels_last.
Alternates the variants over rounds in one run and prints the median time of each and
the ratio.

    python bench/layouts.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from mnist_search.models import build, get_preset
from mnist_search.trainer.loop import evaluate

BATCH = 128


def time_eval(model, images, labels, channels_last: bool) -> float:
    model = copy.deepcopy(model).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(labels), 500):
            model(images[start : start + 500]).argmax(1)
    return time.perf_counter() - started


def make_step(memory_format):
    model = build(get_preset("seed001-exp5").spec).to(memory_format=memory_format)
    compiled = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(images, labels):
        loss = F.cross_entropy(compiled(images.contiguous(memory_format=memory_format)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_steps(step, images, labels, steps: int = 40) -> float:
    started = time.perf_counter()
    for i in range(steps):
        step(images[i % 4 * BATCH : (i % 4 + 1) * BATCH], labels[i % 4 * BATCH : (i % 4 + 1) * BATCH])
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = torch.randn(10_000, 1, 28, 28), torch.randint(0, 10, (10_000,))
    model = build(get_preset("seed001-exp5").spec)
    evaluate(model, images[:500], labels[:500])  # warm up oneDNN
    steps = {"contiguous": make_step(torch.contiguous_format), "channels_last": make_step(torch.channels_last)}
    for step in steps.values():  # compile both before timing
        time_steps(step, images, labels, steps=5)

    evals = {"contiguous": [], "channels_last": []}
    step_times = {"contiguous": [], "channels_last": []}
    for _ in range(args.rounds):
        for layout in evals:
            evals[layout].append(time_eval(model, images, labels, channels_last=layout == "channels_last"))
            step_times[layout].append(time_steps(steps[layout], images, labels))
    print(f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}, seed001-exp5, median of {args.rounds}")
    for layout in evals:
        print(f"{layout:>14}: eval of 10k images {statistics.median(evals[layout]):.2f} s; "
              f"compiled train step {1e3 * statistics.median(step_times[layout]):.1f} ms")
    print(f"eval speedup of channels_last: {statistics.median(evals['contiguous']) / statistics.median(evals['channels_last']):.2f}x")
    print(f"compiled-step speedup of channels_last: "
          f"{statistics.median(step_times['contiguous']) / statistics.median(step_times['channels_last']):.2f}x")


if __name__ == "__main__":
    main()
