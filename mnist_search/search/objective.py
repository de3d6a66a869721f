"""The objective: sample, train on the training split, score on the validation split, prune per epoch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna_dashboard import save_note
from torch import nn

from mnist_search.models import ArchSpec, analyse
from mnist_search.search import records
from mnist_search.search.artifacts import store_weights
from mnist_search.search.settings import SearchSettings
from mnist_search.search.space import Infeasible, sample_choices, sample_config, spec_from_choices
from mnist_search.trainer import EpochMetrics, MNISTData, Runtime, TrainConfig, train_seeds, trains_fused

SCORE_DIGITS = 6


class TrainingDiverged(Exception):
    """The trial's training blew up; Optuna records the trial as FAIL and the study goes on."""


def consistency_score(accuracies: list[float], last_k: int) -> float:
    """Mean validation accuracy of the last ``last_k`` epochs (the minimum is recorded too).

    On the real CPU study the mean and the minimum of the last 5 ranked the completed trials
    almost alike (RESULTS.md, scripts/pruner_replay.py); the mean averages K noisy readings
    where the minimum takes the single worst, so it is the objective. "Consistent" (every one
    of the last K at or above a target) is judged from the minimum, on the test set by confirm.
    """
    tail = accuracies[-last_k:]
    return sum(tail) / len(tail)


# A network still at or below this validation accuracy (10 classes: 10% is a guess, 11.35% the
# most frequent digit) after this many epochs is not learning: stopped at any budget.
CHANCE_ACCURACY, CHANCE_EPOCHS = 15.0, 5


@dataclass
class Objective:
    """One trial: sample a network and recipe within ``settings.max_params``, train it with
    ``settings.seeds_per_trial`` seeds on ``data.train`` and score it on ``data.val``.

    Seeds train fused (``SearchSettings.fuse_seeds``, when the network allows) and the pruner
    sees their mean accuracy at step = epoch; or one after another, seed i's epoch e at step
    i * epochs + e. A study keeps one layout (fuse_seeds is checked on resume): the pruner
    compares the same steps of different trials. One seed's validation curve is noisy enough to
    reorder the top trials (RESULTS.md), hence several seeds, scored by their mean.
    """

    settings: SearchSettings
    data: MNISTData
    device: str
    artifact_dir: Path
    # The network whose soft targets the trials learn from (SearchSettings.teacher); None: no distillation.
    teacher: nn.Module | None = None
    # Who trains the trial (host:pid), so a supervisor can fail the trials of a worker that died.
    worker: str | None = None
    # Called after every epoch of every seed: (trial number, seed index, epoch, metrics); for progress.
    on_epoch: Callable[[int, int, int, EpochMetrics], None] | None = None
    # Called once a trial's network and recipe are sampled, before it trains: (trial number, spec,
    # config, whether its seeds train fused); and after every batch: (trial number, seed index or
    # None when all its seeds train at once, step, steps per epoch). For progress.
    on_start: Callable[[int, ArchSpec, TrainConfig, bool], None] | None = None
    on_batch: Callable[[int, int | None, int, int], None] | None = None

    @property
    def first_seed(self) -> int:
        """The first training seed: the sampler's seed, else 0."""
        return self.settings.seed if self.settings.seed is not None else 0

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, int]:
        settings, writer = self.settings, records.TrialWriter(trial)
        try:
            choices = sample_choices(trial, settings.max_params)
        except Infeasible as exc:
            writer.infeasible(str(exc))
            raise optuna.TrialPruned(f"infeasible sample: {exc}") from None
        spec = spec_from_choices(choices)
        config = sample_config(trial, settings.epochs, self.first_seed, distil=self.teacher is not None)
        analysis = analyse(spec)
        seeds = settings.seeds_per_trial
        writer.started(params=analysis.params, receptive_field=analysis.receptive_field, spec=spec.to_dict(),
                       config=config.to_dict(), device=torch.device(self.device).type,
                       cpu_threads=torch.get_num_threads(), max_params=settings.max_params, last_k=settings.last_k,
                       seeds=seeds, worker=self.worker, fused_layout=seeds > 1 and settings.fuse_seeds)
        save_note(trial, architecture_note(spec, config))
        if self.on_start is not None:
            self.on_start(trial.number, spec, config, trains_fused(spec, seeds, settings.fuse_seeds))
        started = time.perf_counter()
        histories: list[list[EpochMetrics]] = [[] for _ in range(seeds)]

        def on_epoch(epoch: int, indices: list[int], metrics: list[EpochMetrics | None]) -> None:
            if any(m is None for m in metrics):
                return  # a diverged seed: the trial fails below, once training returns
            for index, seed_metrics in zip(indices, metrics):
                histories[index].append(seed_metrics)
                if self.on_epoch is not None:
                    self.on_epoch(trial.number, index, epoch, seed_metrics)
            writer.epochs(histories, indices)
            if settings.fuse_seeds and indices[0] != 0:
                return  # the pruner sees the first group (or seed) only, every trial alike
            step = epoch if settings.fuse_seeds else pruning_step(indices[0], epoch, settings.epochs)
            where = (f"epoch {epoch} (mean of {len(indices)} seeds)" if len(indices) > 1 else
                     f"epoch {epoch} of seed {indices[0] + 1}/{seeds}" if seeds > 1 else f"epoch {epoch}")
            self._report(trial, writer, statistics.fmean(m.eval_acc for m in metrics), step, started, where, epoch)

        on_batch = self.on_batch
        fitted = train_seeds(
            spec, config, [self.first_seed + index for index in range(seeds)], self.data.train, self.data.val,
            Runtime.chosen(self.device, settings.compile, config, len(self.data.train)),
            fuse_seeds=settings.fuse_seeds, on_epoch=on_epoch, teacher=self.teacher, stop_at_divergence=True,
            on_batch=(lambda index, step, steps: on_batch(trial.number, index, step, steps)) if on_batch else None)
        failed = next((index for index, f in enumerate(fitted) if f.result.status != "completed"), None)
        if failed is not None:
            writer.ended(time.perf_counter() - started, fitted[failed].result.status)
            message = fitted[failed].result.message
            raise TrainingDiverged(message if seeds == 1 else f"seed {failed + 1}: {message}")
        writer.weights(*store_weights(fitted[0].model, self.artifact_dir, trial, f"trial-{trial.number}"))
        writer.ended(time.perf_counter() - started)
        scores = [consistency_score([m.eval_acc for m in history], settings.last_k) for history in histories]
        writer.scored(scores, min(m.eval_acc for history in histories for m in history[-settings.last_k:]))
        # Rounded to the precision an accuracy on a few thousand images has, so the stored score
        # (and the dashboard's) reads 99.504, not 99.50399999999999.
        value = round(statistics.fmean(scores), SCORE_DIGITS)
        return (value, analysis.params) if settings.pareto else value

    def _report(self, trial: optuna.Trial, writer: records.TrialWriter, accuracy: float, step: int, started: float,
                where: str, epoch: int) -> None:
        """Report ``accuracy`` at ``step`` and stop the trial if the pruner says so, or if it is still
        at chance after ``CHANCE_EPOCHS`` epochs: the median pruner waits for its first trials, and
        on the CPU two of a 1k search's first three trials trained 15 epochs at 11.24% (one class)."""
        if self.settings.pareto:
            return
        trial.report(round(accuracy, SCORE_DIGITS), step)
        if epoch >= CHANCE_EPOCHS and accuracy <= CHANCE_ACCURACY:
            writer.ended(time.perf_counter() - started)
            raise optuna.TrialPruned(f"pruned after {where} at {accuracy:.2f}%: still at chance, it is not learning")
        if trial.should_prune():
            writer.ended(time.perf_counter() - started)
            raise optuna.TrialPruned(f"pruned after {where} at {accuracy:.2f}%")


def pruning_step(seed_index: int, epoch: int, epochs: int) -> int:
    """The Optuna step at which the ``seed_index``-th seed (from 0) of a trial reports ``epoch`` (from 1)."""
    return seed_index * epochs + epoch


def architecture_note(spec: ArchSpec, config: TrainConfig) -> str:
    """Markdown shown on the trial's page in optuna-dashboard: the per-layer table and the recipe."""
    analysis = analyse(spec)
    rows = "\n".join(
        f"| {i.index} | {i.description} | {'x'.join(map(str, i.out_shape))} | {i.params:,} | {i.receptive_field} |"
        for i in analysis.layers
    )
    recipe = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.to_dict().items())
    return (
        f"**{analysis.params:,} parameters, receptive field {analysis.receptive_field}**\n\n"
        f"| # | layer | output | params | RF |\n|---|---|---|---|---|\n{rows}\n\n**Recipe:** {recipe}\n"
    )
