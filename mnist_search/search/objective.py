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

from mnist_search.defaults import DEFAULT_LAST_K
from mnist_search.errors import SpecError
from mnist_search.models import ArchSpec, analyse
from mnist_search.search import records
from mnist_search.search.artifacts import store_weights
from mnist_search.search.space import Infeasible, sample_choices, sample_config, spec_from_choices
from mnist_search.trainer import MNISTData, TrainConfig, build_seeded, fit, fit_seeds, should_compile
from mnist_search.trainer.fusion import check_fusable, seed_groups

SCORE_DIGITS = 6


def fusable(spec: ArchSpec) -> bool:
    try:
        check_fusable(spec)
    except SpecError:
        return False
    return True


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
    data: MNISTData
    max_params: int
    epochs: int
    device: str
    artifact_dir: Path
    last_k: int = DEFAULT_LAST_K
    seed: int = 0
    pareto: bool = False  # also minimise parameters; Optuna cannot prune multi-objective trials
    compile_choice: str = "auto"  # auto | on | off (see trainer.should_compile)
    # Training seeds per trial (seed, seed + 1, ...); the score is the mean of their scores. One
    # seed's validation curve is noisy enough to reorder the top trials (RESULTS.md).
    seeds: int = 1
    # Called after every epoch of every seed: (trial number, seed index, epoch, metrics); for progress.
    on_epoch: Callable[[int, int, int, dict], None] | None = None
    # Called once a trial's network and recipe are sampled, before it trains: (trial number, spec,
    # config, whether its seeds train fused); and after every batch: (trial number, seed index or
    # None when all its seeds train at once, step, steps per epoch). For progress.
    on_start: Callable[[int, ArchSpec, TrainConfig, bool], None] | None = None
    on_batch: Callable[[int, int | None, int, int], None] | None = None
    # Who trains the trial (host:pid), so a supervisor can fail the trials of a worker that died.
    worker: str | None = None
    # Train the seeds as one fused network (fit_seeds): they advance together and the pruner sees
    # their mean accuracy at step = epoch. Otherwise one after another, seed i's epoch e at step
    # i * epochs + e. A study keeps one layout (SearchSettings.fuse_seeds is checked on resume):
    # the pruner compares the same steps of different trials.
    fuse_seeds: bool = False
    # The network whose soft targets the trials learn from (SearchSettings.teacher); None: no distillation.
    teacher: nn.Module | None = None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, int]:
        try:
            choices = sample_choices(trial, self.max_params)
        except Infeasible as exc:
            trial.set_user_attr("infeasible", str(exc))
            raise optuna.TrialPruned(f"infeasible sample: {exc}") from None
        spec = spec_from_choices(choices)
        config = sample_config(trial, self.epochs, self.seed, distil=self.teacher is not None)
        analysis = analyse(spec)
        for key, value in {
            records.SCHEMA: records.SCHEMA_VERSION, records.PARAMS: analysis.params,
            records.RECEPTIVE_FIELD: analysis.receptive_field, records.SPEC: spec.to_dict(),
            records.CONFIG: config.to_dict(), records.DEVICE: torch.device(self.device).type,
            records.CPU_THREADS: torch.get_num_threads(), records.MAX_PARAMS: self.max_params,
            records.LAST_K: self.last_k, records.SEEDS: self.seeds,
            **({records.WORKER: self.worker} if self.worker else {}),
        }.items():
            trial.set_user_attr(key, value)

        save_note(trial, architecture_note(spec, config))
        fused = self.seeds > 1 and self.fuse_seeds and fusable(spec)
        if self.on_start is not None:
            self.on_start(trial.number, spec, config, fused)
        started = time.perf_counter()
        histories: list[list[dict]] = []
        if self.seeds > 1 and self.fuse_seeds:
            trial.set_user_attr(records.SEED_LAYOUT, "fused")
            self._train_fused(trial, spec, config, histories, started)
        else:
            for index in range(self.seeds):
                self._train_seed(trial, spec, config.replace(seed=self.seed + index), histories, started)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        scores = [consistency_score([m["eval_acc"] for m in history], self.last_k) for history in histories]
        if self.seeds > 1:
            trial.set_user_attr("seed_scores", scores)
        trial.set_user_attr("last_k_min", min(m["eval_acc"] for history in histories for m in history[-self.last_k:]))
        # Rounded to the precision an accuracy on a few thousand images has, so the stored score
        # (and the dashboard's) reads 99.504, not 99.50399999999999.
        value = round(statistics.fmean(scores), SCORE_DIGITS)
        return (value, analysis.params) if self.pareto else value

    def _train_fused(self, trial: optuna.Trial, spec: ArchSpec, config: TrainConfig, histories: list[list[dict]],
                     started: float) -> None:
        """Train all the trial's seeds at once as one fused network, reporting their mean accuracy
        at step = epoch; a network fused training cannot build trains its seeds one after another,
        reporting only the first seed's epochs (the same steps)."""
        try:
            check_fusable(spec)
        except SpecError:
            for index in range(self.seeds):
                self._train_seed(trial, spec, config.replace(seed=self.seed + index), histories, started,
                                 report=index == 0)
            return
        seeds = [self.seed + index for index in range(self.seeds)]
        histories.extend([] for _ in seeds)
        fitted: list = []
        # A fused network is as wide as its copies together: more seeds than one network may hold
        # train in groups, one after another. The pruner sees the first group's mean at step =
        # epoch (as it sees the first seed's when seeds cannot be fused), every trial alike.
        for group in seed_groups(spec, seeds):
            first = len(fitted)

            def on_epoch(epoch: int, metrics: list[dict | None], first: int = first, group: list[int] = group) -> None:
                if any(m is None for m in metrics):
                    return  # a diverged seed: the trial fails below, once fit_seeds returns
                for index, seed_metrics in enumerate(metrics, start=first):
                    histories[index].append(seed_metrics)
                    if self.on_epoch is not None:
                        self.on_epoch(trial.number, index, epoch, seed_metrics)
                trial.set_user_attr(records.HISTORY, histories[0])
                trial.set_user_attr(records.SEED_HISTORIES, histories[1:])
                if first == 0:
                    self._report(trial, statistics.fmean(m["eval_acc"] for m in metrics), epoch, started,
                                 f"epoch {epoch} (mean of {len(group)} seeds)", epoch)

            fitted += fit_seeds(spec, config, group, self.data.train, self.data.val, device=self.device,
                                on_epoch=on_epoch, on_batch=self._batches(trial.number, None),
                                compile_model=should_compile(self.compile_choice, config, len(self.data.train),
                                                             self.device),
                                teacher=self.teacher)
            failed = next((f for f in fitted if f.result.status != "completed"), None)
            if failed is not None:
                trial.set_user_attr("seconds", time.perf_counter() - started)
                trial.set_user_attr("status", failed.result.status)
                raise TrainingDiverged(f"seed {seeds.index(failed.seed) + 1}: {failed.result.message}")
        self._store(trial, fitted[0].model)

    def _batches(self, number: int, seed: int | None) -> Callable[[int, int], None] | None:
        """The trainer's per-batch callback for trial ``number``'s seed ``seed``, when progress wants one."""
        if self.on_batch is None:
            return None
        on_batch = self.on_batch
        return lambda step, steps: on_batch(number, seed, step, steps)

    def _report(self, trial: optuna.Trial, accuracy: float, step: int, started: float, where: str,
                epoch: int) -> None:
        """Report ``accuracy`` at ``step`` and stop the trial if the pruner says so, or if it is still
        at chance after ``CHANCE_EPOCHS`` epochs: the median pruner waits for its first trials, and
        on the CPU two of a 1k search's first three trials trained 15 epochs at 11.24% (one class)."""
        if self.pareto:
            return
        trial.report(round(accuracy, SCORE_DIGITS), step)
        if epoch >= CHANCE_EPOCHS and accuracy <= CHANCE_ACCURACY:
            trial.set_user_attr("seconds", time.perf_counter() - started)
            raise optuna.TrialPruned(f"pruned after {where} at {accuracy:.2f}%: still at chance, it is not learning")
        if trial.should_prune():
            trial.set_user_attr("seconds", time.perf_counter() - started)
            raise optuna.TrialPruned(f"pruned after {where} at {accuracy:.2f}%")

    def _store(self, trial: optuna.Trial, model) -> None:
        artifact_id, digest = store_weights(model, self.artifact_dir, trial, f"trial-{trial.number}")
        trial.set_user_attr(records.WEIGHTS_ARTIFACT, artifact_id)
        trial.set_user_attr(records.WEIGHTS_SHA256, digest)

    def _train_seed(self, trial: optuna.Trial, spec: ArchSpec, config: TrainConfig, histories: list[list[dict]],
                    started: float, report: bool = True) -> None:
        """Train the trial's next seed, appending its per-epoch validation metrics to ``histories``.

        The i-th seed (from 0) reports epoch ``e`` as step ``i * epochs + e``, so the pruner compares
        every seed's epochs with the same seed's epochs of other trials. The first seed's curve is
        the trial's ``history`` and its weights are the trial's weights; the others are kept in
        ``seed_histories``.
        """
        index, history = len(histories), []
        histories.append(history)

        def on_epoch(epoch: int, metrics: dict) -> None:
            history.append(metrics)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, index, epoch, metrics)
            if index == 0:
                trial.set_user_attr("history", history)
            else:
                trial.set_user_attr("seed_histories", histories[1:])
            if report:
                step = epoch if self.fuse_seeds else pruning_step(index, epoch, self.epochs)
                where = f"epoch {epoch}" + (f" of seed {index + 1}/{self.seeds}" if self.seeds > 1 else "")
                self._report(trial, metrics["eval_acc"], step, started, where, epoch)

        model = build_seeded(spec, config.seed)
        result = fit(model, config, self.data.train, self.data.val, device=self.device, on_epoch=on_epoch,
                     on_batch=self._batches(trial.number, index),
                     compile_model=should_compile(self.compile_choice, config, len(self.data.train), self.device),
                     teacher=self.teacher)
        if result.status != "completed":
            trial.set_user_attr("seconds", time.perf_counter() - started)
            trial.set_user_attr("status", result.status)
            raise TrainingDiverged(result.message if self.seeds == 1 else f"seed {index + 1}: {result.message}")
        if index == 0:
            self._store(trial, model)


def pruning_step(seed_index: int, epoch: int, epochs: int) -> int:
    """The Optuna step at which the ``seed_index``-th seed (from 0) of a trial reports ``epoch`` (from 1)."""
    return seed_index * epochs + epoch


def pruned_at(trial: optuna.trial.FrozenTrial) -> str:
    """Where a pruned trial stopped: its epoch, and which seed when it trained several."""
    seeds = trial.user_attrs.get("seeds", 1)
    if seeds == 1 or trial.last_step is None:
        return f"epoch {trial.last_step}"
    seed, epoch = divmod(trial.last_step - 1, trial.user_attrs["config"]["epochs"])  # pruning_step inverted
    return f"epoch {epoch + 1} of seed {seed + 1}/{seeds}"


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
