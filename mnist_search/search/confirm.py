"""Confirmation: retrain a trial's architecture and recipe on all 60k training images, once per
seed, scoring the TEST set every epoch. The only place the test set is used."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import optuna

from mnist_search.models import ArchSpec
from mnist_search.trainer import MNISTData, TrainConfig, build_seeded, fit, should_compile

CONFIRM_KEY = "confirm:{number}"  # study user attribute holding a trial's confirmation


def confirm_trial(trial: optuna.trial.FrozenTrial, data: MNISTData, seeds: int, last_k: int, target: float,
                  device: str, compile_choice: str = "auto",
                  on_epoch: Callable[[int, int, dict], None] | None = None) -> dict:
    """Per-seed test histories and their summary for ``trial``'s spec and recipe."""
    spec = ArchSpec.from_dict(trial.user_attrs["spec"])
    recipe = TrainConfig.from_dict(trial.user_attrs["config"])
    train = data.full_train()
    runs = []
    for seed in range(seeds):
        config = recipe.replace(seed=seed)
        result = fit(build_seeded(spec, seed), config, train, data.test, device=device,
                     on_epoch=(lambda e, m, s=seed: on_epoch(s, e, m)) if on_epoch else None,
                     compile_model=should_compile(compile_choice, config, len(train)))
        runs.append({"seed": seed, "status": result.status, "test_acc": [m["eval_acc"] for m in result.history]})
    return summarise(runs, last_k, target)


def summarise(runs: list[dict], last_k: int, target: float) -> dict:
    finals = [r["test_acc"][-1] for r in runs if r["test_acc"]]
    tails = [acc for r in runs for acc in r["test_acc"][-last_k:]]
    return {
        "runs": runs, "last_k": last_k, "target": target,
        "final_mean": statistics.fmean(finals), "final_std": statistics.pstdev(finals),
        "last_k_mean": statistics.fmean(tails), "last_k_std": statistics.pstdev(tails),
        "last_k_min": min(tails),
        "consistent": all(r["status"] == "completed" for r in runs) and min(tails) >= target,
    }
