"""Several seeds of one architecture trained at once, as one horizontally fused network.

Small networks leave a device mostly idle per step; K seeds fused into one network of K
times the channels take one step where K separate runs would take K (fusion.py says how).
The optimizers, LR schedules and the weight average are element-wise and the loss is the
sum of each copy's own mean loss, so every seed trains as its own ``fit`` would, up to
floating-point error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mnist_search.errors import ConfigError
from mnist_search.models import ArchSpec, SpecNet
from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.data import Split
from mnist_search.trainer.fusion import fuse, unfuse
from mnist_search.trainer.loop import BatchCallback, CopiesEpochCallback, FitResult, fit_copies
from mnist_search.trainer.setup import build_seeded


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
    device: str | torch.device = "auto",
    on_epoch: CopiesEpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    compile_model: bool = False,
    cuda_graph: bool | None = None,
    channels_last: bool | None = None,
    bf16: bool = False,
    teacher: nn.Module | None = None,
) -> list[SeedFit]:
    """Train one network of ``spec`` per seed, all at once, and return one ``SeedFit`` per seed, in order.

    Seed ``s`` is the run ``fit(build_seeded(spec, s), config.replace(seed=s), ...)`` would
    be: the same initial weights, batch order, augmentation and dropout masks. Its model is
    an ordinary network of ``spec`` (on the CPU) holding its final weights (the averaged
    ones when ``config.ema_epochs`` is set, as ``fit`` keeps).

    ``on_epoch(epoch, metrics)`` runs after every epoch with one metrics dict per seed (in
    the order of ``seeds``; None for a seed that has diverged) and may raise to stop all
    seeds. A seed that diverges gets status "diverged" and stops being scored; the others
    train on. The other arguments are ``fit``'s.
    """
    if not seeds:
        raise ConfigError("fit_seeds needs at least one seed")
    configs = [config.replace(seed=seed) for seed in seeds]
    fused = fuse(spec, [build_seeded(spec, seed) for seed in seeds])
    results = fit_copies(fused, configs, train, evaluate_on, device, on_epoch, on_batch, compile_model, cuda_graph,
                         channels_last, bf16, teacher)
    models = unfuse(spec, fused)
    return [SeedFit(seed, result, model) for seed, result, model in zip(seeds, results, models, strict=True)]
