"""Training cost of depthwise-separable 3x3 convs against full ones, same structure, same budget.

Builds one trial's structure (default: #164 of the 8k GPU study, the confirmed network) at a
parameter budget both ways, ``separable`` False and True, exactly as the search space does,
and times one ``fit`` epoch of each over the same images, eager and compiled (compiled once
before timing, as a trial pays it once), alternating in one run. Prints images/s per side
(median over rounds) and the separable/full time ratio per mode.

    python bench/separable.py [--budget 8000] [--steps 100] [--rounds 3] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import optuna
import torch

from mnist_search.models import build, count_params
from mnist_search.search.space import sample_choices, spec_from_choices
from mnist_search.trainer import Split, TrainConfig, fit, load_mnist, resolve_device

BATCH = 256  # #164's batch size


def epoch_seconds(model, train: Split, probe: Split, device, compiled: bool) -> float:
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=0.01, momentum=0.9, rotation=1.3)
    started = time.perf_counter()
    fit(model, config, train, probe, device=device, compile_model=compiled)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///results/search-gpu/study.db")
    parser.add_argument("--study-name", default="mnist-search")
    parser.add_argument("--trial", type=int, default=164)
    parser.add_argument("--budget", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    params = optuna.load_study(study_name=args.study_name, storage=args.storage).trials[args.trial].params
    specs = {kind: spec_from_choices(sample_choices(optuna.trial.FixedTrial({**params, "separable": kind == "separable"}),
                                                    args.budget))
             for kind in ("full", "separable")}
    data = load_mnist(args.data_dir)
    images = args.steps * BATCH
    train = Split(data.train.images[:images], data.train.labels[:images])
    probe = Split(data.val.images[:BATCH], data.val.labels[:BATCH])
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; trial #{args.trial} at {args.budget:,} params; "
          f"{args.steps} steps x batch {BATCH}, {args.rounds} rounds")
    for kind, spec in specs.items():
        print(f"  {kind:>9}: {count_params(spec):,} params, {len(spec.layers)} layers")

    models = {kind: build(spec) for kind, spec in specs.items()}
    for kind, model in models.items():  # compile and warm up (not timed)
        started = time.perf_counter()
        epoch_seconds(model, train, probe, device, compiled=True)
        print(f"compile + first epoch, {kind}: {time.perf_counter() - started:.1f} s")
        epoch_seconds(build(specs[kind]), train, probe, device, compiled=False)

    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for kind in specs:
            times.setdefault((kind, "compiled"), []).append(epoch_seconds(models[kind], train, probe, device, True))
            times.setdefault((kind, "eager"), []).append(
                epoch_seconds(build(specs[kind]), train, probe, device, False))
    for (kind, mode), seconds in times.items():
        print(f"{kind:>9} {mode:>8}: {images / statistics.median(seconds):8.0f} images/s (median of {args.rounds})")
    for mode in ("eager", "compiled"):
        ratio = statistics.median(times[("separable", mode)]) / statistics.median(times[("full", mode)])
        print(f"separable/full time, {mode}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
