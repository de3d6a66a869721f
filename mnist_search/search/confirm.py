"""Confirmation: retrain a trial's architecture and recipe on all 60k training images, once per
seed, scoring the TEST set every epoch. The only place the test set is used."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import optuna

from mnist_search.models import ArchSpec
from mnist_search.search.artifacts import store_weights
from mnist_search.trainer import MNISTData, TrainConfig, build_seeded, fit, should_compile

CONFIRM_KEY = "confirm:{number}"  # study user attribute holding a trial's confirmation


def confirm_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, data: MNISTData, seeds: int, last_k: int,
                  target: float, device: str, artifact_dir: Path, compile_choice: str = "auto",
                  on_epoch: Callable[[int, int, dict], None] | None = None, first_seed: int = 0) -> dict:
    """Per-seed test histories and their summary for ``trial``'s spec and recipe.

    Each seed's final weights go to the study's artifact store, so the accuracy stated for a
    seed can be reproduced from the exported module and weights.
    """
    spec = ArchSpec.from_dict(trial.user_attrs["spec"])
    recipe = TrainConfig.from_dict(trial.user_attrs["config"])
    train = data.full_train()
    runs = []
    for seed in range(first_seed, first_seed + seeds):
        config = recipe.replace(seed=seed)
        model = build_seeded(spec, seed)
        result = fit(model, config, train, data.test, device=device,
                     on_epoch=(lambda e, m, s=seed: on_epoch(s, e, m)) if on_epoch else None,
                     compile_model=should_compile(compile_choice, config, len(train), device))
        weights = store_weights(model, artifact_dir, study, f"confirm-{trial.number}-seed{seed}")
        run = {"seed": seed, "status": result.status, "test_acc": [m["eval_acc"] for m in result.history],
               "weights_artifact": weights}
        if config.ema_epochs:
            run["raw_test_acc"] = [m["raw_eval_acc"] for m in result.history]  # what the average changed
        runs.append(run)
    return summarise(runs, last_k, target)


def representative_run(confirmation: dict) -> tuple[dict, int] | None:
    """Of the seeds that trained to the end, the one with the median final test accuracy (the
    lower middle for an even count), and how many there were: the weights worth shipping
    without picking the luckiest seed on the test set. None when no seed completed."""
    runs = sorted((r for r in confirmation["runs"] if r["status"] == "completed" and r["test_acc"]
                   and r.get("weights_artifact")), key=lambda r: r["test_acc"][-1])
    return (runs[(len(runs) - 1) // 2], len(runs)) if runs else None


def summarise(runs: list[dict], last_k: int, target: float) -> dict:
    summary = {"runs": runs, "last_k": last_k, "target": target, **accuracy_stats(runs, "test_acc", last_k)}
    summary["consistent"] = all(r["status"] == "completed" for r in runs) and summary["last_k_min"] >= target
    if all("raw_test_acc" in r for r in runs):  # an averaging recipe: the raw weights' figures beside
        summary["raw"] = accuracy_stats(runs, "raw_test_acc", last_k)
    return summary


def accuracy_stats(runs: list[dict], key: str, last_k: int) -> dict:
    """Mean and spread of the runs' final and last-``last_k`` accuracies under ``key``, and the minimum."""
    finals = [r[key][-1] for r in runs if r[key]]
    tails = [acc for r in runs for acc in r[key][-last_k:]]
    return {
        "final_mean": statistics.fmean(finals), "final_std": statistics.pstdev(finals),
        "last_k_mean": statistics.fmean(tails), "last_k_std": statistics.pstdev(tails), "last_k_min": min(tails),
    }
