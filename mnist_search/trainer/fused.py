"""Several seeds of one architecture trained at once, as one horizontally fused network, and
the one entry that trains a network's seeds: fused when it can, else one after another.

Small networks leave a device mostly idle per step; K seeds fused into one network of K
times the channels take one step where K separate runs would take K (fusion.py says how).
The optimizers, LR schedules and the weight average are element-wise and the loss is the
sum of each copy's own mean loss, so every seed trains as its own ``fit`` would, up to
floating-point error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from mnist_search.errors import ConfigError
from mnist_search.models import ArchSpec, SpecNet
from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.data import Split
from mnist_search.trainer.fusion import fusable, fuse, seed_groups, unfuse
from mnist_search.trainer.loop import BatchCallback, CopiesEpochCallback, FitResult, fit, fit_copies
from mnist_search.trainer.metrics import EpochMetrics
from mnist_search.trainer.runtime import Runtime
from mnist_search.trainer.setup import build_seeded

# (epoch, the indices into ``seeds`` that finished it, their metrics: None for a diverged seed)
SeedsEpochCallback = Callable[[int, list[int], list[EpochMetrics | None]], None]
# (index into ``seeds`` of the seed trained, or None when a fused group trains, step, steps per epoch)
SeedsBatchCallback = Callable[[int | None, int, int], None]


@dataclass
class SeedFit:
    """One seed's run: its seed, its history and status, and its trained network."""

    seed: int
    result: FitResult
    model: SpecNet


def fit_seeds(
    spec: ArchSpec,
    config: TrainConfig,
    seeds: Sequence[int],
    train: Split,
    evaluate_on: Split,
    runtime: Runtime | None = None,
    *,
    on_epoch: CopiesEpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    teacher: nn.Module | None = None,
) -> list[SeedFit]:
    """Train one network of ``spec`` per seed, all at once as ONE fused network, and return one
    ``SeedFit`` per seed, in order.

    Seed ``s`` is the run ``fit(build_seeded(spec, s), config.replace(seed=s), ...)`` would
    be: the same initial weights, batch order, augmentation and dropout masks. Its model is
    an ordinary network of ``spec`` (on the CPU) holding its final weights (the averaged
    ones when ``config.ema_epochs`` is set, as ``fit`` keeps).

    ``on_epoch(epoch, metrics)`` runs after every epoch with one EpochMetrics per seed (in
    the order of ``seeds``; None for a seed that has diverged) and may raise to stop all
    seeds. A seed that diverges gets status "diverged" and stops being scored; the others
    train on. The other arguments are ``fit``'s.
    """
    if not seeds:
        raise ConfigError("fit_seeds needs at least one seed")
    configs = [config.replace(seed=seed) for seed in seeds]
    fused = fuse(spec, [build_seeded(spec, seed) for seed in seeds])
    results = fit_copies(fused, configs, train, evaluate_on, runtime, on_epoch=on_epoch, on_batch=on_batch,
                         teacher=teacher)
    models = unfuse(spec, fused)
    return [SeedFit(seed, result, model) for seed, result, model in zip(seeds, results, models, strict=True)]


def trains_fused(spec: ArchSpec, seeds: int, fuse_seeds: bool) -> bool:
    """Whether :func:`train_seeds` trains ``seeds`` seeds of ``spec`` as a fused network."""
    return seeds > 1 and fuse_seeds and fusable(spec)


def train_seeds(
    spec: ArchSpec,
    config: TrainConfig,
    seeds: Sequence[int],
    train: Split,
    evaluate_on: Split,
    runtime: Runtime | None = None,
    *,
    fuse_seeds: bool = True,
    on_epoch: SeedsEpochCallback | None = None,
    on_batch: SeedsBatchCallback | None = None,
    teacher: nn.Module | None = None,
    stop_at_divergence: bool = False,
) -> list[SeedFit]:
    """Train one network of ``spec`` per seed and return one ``SeedFit`` per seed trained, in order.

    With ``fuse_seeds`` and a network fused training supports, the seeds train together
    (``fit_seeds``), in as few groups as the width limit allows (``seed_groups``); otherwise
    one after another (``fit``). Either way each seed trains as its own ``fit`` would.
    ``on_epoch(epoch, indices, metrics)`` runs once per group (or seed) and epoch with the
    indices into ``seeds`` that finished it; ``on_batch(index, step, steps)`` after every
    batch, ``index`` None for a fused group. With ``stop_at_divergence`` no further group or
    seed trains once one seed has diverged (its SeedFit is the last returned).
    """
    if not seeds:
        raise ConfigError("train_seeds needs at least one seed")
    fused = trains_fused(spec, len(seeds), fuse_seeds)
    groups = _index_groups(seed_groups(spec, seeds)) if fused else [[index] for index in range(len(seeds))]
    fitted: list[SeedFit] = []
    for group in groups:
        def epoch_done(epoch: int, metrics: list[EpochMetrics | None], group: list[int] = group) -> None:
            if on_epoch is not None:
                on_epoch(epoch, group, metrics)

        def batch_done(step: int, steps: int, index: int | None = None if fused else group[0]) -> None:
            on_batch(index, step, steps)

        batches = batch_done if on_batch is not None else None
        if fused:
            fitted += fit_seeds(spec, config, [seeds[i] for i in group], train, evaluate_on, runtime,
                                on_epoch=epoch_done, on_batch=batches, teacher=teacher)
        else:
            seed = seeds[group[0]]
            model = build_seeded(spec, seed)
            result = fit(model, config.replace(seed=seed), train, evaluate_on, runtime,
                         on_epoch=lambda epoch, metrics: epoch_done(epoch, [metrics]), on_batch=batches,
                         teacher=teacher)
            fitted.append(SeedFit(seed, result, model))
        if stop_at_divergence and any(f.result.status != "completed" for f in fitted):
            break
    return fitted


def _index_groups(groups: list[list[int]]) -> list[list[int]]:
    """Groups of seeds as groups of their indices into the whole list."""
    indexed, start = [], 0
    for group in groups:
        indexed.append(list(range(start, start + len(group))))
        start += len(group)
    return indexed
