"""Confirmation: retrain a trial's architecture and recipe on all 60k training images, once per
seed, scoring the TEST set every epoch. The only place the test set is used."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from safetensors.torch import load, save

from mnist_search.defaults import DEFAULT_LAST_K
from mnist_search.errors import ConfigError, UserError
from mnist_search.models import ArchSpec
from mnist_search.search import records
from mnist_search.search.artifacts import store_weights
from mnist_search.search.data_dir import data_dir_for
from mnist_search.search.machine import check_seeds, check_workers
from mnist_search.search.meter import BatchMeter
from mnist_search.search.processes import check_main_guard, run_processes
from mnist_search.search.progress import plural
from mnist_search.search.records import Confirmation, ConfirmationRun, TrialRecord
from mnist_search.search.settings import ConfirmSettings
from mnist_search.storage.locks import Busy, held_lock
from mnist_search.trainer import (
    EpochMetrics,
    Runtime,
    TrainConfig,
    build_seeded,
    cpu_threads_per_process,
    load_mnist,
    resolve_device,
    train_seeds,
    trains_fused,
)

EpochCallback = Callable[[int, int, int, EpochMetrics], None]  # (trial number, seed, epoch, metrics)


def confirm(study: optuna.Study, settings: ConfirmSettings | None = None, *,
            data_dir: str | os.PathLike | None = None, artifact_dir: str | os.PathLike = "mnist-search-artifacts",
            on_epoch: EpochCallback | None = None, on_trial: Callable[[TrialRecord, int], None] | None = None,
            on_batch: Callable[[int, int], None] | None = None) -> list[tuple[TrialRecord, Confirmation]]:
    """Retrain the trials ``settings`` chooses (the ``top`` best completed ones, or the numbers in
    ``trials``) with its seeds on all 60k training images, scoring the test set every epoch; store
    each trial's :class:`Confirmation` in the study (replacing an earlier one) and each seed's
    weights as artifacts. With ``workers`` > 1 that many seeds train at once, each in its own
    process; otherwise, with ``fuse``, the seeds train together as one fused network where the
    network allows (``train_seeds``).

    ``settings.last_k`` is how many final epochs a confirmation judges (default: the trial's own
    last-K from the search, at most its epochs). Without ``data_dir`` the study's own data
    directory is read (see data_dir_for).

    ``on_trial(record, epochs)`` is called before a trial's seeds train; ``on_epoch`` after each
    epoch of each seed (in the worker processes, :func:`print_epoch` stands in for it);
    ``on_batch(step, steps_per_epoch)`` after each batch trained in this process.
    :class:`ConfirmProgress` provides all three.
    """
    settings = settings or ConfirmSettings()
    if settings.workers > 1:
        check_workers(settings.workers)
        check_main_guard()
    data_dir = data_dir_for(data_dir, study)
    chosen = choose(study, settings.top, list(settings.trials) if settings.trials else None)
    for record in chosen:
        check_seeds(settings.seeds, record.params or 0)
        if (settings.last_k is not None and record.epochs_per_seed is not None
                and settings.last_k > record.epochs_per_seed):
            raise ConfigError(f"last_k {settings.last_k} is more than trial #{record.number}'s "
                              f"{plural(record.epochs_per_seed, 'epoch')}; use at most {record.epochs_per_seed}")
    teacher = _study_teacher(study)
    for record in chosen:
        if record.config.get("distill_weight") and teacher is None:
            raise ConfigError(f"trial #{record.number} learnt from a teacher, but study {study.study_name!r} "
                              "records none to retrain it with")
    settings = settings.replace(device=str(resolve_device(settings.device)))
    artifacts = Path(artifact_dir)
    with contextlib.ExitStack() as claims:
        for record in chosen:
            claims.enter_context(_claim(study, record.number))
        try:  # before hours of training, not after them
            artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the artifact directory {artifacts}: {exc.strerror or exc}") from None
        data = load_mnist(data_dir, val_size=0) if settings.workers == 1 else None  # workers load it themselves
        confirmed = []
        for record in chosen:
            if on_trial:
                on_trial(record, record.epochs_per_seed or 0)
            job = ConfirmJob(settings, record.spec, record.config, data_dir, record.number, teacher)
            if settings.workers == 1:
                trained = train_job(job, settings.seed_list, data, on_epoch, on_batch)
            else:
                trained = _train_in_processes(job, on_epoch)
            runs = [_store(study, record, run, blob, artifacts) for run, blob in trained]
            result = Confirmation(runs=tuple(runs), last_k=settings.last_k or judged_epochs(record),
                                  target=settings.target)
            result.save(study, record.number)
            confirmed.append((record, result))
        return confirmed


@contextlib.contextmanager
def _claim(study: optuna.Study, number: int) -> Iterator[None]:
    """Trial ``number`` is this process's to confirm until the context ends: two confirmations of one
    trial at once would each store their result over the other's, losing one silently."""
    lock = held_lock(study._storage, f"confirm:{study.study_name}:{number}")
    try:
        lock.__enter__()
    except Busy:
        raise UserError(f"trial #{number} of study {study.study_name!r} is being confirmed by another process "
                        "right now; wait for it to finish (a confirmation replaces the earlier one) or confirm "
                        "another trial") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@dataclass(frozen=True)
class ConfirmJob:
    """What training a trial's confirmation seeds needs, as worker processes receive it (JSON)."""

    settings: ConfirmSettings
    spec: dict
    config: dict
    data_dir: str | None
    trial: int
    teacher: list[str] | None  # [spec file, weights file] of the study's teacher

    def to_json(self) -> str:
        return json.dumps({**vars(self), "settings": self.settings.to_dict()})

    @classmethod
    def from_json(cls, text: str) -> ConfirmJob:
        data = json.loads(text)
        return cls(**{**data, "settings": ConfirmSettings.from_dict(data["settings"])})


def judged_epochs(record: TrialRecord) -> int:
    """The final epochs a confirmation of ``record`` judges by default: those its search score
    averaged, never more than it trains."""
    epochs = record.epochs_per_seed or DEFAULT_LAST_K
    return min(record.last_k or DEFAULT_LAST_K, epochs)


def choose(study: optuna.Study, top: int, numbers: list[int] | None) -> list[TrialRecord]:
    """The trials to confirm: the numbers asked for, else the ``top`` best completed ones."""
    done = records.completed(study)
    if not done:
        raise UserError(f"study {study.study_name!r} has no completed trial to confirm; run a search first")
    plain = [r.number for r in done if r.spec is None or r.config is None]
    if numbers:
        by_number = {r.number: r for r in done}
        missing = [n for n in numbers if n not in by_number]
        if missing:
            best = records.ranked(done, 5)
            raise UserError(f"trial #{missing[0]} is not a completed trial of study {study.study_name!r}; "
                            f"its best completed trials: {', '.join(f'#{r.number}' for r in best)}")
        chosen = [by_number[n] for n in dict.fromkeys(numbers)]
    else:
        chosen = records.ranked(done, top)
    if any(r.number in plain for r in chosen):
        raise records.RecordError(f"trial #{next(r.number for r in chosen if r.number in plain)} of study "
                                  f"{study.study_name!r} has no stored network (was the study made by mnist-search?)")
    return chosen


def train_job(job: ConfirmJob, seeds: list[int], data=None, on_epoch: EpochCallback | None = None,
              on_batch: Callable[[int, int], None] | None = None) -> list[tuple[dict, bytes]]:
    """Train ``seeds`` of ``job``'s trial on all 60k training images, scored on the test set:
    each seed's run record and final weights (safetensors bytes). ``data`` is loaded from the
    job's data directory when not given."""
    spec, config = ArchSpec.from_dict(job.spec), TrainConfig.from_dict(job.config)
    data = data if data is not None else load_mnist(job.data_dir, val_size=0)
    train = data.full_train()

    def epoch_done(epoch: int, indices: list[int], metrics: list[EpochMetrics | None]) -> None:
        if on_epoch:
            for index, seed_metrics in zip(indices, metrics):
                if seed_metrics is not None:
                    on_epoch(job.trial, seeds[index], epoch, seed_metrics)

    device = job.settings.device
    fitted = train_seeds(spec, config, seeds, train, data.test,
                         Runtime.chosen(device, job.settings.compile, config, len(train)),
                         fuse_seeds=job.settings.fuse, on_epoch=epoch_done, teacher=_teacher(job, config),
                         on_batch=(lambda index, step, steps: on_batch(step, steps)) if on_batch else None)
    return [(_run_record(config.replace(seed=f.seed), f.result, device), _weights(f.model)) for f in fitted]


def _study_teacher(study: optuna.Study) -> list[str] | None:
    """[spec file, weights file] of the teacher the study's trials learnt from, or None."""
    settings = records.stored_settings(study)
    if settings is None or settings.get("teacher") is None:
        return None
    paths = [settings.get("teacher"), settings.get("teacher_weights")]
    if not all(isinstance(path, str) and path for path in paths):
        raise records.RecordError(f"study {study.study_name!r} records a teacher that is not two file paths")
    return paths


def _teacher(job: ConfirmJob, config: TrainConfig):
    if not config.distill_weight:
        return None
    from mnist_search.models.weights import load_network

    return load_network(*job.teacher)


def _run_record(config: TrainConfig, result, device: str) -> dict:
    """One seed's stored run: its test accuracy per epoch, where and how it trained."""
    run = ConfirmationRun(seed=config.seed, status=result.status, test_acc=tuple(m.eval_acc for m in result.history),
                          raw_test_acc=tuple(m.raw_eval_acc for m in result.history) if config.ema_epochs else None,
                          cpu_threads=torch.get_num_threads(), device=torch.device(device).type)
    return run.to_dict()


def _weights(model) -> bytes:
    return save({name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()})


def _train_in_processes(job: ConfirmJob, on_epoch: EpochCallback | None) -> list[tuple[dict, bytes]]:
    """Train the job's seeds ``settings.workers`` at a time, each in its own process (see processes.run_processes)."""
    seeds = job.settings.seed_list
    workers = min(job.settings.workers, len(seeds))
    threads = int(os.environ.get("OMP_NUM_THREADS") or cpu_threads_per_process(workers))
    target = _seed_with_progress if on_epoch is not None else _seed_quietly
    payloads = [json.dumps({"job": job.to_json(), "seed": seed}) for seed in seeds]
    trained = []
    for start in range(0, len(payloads), workers):
        for outcome in run_processes(target, payloads[start : start + workers], threads):
            if outcome.user_error:
                raise UserError(outcome.error)
            if not outcome.ok:
                raise_from = outcome.error.strip().splitlines()[-1] if outcome.error else outcome.died()
                raise UserError(f"a confirmation worker (pid {outcome.pid}) failed: {raise_from}")
            trained.append(outcome.result)
    return trained


def epoch_line(seed: int, epoch: int, metrics: EpochMetrics) -> str:
    raw = f" (raw weights {metrics.raw_eval_acc:.2f}%)" if metrics.raw_eval_acc is not None else ""
    return f"  seed {seed} epoch {epoch:>2}: test {metrics.eval_acc:.2f}%{raw}"


def print_epoch(trial: int, seed: int, epoch: int, metrics: EpochMetrics) -> None:
    """One line per seed and epoch (module-level: worker processes print it too)."""
    print(epoch_line(seed, epoch, metrics), flush=True)


class ConfirmProgress:
    """What a confirmation shows: a line per trial before its seeds train, a line per seed and
    epoch, and, for seeds trained in this process, the batch, images per second and time left
    (a redrawn line on a terminal or in a notebook, a line at least every 30 s in a log)."""

    def __init__(self, settings: ConfirmSettings) -> None:
        self.seeds, self.first_seed, self.workers, self.fuse = (settings.seeds, settings.first_seed, settings.workers,
                                                                settings.fuse)
        self.meter = BatchMeter()
        self.fused = False

    def trial(self, record: TrialRecord, epochs: int) -> None:
        """``on_trial``: the trial about to be confirmed."""
        at_once = f", {min(self.workers, self.seeds)} at once" if self.workers > 1 else ""
        last = self.first_seed + self.seeds - 1
        seeds = f"{self.seeds} seeds ({self.first_seed}-{last})" if self.seeds > 1 else f"1 seed ({self.first_seed})"
        spec = ArchSpec.from_dict(record.spec)
        self.fused = self.workers == 1 and trains_fused(spec, self.seeds, self.fuse)
        if self.workers == 1:
            batch = int(record.config.get("batch_size", 1)) if record.config else 1
            self.meter.start(epochs, batch * (self.seeds if self.fused else 1), runs=1 if self.fused else self.seeds)
        self.meter.write(f"confirming trial #{record.number} ({record.params:,} params): {seeds} x "
                         f"{plural(epochs, 'epoch')} on all 60,000 training images{at_once}, scored on the test set")

    def epoch(self, trial: int, seed: int, epoch: int, metrics: EpochMetrics) -> None:
        """``on_epoch``."""
        self.meter.write(epoch_line(seed, epoch, metrics), run=0 if self.fused else seed - self.first_seed,
                         epoch=epoch)

    def batch(self, step: int, steps: int) -> None:
        """``on_batch``."""
        self.meter.batch(step, steps)

    def close(self) -> None:
        self.meter.close()


def _seed_with_progress(payload: str) -> tuple[dict, bytes]:
    return _train_one(payload, on_epoch=print_epoch)


def _seed_quietly(payload: str) -> tuple[dict, bytes]:
    return _train_one(payload)


def _train_one(payload: str, on_epoch: EpochCallback | None = None) -> tuple[dict, bytes]:
    """A confirmation worker process: one seed of a job."""
    task = json.loads(payload)
    (trained,) = train_job(ConfirmJob.from_json(task["job"]), [task["seed"]], on_epoch=on_epoch)
    return trained


def _store(study: optuna.Study, record: TrialRecord, run: dict, blob: bytes, artifacts: Path) -> ConfirmationRun:
    """Store one seed's weights as an artifact of the study; its checked run record (``run`` may
    come from a worker process, so it is read back like any stored value)."""
    checked = ConfirmationRun.from_dict(run, "a confirmation worker's run")
    model = build_seeded(ArchSpec.from_dict(record.spec), checked.seed)
    model.load_state_dict(load(blob))
    artifact, digest = store_weights(model, artifacts, study, f"confirm-{record.number}-seed{checked.seed}")
    return dataclasses.replace(checked, weights_artifact=artifact, weights_sha256=digest)
