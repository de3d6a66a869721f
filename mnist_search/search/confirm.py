"""Confirmation: retrain a trial's architecture and recipe on all 60k training images, once per
seed, scoring the TEST set every epoch. The only place the test set is used."""

from __future__ import annotations

import functools
import multiprocessing
import os
import statistics
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import optuna
import torch

from mnist_search.models import ArchSpec
from mnist_search.search.artifacts import store_weights
from mnist_search.search.records import CONFIRM_PREFIX
from mnist_search.trainer import (MNISTData, Split, TrainConfig, build_seeded, cpu_threads_per_process, fit,
                                  should_compile)

CONFIRM_KEY = CONFIRM_PREFIX + "{number}"  # study user attribute holding a trial's confirmation


def confirm_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, data: MNISTData, seeds: int, last_k: int,
                  target: float, device: str, artifact_dir: Path, compile_choice: str = "auto",
                  on_epoch: Callable[[int, int, dict], None] | None = None, first_seed: int = 0,
                  workers: int = 1) -> dict:
    """Per-seed test histories and their summary for ``trial``'s spec and recipe.

    Each seed's final weights go to the study's artifact store, so the accuracy stated for a
    seed can be reproduced from the exported module and weights. With ``workers`` > 1 that many
    seeds train at once, each in its own process with its share of the CPU cores (and
    ``on_epoch`` must then be a module-level function, as it runs in those processes).
    """
    spec = ArchSpec.from_dict(trial.user_attrs["spec"])
    recipe = TrainConfig.from_dict(trial.user_attrs["config"])
    train = data.full_train()  # one concatenation of the 60k images for every seed
    jobs = [(spec, recipe.replace(seed=seed), train, data.test, device, compile_choice, on_epoch)
            for seed in range(first_seed, first_seed + seeds)]
    if workers == 1:
        trained = [train_seed(*job) for job in jobs]
    else:
        # Processes, not threads: CPU training holds the GIL between kernels. Spawned, because
        # forking a process that already runs PyTorch's thread pools can deadlock the child.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=use_threads, initargs=(cpu_threads_per_process(workers),)) as pool:
            trained = list(pool.map(train_seed, *zip(*jobs)))
    runs = []
    for run, weights in trained:
        model = build_seeded(spec, run["seed"])
        model.load_state_dict(weights)
        run["weights_artifact"], run["weights_sha256"] = store_weights(
            model, artifact_dir, study, f"confirm-{trial.number}-seed{run['seed']}")
        runs.append(run)
    return summarise(runs, last_k, target)


def train_seed(spec: ArchSpec, config: TrainConfig, train: Split, test: Split, device: str, compile_choice: str,
               on_epoch: Callable[[int, int, dict], None] | None) -> tuple[dict, dict]:
    """Train one confirmation seed (``config.seed``): its run record and its final weights."""
    model = build_seeded(spec, config.seed)
    result = fit(model, config, train, test, device=device,
                 on_epoch=functools.partial(on_epoch, config.seed) if on_epoch else None,
                 compile_model=should_compile(compile_choice, config, len(train), device))
    run = {"seed": config.seed, "status": result.status, "test_acc": [m["eval_acc"] for m in result.history],
           "cpu_threads": torch.get_num_threads(), "device": torch.device(device).type}
    if config.ema_epochs:
        run["raw_test_acc"] = [m["raw_eval_acc"] for m in result.history]  # what the average changed
    return run, {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}


def use_threads(threads: int) -> None:
    """A confirm worker's CPU threads: its share of the cores, unless the user set OMP_NUM_THREADS."""
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(threads)


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
