"""The Optuna study: sampler, pruner, and creating or resuming a study in a storage."""

from __future__ import annotations

import warnings

import optuna

from mnist_search.defaults import PRUNERS, SAMPLERS
from mnist_search.errors import UserError


def make_sampler(name: str, seed: int | None, parallel: bool) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # multivariate TPE and constant liar are flagged "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=parallel, seed=seed)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}; choose {', '.join(SAMPLERS)}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        # The default, by a replay of the real CPU study's curves (RESULTS.md): 0.59x the
        # model-epochs of no pruning; Hyperband (0.48x) would have stopped the 4th and 5th
        # best trials after a single epoch. Let the first 5 trials finish and judge no trial
        # before epoch 3: early epochs are noisy.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min(3, max(epochs - 1, 0)))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; choose {', '.join(PRUNERS)}")


def score(trial: optuna.trial.FrozenTrial) -> float:
    """A completed trial's consistency score, in single-objective and Pareto studies alike."""
    return trial.values[0]


def is_pareto(study: optuna.Study) -> bool:
    return len(study.directions) > 1
