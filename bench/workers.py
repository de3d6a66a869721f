"""CPU threads per local worker: K worker processes training side by side, as `run --workers K` starts them.

Each child trains the same network (default: the structure of the best 2,000-parameter trial of
the GPU study, budget-2k #58; ``--preset`` for another) with plain eager SGD steps on a fixed
random batch, as many steps as the others, at the same time. Three variants, alternated:
``alone``: one worker with the inherited environment (PyTorch then starts one thread per core),
the reference; ``default``: K workers, each so; ``split``: K workers with the environment `run
--workers` gives them (``worker_env``: the cores split between the workers). Prints, per round,
the children's total images per second, then the medians and, last, ``split / default: X.XXx``.

    python bench/workers.py [--workers 2] [--steps 600] [--rounds 3] [--batch 64] [--preset NAME]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from mnist_search.commands.run import worker_env


def child(steps: int, batch: int, preset: str | None) -> None:
    import torch

    from mnist_search.models import build, get_preset
    from mnist_search.search.space import Choices, spec_from_choices

    spec = get_preset(preset).spec if preset else spec_from_choices(Choices(
        block1=(7, 4, 8, 4), block2=(5, 12), squeeze="after_pool", squeeze_width=4, head="gap_conv", head_post=("bn",)))
    model = build(spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(images).flatten(1), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    print(torch.get_num_threads(), steps * batch / (time.perf_counter() - started))


def round_throughput(workers: int, env: dict[str, str], args: argparse.Namespace) -> tuple[float, str]:
    command = [sys.executable, __file__, "--child", "--steps", str(args.steps), "--batch", str(args.batch)]
    command += ["--preset", args.preset] if args.preset else []
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    # Each child times its own steps (not its start-up); with enough steps they overlap almost entirely.
    reports = [child.communicate()[0].split() for child in children]
    return sum(float(speed) for _, speed in reports), "+".join(threads for threads, _ in reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.steps, args.batch, args.preset)

    inherited = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    variants = {"alone": (1, inherited), "default": (args.workers, inherited),
                "split": (args.workers, worker_env(inherited, "sqlite:///unused.db", args.workers))}
    results: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(args.rounds):
        for name, (workers, env) in variants.items():
            images_per_second, threads = round_throughput(workers, env, args)
            results[name].append(images_per_second)
            print(f"round {index + 1} {name:8s} threads {threads:6s} {images_per_second:8.0f} img/s (all workers)")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"median {name:8s} {value:8.0f} img/s")
    print(f"split / alone: {medians['split'] / medians['alone']:.2f}x")
    print(f"split / default: {medians['split'] / medians['default']:.2f}x")


if __name__ == "__main__":
    main()
