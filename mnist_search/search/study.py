"""The Optuna study: sampler, pruner, and creating or resuming a study in a storage."""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import BaseStorage

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


def ranked(trials: list[optuna.trial.FrozenTrial], top: int) -> list[optuna.trial.FrozenTrial]:
    """The ``top`` completed ``trials`` with the highest score, best first."""
    return sorted(trials, key=score, reverse=True)[:top]


def is_pareto(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def open_study(storage: BaseStorage, study_name: str, sampler, pruner, create: bool = True,
               objective: str = "score") -> optuna.Study:
    """Create the study or resume it; with ``create=False`` an unknown study is a user error.

    ``objective`` 'score' maximises the consistency score; 'pareto' also minimises parameters.
    """
    if create:
        directions = ["maximize", "minimize"] if objective == "pareto" else ["maximize"]
        study = optuna.create_study(storage=storage, study_name=study_name, directions=directions,
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
        if len(study.directions) != len(directions):
            kind = "a Pareto (score, parameters)" if is_pareto(study) else "a single-objective"
            raise UserError(f"study {study_name!r} is {kind} study; use objective "
                            f"{'pareto' if is_pareto(study) else 'score'} or another study_name")
        return study
    try:
        return optuna.load_study(storage=storage, study_name=study_name, sampler=sampler, pruner=pruner)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UserError(
            f"no study named {study_name!r} in this storage"
            + (f"; studies there: {', '.join(names)}" if names else "; it holds no study yet (run `mnist-search run`)")
        ) from None
