"""Confirmation: retrain a trial's architecture and recipe on all 60k training images, once per
seed, scoring the TEST set every epoch. The only place the test set is used."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import torch
from safetensors.torch import load, save

from mnist_search.defaults import DEFAULT_LAST_K
from mnist_search.errors import ConfigError, SpecError, UserError
from mnist_search.models import ArchSpec
from mnist_search.search import records
from mnist_search.search.artifacts import store_weights
from mnist_search.search.data_dir import data_dir_for
from mnist_search.search.machine import check_seeds, check_workers
from mnist_search.search.meter import BatchMeter
from mnist_search.search.processes import check_main_guard, run_processes
from mnist_search.search.progress import plural
from mnist_search.search.records import Confirmation, ConfirmationRun, TrialRecord
from mnist_search.storage.locks import Busy, held_lock
from mnist_search.trainer import (
    TrainConfig,
    build_seeded,
    cpu_threads_per_process,
    fit,
    fit_seeds,
    load_mnist,
    resolve_device,
    should_compile,
)
from mnist_search.trainer.fusion import check_fusable, seed_groups

EpochCallback = Callable[[int, int, int, dict], None]  # (trial number, seed, epoch, metrics)


def confirm(study: optuna.Study, top: int = 3, trials: list[int] | None = None, seeds: int = 3, first_seed: int = 0,
            last_k: int | None = None, target: float = 99.4, workers: int = 1, device: str = "auto", compile: str = "auto",
            data_dir: str | os.PathLike | None = None, artifact_dir: str | os.PathLike = "mnist-search-artifacts",
            fuse: bool = True, on_epoch: EpochCallback | None = None,
            on_trial: Callable[[TrialRecord, int], None] | None = None,
            on_batch: Callable[[int, int], None] | None = None) -> list[tuple[TrialRecord, Confirmation]]:
    """Retrain the ``top`` best completed trials (or the numbers in ``trials``) with ``seeds`` training
    seeds from ``first_seed`` on all 60k training images, scoring the test set every epoch; store each
    trial's :class:`Confirmation` in the study (replacing an earlier one) and each seed's weights as
    artifacts. With ``workers`` > 1 that many seeds train at once, each in its own process;
    otherwise, with ``fuse``, the seeds train together as one fused network (``fit_seeds``: each
    seed as its own run would, one kernel sequence for all), one after another when the
    network has a layer fused training does not support.

    ``last_k`` is how many final epochs a confirmation judges (default: the trial's own last-K
    from the search, at most its epochs). Without ``data_dir`` the study's own data directory is
    read (see data_dir_for).

    ``on_trial(record, epochs)`` is called before a trial's seeds train; ``on_epoch`` after each
    epoch of each seed (in the worker processes, :func:`print_epoch` stands in for it);
    ``on_batch(step, steps_per_epoch)`` after each batch trained in this process.
    :class:`ConfirmProgress` provides all three.
    """
    for name, value, low in (("top", top, 1), ("seeds", seeds, 1), ("workers", workers, 1),
                             ("first_seed", first_seed, 0), ("last_k", 1 if last_k is None else last_k, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be a whole number of at least {low}, got {value!r}")
    # A target outside 0-100 (or NaN) makes every later reading of the confirmation fail: refused
    # before hours of training, not stored after them.
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 <= target <= 100:
        raise ConfigError(f"target must be a percentage between 0 and 100, got {target!r}")
    if first_seed + seeds > 2**31:
        raise ConfigError(f"first_seed + seeds must stay below 2**31, got {first_seed + seeds}")
    if workers > 1:
        check_workers(workers)
        check_main_guard()
    data_dir = data_dir_for(data_dir, study)
    chosen = choose(study, top, trials)
    for record in chosen:
        check_seeds(seeds, record.params or 0)
        if last_k is not None and record.epochs_per_seed is not None and last_k > record.epochs_per_seed:
            raise ConfigError(f"last_k {last_k} is more than trial #{record.number}'s "
                              f"{plural(record.epochs_per_seed, 'epoch')}; use at most {record.epochs_per_seed}")
    teacher = _study_teacher(study)
    for record in chosen:
        if record.config.get("distill_weight") and teacher is None:
            raise ConfigError(f"trial #{record.number} learnt from a teacher, but study {study.study_name!r} "
                              "records none to retrain it with")
    device = str(resolve_device(device))
    artifacts = Path(artifact_dir)
    with contextlib.ExitStack() as claims:
        for record in chosen:
            claims.enter_context(_claim(study, record.number))
        try:  # before hours of training, not after them
            artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the artifact directory {artifacts}: {exc.strerror or exc}") from None
        data = load_mnist(data_dir, val_size=0) if workers == 1 else None  # workers load it themselves
        return _confirm_all(study, chosen, seeds, first_seed, last_k, target, workers, device, compile, data_dir,
                            artifacts, fuse, data, teacher, on_epoch, on_trial, on_batch)


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


def _confirm_all(study, chosen, seeds, first_seed, last_k, target, workers, device, compile, data_dir, artifacts,
                 fuse, data, teacher, on_epoch, on_trial, on_batch) -> list[tuple[TrialRecord, Confirmation]]:
    confirmed = []
    for record in chosen:
        if on_trial:
            on_trial(record, record.epochs_per_seed or 0)
        jobs = [json.dumps({"spec": record.spec, "config": {**record.config, "seed": seed}, "device": device,
                            "compile": compile, "data_dir": data_dir, "trial": record.number, "teacher": teacher})
                for seed in range(first_seed, first_seed + seeds)]
        if workers == 1:
            trained = _train_fused(jobs, data, on_epoch, on_batch) if seeds > 1 and fuse else None
            trained = trained or [train_seed(job, data, on_epoch, on_batch) for job in jobs]
        else:
            trained = _train_in_processes(jobs, min(workers, seeds), on_epoch)
        runs = [_store(study, record, run, blob, artifacts) for run, blob in trained]
        result = Confirmation(runs=tuple(runs), last_k=last_k or judged_epochs(record), target=target)
        study.set_user_attr(records.confirm_key(record.number), result.to_dict())
        confirmed.append((record, result))
    return confirmed


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


def train_seed(job: str, data=None, on_epoch: EpochCallback | None = None,
               on_batch: Callable[[int, int], None] | None = None) -> tuple[dict, bytes]:
    """Train one confirmation seed described by ``job`` (JSON): its run record and its final weights
    (safetensors bytes). ``data`` is loaded from the job's data directory when not given."""
    task = json.loads(job)
    spec, config = ArchSpec.from_dict(task["spec"]), TrainConfig.from_dict(task["config"])
    data = data if data is not None else load_mnist(task["data_dir"], val_size=0)
    train = data.full_train()
    model = build_seeded(spec, config.seed)

    def epoch_done(epoch: int, metrics: dict) -> None:
        if on_epoch:
            on_epoch(task["trial"], config.seed, epoch, metrics)

    result = fit(model, config, train, data.test, device=task["device"], on_epoch=epoch_done, on_batch=on_batch,
                 compile_model=should_compile(task["compile"], config, len(train), task["device"]),
                 teacher=_teacher(task, config))
    return _run_record(config, result, task["device"]), _weights(model)


def _study_teacher(study: optuna.Study) -> list[str] | None:
    """[spec file, weights file] of the teacher the study's trials learnt from, or None."""
    settings = study.user_attrs.get(records.SETTINGS)
    if not isinstance(settings, dict) or settings.get("teacher") is None:
        return None
    paths = [settings.get("teacher"), settings.get("teacher_weights")]
    if not all(isinstance(path, str) and path for path in paths):
        raise records.RecordError(f"study {study.study_name!r} records a teacher that is not two file paths")
    return paths


def _teacher(task: dict, config: TrainConfig):
    if not config.distill_weight:
        return None
    from mnist_search.models.weights import load_network

    return load_network(*task["teacher"])


def _run_record(config: TrainConfig, result, device: str) -> dict:
    """One seed's stored run: its test accuracy per epoch, where and how it trained."""
    run = {"seed": config.seed, "status": result.status, "test_acc": [m["eval_acc"] for m in result.history],
           "cpu_threads": torch.get_num_threads(), "device": torch.device(device).type}
    if config.ema_epochs:
        run["raw_test_acc"] = [m["raw_eval_acc"] for m in result.history]  # what the average changed
    return run


def _weights(model) -> bytes:
    return save({name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()})


def _train_fused(jobs: list[str], data, on_epoch: EpochCallback | None,
                 on_batch: Callable[[int, int], None] | None = None) -> list[tuple[dict, bytes]] | None:
    """Train every seed of ``jobs`` (one network, one recipe) at once as one fused network; None
    when the network has a layer fused training does not support."""
    tasks = [json.loads(job) for job in jobs]
    first = tasks[0]
    spec, config = ArchSpec.from_dict(first["spec"]), TrainConfig.from_dict(first["config"])
    seeds = [task["config"]["seed"] for task in tasks]
    try:
        check_fusable(spec)
    except SpecError:
        return None
    train = data.full_train()
    fitted = []
    for group in seed_groups(spec, seeds):  # as many seeds at once as one fused network may hold

        def epoch_done(epoch: int, metrics: list[dict | None], group: list[int] = group) -> None:
            if on_epoch:
                for seed, seed_metrics in zip(group, metrics):
                    if seed_metrics is not None:
                        on_epoch(first["trial"], seed, epoch, seed_metrics)

        fitted += fit_seeds(spec, config, group, train, data.test, device=first["device"], on_epoch=epoch_done,
                            on_batch=on_batch,
                            compile_model=should_compile(first["compile"], config, len(train), first["device"]),
                            teacher=_teacher(first, config))
    return [(_run_record(config.replace(seed=f.seed), f.result, first["device"]), _weights(f.model)) for f in fitted]


def _train_in_processes(jobs: list[str], workers: int, on_epoch: EpochCallback | None) -> list[tuple[dict, bytes]]:
    """Train the seeds ``workers`` at a time, each in its own process (see processes.run_processes)."""
    threads = int(os.environ.get("OMP_NUM_THREADS") or cpu_threads_per_process(workers))
    target = _seed_with_progress if on_epoch is not None else _seed_quietly
    trained = []
    for start in range(0, len(jobs), workers):
        for outcome in run_processes(target, jobs[start : start + workers], threads):
            if outcome.user_error:
                raise UserError(outcome.error)
            if not outcome.ok:
                raise_from = outcome.error.strip().splitlines()[-1] if outcome.error else outcome.died()
                raise UserError(f"a confirmation worker (pid {outcome.pid}) failed: {raise_from}")
            trained.append(outcome.result)
    return trained


def epoch_line(seed: int, epoch: int, metrics: dict) -> str:
    raw = f" (raw weights {metrics['raw_eval_acc']:.2f}%)" if "raw_eval_acc" in metrics else ""
    return f"  seed {seed} epoch {epoch:>2}: test {metrics['eval_acc']:.2f}%{raw}"


def print_epoch(trial: int, seed: int, epoch: int, metrics: dict) -> None:
    """One line per seed and epoch (module-level: worker processes print it too)."""
    print(epoch_line(seed, epoch, metrics), flush=True)


class ConfirmProgress:
    """What a confirmation shows: a line per trial before its seeds train, a line per seed and
    epoch, and, for seeds trained in this process, the batch, images per second and time left
    (a redrawn line on a terminal or in a notebook, a line at least every 30 s in a log)."""

    def __init__(self, seeds: int, first_seed: int = 0, workers: int = 1, fuse: bool = True) -> None:
        self.seeds, self.first_seed, self.workers, self.fuse = seeds, first_seed, workers, fuse
        self.meter = BatchMeter()
        self.fused = False

    def trial(self, record: TrialRecord, epochs: int) -> None:
        """``on_trial``: the trial about to be confirmed."""
        at_once = f", {min(self.workers, self.seeds)} at once" if self.workers > 1 else ""
        last = self.first_seed + self.seeds - 1
        seeds = f"{self.seeds} seeds ({self.first_seed}-{last})" if self.seeds > 1 else f"1 seed ({self.first_seed})"
        spec = ArchSpec.from_dict(record.spec)
        self.fused = self.workers == 1 and self.seeds > 1 and self.fuse and _fusable(spec)
        if self.workers == 1:
            batch = int(record.config.get("batch_size", 1)) if record.config else 1
            self.meter.start(epochs, batch * (self.seeds if self.fused else 1), runs=1 if self.fused else self.seeds)
        self.meter.write(f"confirming trial #{record.number} ({record.params:,} params): {seeds} x "
                         f"{plural(epochs, 'epoch')} on all 60,000 training images{at_once}, scored on the test set")

    def epoch(self, trial: int, seed: int, epoch: int, metrics: dict) -> None:
        """``on_epoch``."""
        self.meter.write(epoch_line(seed, epoch, metrics), run=0 if self.fused else seed - self.first_seed,
                         epoch=epoch)

    def batch(self, step: int, steps: int) -> None:
        """``on_batch``."""
        self.meter.batch(step, steps)

    def close(self) -> None:
        self.meter.close()


def _fusable(spec: ArchSpec) -> bool:
    try:
        check_fusable(spec)
    except SpecError:
        return False
    return True


def _seed_with_progress(job: str) -> tuple[dict, bytes]:
    return train_seed(job, on_epoch=print_epoch)


def _seed_quietly(job: str) -> tuple[dict, bytes]:
    return train_seed(job)


def _store(study: optuna.Study, record: TrialRecord, run: dict, blob: bytes, artifacts: Path) -> ConfirmationRun:
    """Store one seed's weights as an artifact of the study; its checked run record."""
    model = build_seeded(ArchSpec.from_dict(record.spec), run["seed"])
    model.load_state_dict(load(blob))
    run["weights_artifact"], run["weights_sha256"] = store_weights(
        model, artifacts, study, f"confirm-{record.number}-seed{run['seed']}")
    return ConfirmationRun.from_dict(run, f"confirmation seed {run['seed']}")
