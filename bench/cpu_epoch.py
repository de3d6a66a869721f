"""One trial's CPU epoch, eager and compiled: dropout's noise outside the graph vs the generator draw inside it, and separable convs.

Builds one trial's structure (default: #164 of the 8k GPU study, dropout 0.005 after every
conv) at a parameter budget and times one ``fit`` epoch over the same images, alternating
in one run:
- eager;
- compiled, dropout noise drawn outside the graph (what the trainer does);
- compiled, each layer drawing its mask from the run's generator inside the model (the
  alternative, which breaks the graph at every block), reproduced by giving the
  trainer no dropout shapes;
- compiled and eager with the dropout removed, for the cost of dropout itself;
- compiled and eager with depthwise-separable 3x3 convs (``separable``), widths rescaled to
  the same budget as the search space does.
Each measurement is the second epoch of a two-epoch ``fit`` (a trial compiles once, in its
first epoch, and every fit compiles afresh). Prints images/s per row (median over rounds) and
the speedup of the compiled step over the generator draw.

    python bench/cpu_epoch.py [--budget 8000] [--steps 60] [--rounds 3] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from unittest import mock

import optuna
import torch

from mnist_search.levers import REBUILD
from mnist_search.models import ArchSpec, build, count_params
from mnist_search.search.space import sample_choices, spec_from_choices
from mnist_search.trainer import Split, TrainConfig, fit, load_mnist, loop
from mnist_search.trainer.runtime import Runtime

BATCH = 256  # #164's batch size


def second_epoch_seconds(spec, train: Split, probe: Split, compiled: bool) -> float:
    config = TrainConfig(epochs=2, batch_size=BATCH, lr=0.01, momentum=0.9, rotation=1.3)
    return fit(build(spec), config, train, probe, runtime=Runtime(device="cpu", compile=compiled)).history[1].seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///results/search-gpu/study.db")
    parser.add_argument("--study-name", default="mnist-search")
    parser.add_argument("--trial", type=int, default=164)
    parser.add_argument("--budget", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    stored = optuna.load_study(study_name=args.study_name, storage=args.storage).trials[args.trial].params
    params = {**REBUILD, **stored}  # a trial from before `separable` existed trained full convs
    def at_budget(**changes) -> ArchSpec:
        return spec_from_choices(sample_choices(optuna.trial.FixedTrial({**params, **changes}), args.budget))

    with_dropout, without, separable = at_budget(), at_budget(dropout=0.0), at_budget(separable=True)
    data = load_mnist(args.data_dir)
    images = args.steps * BATCH
    train = Split(data.train.images[:images], data.train.labels[:images])
    probe = Split(data.val.images[:BATCH], data.val.labels[:BATCH])
    print(f"device: CPU ({torch.get_num_threads()} threads); torch {torch.__version__}; trial #{args.trial} "
          f"(dropout {params['dropout']:.4f}) at {args.budget:,} params; {args.steps} steps x batch {BATCH}, "
          f"{args.rounds} rounds")
    for label, spec in (("full", with_dropout), ("separable", separable)):
        print(f"  {label}: {count_params(spec):,} params, {len(spec.layers)} layers")

    generator_draw = mock.patch.object(loop, "_dropout_input_shapes", return_value={})
    rows = {  # label -> (spec, compiled, context)
        "eager": (with_dropout, False, None),
        "compiled, noise outside the graph": (with_dropout, True, None),
        "compiled, generator draw (before)": (with_dropout, True, generator_draw),
        "eager, no dropout": (without, False, None),
        "compiled, no dropout": (without, True, None),
        "eager, separable": (separable, False, None),
        "compiled, separable": (separable, True, None),
    }

    def timed(label: str) -> float:
        spec, compiled, context = rows[label]
        with context or contextlib.nullcontext():
            return second_epoch_seconds(spec, train, probe, compiled)

    times: dict[str, list[float]] = {label: [] for label in rows}
    for _ in range(args.rounds):
        for label in rows:
            times[label].append(timed(label))
            print(f"  {label}: {times[label][-1]:.1f} s", flush=True)
    rate = {label: images / statistics.median(seconds) for label, seconds in times.items()}
    for label, per_second in rate.items():
        print(f"{label:>34}: {per_second:7.0f} images/s (median of {args.rounds})")
    print(f"compiled speedup, noise outside vs generator draw: "
          f"{rate['compiled, noise outside the graph'] / rate['compiled, generator draw (before)']:.2f}x")
    print(f"compiled (noise outside) vs eager: {rate['compiled, noise outside the graph'] / rate['eager']:.2f}x")
    for mode, full in (("eager", "eager"), ("compiled", "compiled, noise outside the graph")):
        print(f"separable/full epoch time, {mode}: {rate[full] / rate[f'{mode}, separable']:.2f}x")


if __name__ == "__main__":
    main()
