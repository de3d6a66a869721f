"""K seeds of one network: trained as one fused network (fit_seeds) against K fits one after another.

Three sides: ``sequential`` (K ``fit`` calls, their default layout), ``fused`` (``fit_seeds``
with its default layout: channels_last on the CPU) and ``fused-contiguous`` (``fit_seeds``
with ``channels_last=False``, to show what the default is chosen against). Same preset, same recipe (SGD, momentum 0.9, rotation 7), ``--steps`` training steps of
batch 128 per seed (one epoch over the first steps x 128 training images) and one
evaluation on 500 validation images per seed; the sides alternate, in a rotating order, within each round.
Compiled (``--compile``), each fit compiles its own network and the timing includes it, as a
search pays it once per trial: K compiles on the sequential side, one on the fused side.

Prints, per K, the median seconds of each side and ``K=k fused speedup: X.XXx``
(sequential seconds / fused seconds, > 1 means fusing is faster), likewise for fused-contiguous.

    python bench/fused_seeds.py [--copies 2 3] [--steps 300] [--rounds 3] [--preset seed001-exp5]
                                [--device cpu] [--compile] [--sides sequential fused fused-contiguous]
                                [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnist_search.models import get_preset
from mnist_search.trainer import Split, TrainConfig, build_seeded, fit, fit_seeds, load_mnist, resolve_device
from mnist_search.trainer.runtime import Runtime

BATCH = 128
PROBE = 500


def timed(run) -> float:
    started = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="seed001-exp5")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--sides", nargs="+", default=["sequential", "fused", "fused-contiguous"],
                        choices=["sequential", "fused", "fused-contiguous"])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_mnist(args.data_dir)
    spec = get_preset(args.preset).spec
    train = Split(data.train.images[: args.steps * BATCH], data.train.labels[: args.steps * BATCH])
    probe = Split(data.val.images[:PROBE], data.val.labels[:PROBE])
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=0.01, momentum=0.9, rotation=7.0)
    options = dict(device=device, compile=args.compile)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; {args.preset}; {args.steps} steps x batch {BATCH} per seed; "
          f"{'compiled (compile timed)' if args.compile else 'eager'}; {args.rounds} rounds")

    def sequential(seeds):
        for seed in seeds:
            fit(build_seeded(spec, seed), config.replace(seed=seed), train, probe, Runtime(**options))

    def fused(seeds, channels_last=None):
        fit_seeds(spec, config, seeds, train, probe, Runtime(channels_last=channels_last, **options))

    every_side = {"sequential": sequential, "fused": fused,
                  "fused-contiguous": lambda seeds: fused(seeds, channels_last=False)}
    sides = {name: every_side[name] for name in args.sides}

    small = Split(train.images[: 4 * BATCH], train.labels[: 4 * BATCH])
    fit_seeds(spec, config, [0, 1], small, probe, runtime=Runtime(device=device))  # warm up kernels and allocators
    fit(build_seeded(spec, 0), config, small, probe, runtime=Runtime(device=device))

    for copies in args.copies:
        seeds = list(range(copies))
        times: dict[str, list[float]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            names = list(sides)
            for side in names[round_ % len(names):] + names[: round_ % len(names)]:
                times[side].append(timed(lambda: sides[side](seeds)))
        median = {side: statistics.median(seconds) for side, seconds in times.items()}
        images = copies * args.steps * BATCH
        for side, seconds in median.items():
            print(f"K={copies} {side:>16}: {seconds:7.1f} s  {images / seconds:7.0f} img/s over all seeds  "
                  f"(rounds: {', '.join(f'{s:.1f}' for s in times[side])})")
        for side in ("fused-contiguous", "fused"):
            if side in median and "sequential" in median:
                print(f"K={copies} {side} speedup: {median['sequential'] / median[side]:.2f}x")


if __name__ == "__main__":
    main()
