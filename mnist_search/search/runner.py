"""Run a search from settings: create or resume the study, warm-start it, train trials here or in
local worker processes, and report progress. The command line and the Python API both call
:func:`run_search`; a worker on another machine calls :func:`join_search`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from mnist_search.defaults import DEFAULT_HEARTBEAT_GRACE_S
from mnist_search.errors import UserError, WorkFailed
from mnist_search.search import records
from mnist_search.search.data_dir import data_dir_for, remember
from mnist_search.search.machine import check_workers
from mnist_search.search.objective import Objective, TrainingDiverged
from mnist_search.search.processes import Outcome, check_main_guard, run_processes, unguarded_main_line
from mnist_search.search.progress import SearchProgress, counts, plural
from mnist_search.search.settings import SearchSettings
from mnist_search.search.study import make_pruner, make_sampler
from mnist_search.search.warm_start import best_of, enqueue
from mnist_search.storage import check_study_name, default_artifact_dir, mask_password, open_storage
from mnist_search.storage.files import remove_if_empty
from mnist_search.storage.opening import NoStore, check_location
from mnist_search.trainer import (
    cpu_threads_for_one_process,
    cpu_threads_per_process,
    free_cpu_cores,
    load_mnist,
    resolve_device,
)


@dataclass(frozen=True)
class Location:
    """Where a search lives: its store, its study, its data and its trials' weights."""

    storage_url: str
    study_name: str = "mnist-search"
    data_dir: str | None = None
    artifact_dir: str | None = None  # default: beside the SQLite file

    @property
    def artifacts(self) -> Path:
        return Path(self.artifact_dir) if self.artifact_dir else default_artifact_dir(self.storage_url)


def run_search(settings: SearchSettings, where: Location, progress: SearchProgress | None = None) -> optuna.Study:
    """Add ``settings.trials`` trials to the study at ``where`` (created if new) and return it.

    Bad input (data, storage, incompatible study) fails before any trial starts. With
    ``settings.workers`` > 1 the trials are split over that many local processes. Without a
    data directory, a study that exists reads the one it was searched on (see data_dir_for).
    """
    check_study_name(where.study_name)
    device = resolve_device(settings.device)
    settings = settings.replace(jobs=settings.jobs_for(device.type), workers=_workers(settings, device))
    if settings.workers > 1:
        check_workers(settings.workers)
        check_main_guard()
    # Everything that can be checked without writing is checked first: bad input leaves no
    # store, no study and no artifact directory behind.
    check_location(where.storage_url)
    try:
        source = open_storage(where.storage_url, heartbeat_grace=settings.heartbeat_grace_s, create=False)
    except NoStore:
        source = None
    where = replace(where, data_dir=data_dir_for(where.data_dir, find_existing(source, where.study_name)
                                                 if source is not None else None))
    data = load_search_data(where, settings)  # before the study: bad data writes nothing
    where = replace(where, data_dir=str(data.root))  # worker processes read the same files
    if settings.warm_start == where.study_name:
        raise UserError(f"warm_start names this study ({where.study_name!r}); name the study to copy from")
    picks = []
    if settings.warm_start:  # the study to copy from is checked first, so a typo creates nothing
        if source is None:
            raise UserError(f"no study named {settings.warm_start!r} to warm-start from: the store holds no "
                            "study yet")
        picks = best_of(load_existing(source, settings.warm_start), settings.warm_start_top)
    if source is not None:
        source.engine.dispose()
    made_artifacts = not where.artifacts.exists()
    check_artifacts_writable(where.artifacts)
    try:
        storage = open_storage(where.storage_url, heartbeat_grace=settings.heartbeat_grace_s)
        with quiet_optuna():
            study = create_or_resume(storage, where.study_name, settings)
    except BaseException:
        if made_artifacts:
            remove_if_empty(where.artifacts)
        raise
    remember(study, data.root)
    existing = sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))
    progress = progress or SearchProgress(settings.trials)
    if picks:
        queued = enqueue(study, settings.warm_start, picks)
        progress.line(f"warm start from study {settings.warm_start!r}: queued "
                      f"{', '.join(f'#{n}' for n in queued) or 'none'} at a budget of {settings.max_params:,} params"
                      + (f" ({len(picks) - len(queued)} queued or run before)" if len(queued) < len(picks) else ""))
    at_once = f" ({settings.jobs} at a time)" if settings.jobs > 1 else ""
    timeout = f", no new trial after {settings.timeout_minutes:g} min" if settings.timeout_minutes else ""
    progress.start(
        f"study {study.study_name!r} in {mask_password(where.storage_url)}: {plural(existing, 'trial')} so far; running "
        f"{settings.trials} more on {device}{at_once} (budget {settings.max_params:,} params, "
        f"{plural(settings.epochs, 'epoch')}" + (f" x {settings.seeds_per_trial} seeds" if settings.seeds_per_trial > 1 else "")
        + (f" on {settings.train_images:,} training images" if settings.train_images else "")
        + f", sampler {settings.sampler}, pruner {settings.pruner}{timeout}); weights in {where.artifacts}\n"
        + score_definition(settings), timeout_s=settings.timeout_s)
    with reported(progress, study):
        if settings.workers > 1:
            _fan_out(settings, where, study, progress)
        else:
            _use_free_cores(device, progress)
            _optimize(study, settings, where, data, str(device), _sampler_seed(study, settings, 1)[0], progress,
                      parallel=settings.jobs > 1)
    return study


def score_definition(settings: SearchSettings) -> str:
    """What a trial's score means, said once at the start of a run."""
    k, epochs = settings.last_k, settings.epochs
    judged = "every epoch" if k == epochs else f"the last {k} of {plural(epochs, 'epoch')}"
    text = (f"score = mean validation accuracy (%) over {judged}, on {settings.val_size:,} training images held out "
            "from training")
    if settings.seeds_per_trial > 1:
        text += f", averaged over {settings.seeds_per_trial} seeds"
    if k == epochs and epochs > 1:
        text += "; the early epochs count too, so it sits below the last epochs' accuracy"
    if settings.pareto:
        text += "; pareto: fewer parameters are better too"
    return text


@contextlib.contextmanager
def reported(progress: SearchProgress, study: optuna.Study):
    """Close the live line and print the run's summary however the run ends, with why it ended."""
    try:
        yield
    except BaseException as exc:
        progress.close()
        if isinstance(exc, (KeyboardInterrupt, WorkFailed)):
            progress.line(progress.summary(study, stopped=exc))
        raise
    progress.close()
    progress.line(progress.summary(study))


def find_existing(storage, study_name: str) -> optuna.Study | None:
    """The study ``study_name`` when it exists; None when not (creating nothing)."""
    if study_name not in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
        return None
    return optuna.load_study(storage=storage, study_name=study_name, sampler=None, pruner=None)


# A worker's own settings: how much it runs and on what, never taken from the study's creator
# (another machine, another device). The seed is taken from the study unless given (each process
# mixes it with a slot of its own anyway); every other setting is the study's.
WORKER_OWN_SETTINGS = ("trials", "workers", "jobs", "device", "compile", "timeout_minutes", "heartbeat_grace_s",
                       "warm_start", "warm_start_top", "allow_mixed")


def join_search(where: Location, given: Mapping[str, Any] | None = None,
                progress: SearchProgress | None = None) -> optuna.Study:
    """Run trials of an existing study from this process (a worker on any machine) with the
    settings the study was created with.

    ``given`` holds this worker's settings (``WORKER_OWN_SETTINGS``: how many trials, on what
    device, ...; SearchSettings' defaults otherwise) and may restate the study's own, but a value
    that contradicts what the study records is refused, naming each difference.
    """
    given = dict(given or {})
    storage = open_storage(where.storage_url, heartbeat_grace=given.get("heartbeat_grace_s",
                                                                        DEFAULT_HEARTBEAT_GRACE_S), create=False)
    settings = adopted_settings(load_existing(storage, where.study_name), given)
    device = resolve_device(settings.device)
    settings = settings.replace(jobs=settings.jobs_for(device.type))
    study, data, where = _open_existing(settings, where)
    check_compatible(study, settings)
    check_artifacts_writable(where.artifacts)
    progress = progress or SearchProgress(settings.trials)
    progress.start(f"joining study {study.study_name!r} in {mask_password(where.storage_url)}: "
                   f"{plural(settings.trials, 'trial')} on {device}\n" + score_definition(settings),
                   timeout_s=settings.timeout_s)
    with reported(progress, study):
        _use_free_cores(device, progress)
        # Other workers may share the study: sample as if trials run side by side.
        _optimize(study, settings, where, data, str(device), _sampler_seed(study, settings, 1)[0], progress,
                  parallel=True)
    return study


def adopted_settings(study: optuna.Study, given: Mapping[str, Any]) -> SearchSettings:
    """The settings a worker joining ``study`` runs with: the study's recorded ones overlaid with
    ``given``. A given value contradicting the study's (other than the worker's own and the seed)
    is a UserError naming each difference, unless ``allow_mixed`` is given."""
    stored = records.stored_settings(study)
    if stored is None:  # a study made by an older mnist-search, or by Optuna alone
        return SearchSettings.from_dict(dict(given))
    differences = [(name, stored[name], value) for name, value in given.items()
                   if name not in (*WORKER_OWN_SETTINGS, "seed") and name in stored and stored[name] != value]
    if differences and not given.get("allow_mixed"):
        raise SettingsDiffer(study.study_name, differences)
    known = {f.name for f in fields(SearchSettings)}
    adopted = {name: value for name, value in stored.items() if name in known and name not in WORKER_OWN_SETTINGS}
    return SearchSettings.from_dict({**adopted, **given})


class SettingsDiffer(UserError):
    """A worker was given settings that contradict the study's: (name, the study's, given) each."""

    def __init__(self, study_name: str, differences: list[tuple[str, Any, Any]]) -> None:
        self.study_name, self.differences = study_name, differences
        super().__init__(self.message())

    def message(self, spell=lambda name: name) -> str:
        """The message, each setting named by ``spell(name)`` (a command passes its flag's spelling)."""
        listed = "; ".join(f"{spell(name)} {ours!r} (the study's) against {theirs!r}"
                           for name, ours, theirs in self.differences)
        return (f"study {self.study_name!r} was created with other settings than this worker was given: {listed}; "
                f"leave them out (a worker takes the study's settings) or {spell('allow_mixed')}")


def _open_existing(settings: SearchSettings, where: Location):
    """The existing study at ``where``, the data its trials train on, and ``where`` with that data's
    directory: what a worker of any kind opens before it trains (the study's own data directory
    when ``where`` names none and this machine has it)."""
    storage = open_storage(where.storage_url, heartbeat_grace=settings.heartbeat_grace_s, create=False)
    study = load_existing(storage, where.study_name)
    data = load_search_data(replace(where, data_dir=data_dir_for(where.data_dir, study)), settings)
    return study, data, replace(where, data_dir=str(data.root))


def load_search_data(where: Location, settings: SearchSettings):
    """The MNIST splits a search trains and scores on."""
    data = load_mnist(where.data_dir, val_size=settings.val_size)
    return data.with_train_images(settings.train_images) if settings.train_images else data


def load_teacher(settings: SearchSettings):
    """The network a search distils from, or None."""
    if settings.teacher is None:
        return None
    from mnist_search.models.weights import load_network

    return load_network(settings.teacher, settings.teacher_weights)


def _workers(settings: SearchSettings, device) -> int:
    """``settings.workers``, else the measured best for ``device`` (SearchSettings.workers_for);
    one process where worker processes could not start (a script calling the library outside
    its ``if __name__ == "__main__":``), rather than refusing a default."""
    if settings.workers is not None:
        return settings.workers
    free = free_cpu_cores() if device.type == "cpu" else 1
    workers = settings.workers_for(device.type, free)
    if workers > 1 and unguarded_main_line() is not None:
        return 1
    return workers


def _use_free_cores(device, progress: SearchProgress) -> None:
    """One training process here: as many threads as there are idle cores, saying so when fewer."""
    if device.type != "cpu":
        return
    threads, note = cpu_threads_for_one_process()
    torch.set_num_threads(threads)
    if note:
        progress.line(note)


def create_or_resume(storage, study_name: str, settings: SearchSettings) -> optuna.Study:
    """The study ``study_name``, created with ``settings`` recorded, or resumed when compatible."""
    directions = ["maximize", "minimize"] if settings.pareto else ["maximize"]
    study = optuna.create_study(storage=storage, study_name=study_name, directions=directions, load_if_exists=True)
    check_compatible(study, settings)
    records.record_settings(study, settings.to_dict())
    if study.metric_names is None:
        name_metrics(study, settings)
    return study


def name_metrics(study: optuna.Study, settings: SearchSettings) -> None:
    """Name the objective(s), so optuna-dashboard says what the score is rather than "Objective 0"."""
    judged = "all epochs" if settings.last_k == settings.epochs else f"last {plural(settings.last_k, 'epoch')}"
    names = [f"score (mean val acc, {judged})"] + (["parameters"] if settings.pareto else [])
    with warnings.catch_warnings():  # experimental in Optuna 4, and stable in what it stores
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


def check_compatible(study: optuna.Study, settings: SearchSettings) -> None:
    """Refuse a study whose direction(s) or recorded settings make its scores mean something else."""
    expected = ["maximize", "minimize"] if settings.pareto else ["maximize"]
    found = [d.name.lower() for d in study.directions]
    if found != expected:
        raise UserError(f"study {study.study_name!r} optimises {' and '.join(found)}, but objective "
                        f"{settings.objective!r} needs {' and '.join(expected)}; choose another study name"
                        + (" or objective" if len(found) != len(expected) else ""))
    stored = records.stored_settings(study)
    if stored is not None and not settings.allow_mixed:
        differences = settings.score_differences(stored)
        if differences:
            raise UserError(f"study {study.study_name!r} was created with settings that give its scores another "
                            f"meaning ({'; '.join(differences)}); use its settings, another study name, or allow_mixed")


def load_existing(storage, study_name: str) -> optuna.Study:
    """An existing study; a user error naming the studies there when there is none of that name."""
    try:
        return optuna.load_study(storage=storage, study_name=study_name, sampler=None, pruner=None)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UserError(f"no study named {study_name!r} in this storage"
                        + (f"; studies there: {', '.join(names)}" if names else "; it holds no study yet")) from None


def check_artifacts_writable(directory: Path) -> None:
    """Before any training: the weights of a finished trial must have somewhere to go."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write trial weights to {directory}: {exc.strerror or exc}; "
                        "choose another artifact directory") from None


def _sampler_seed(study: optuna.Study, settings: SearchSettings, count: int) -> list[int | None]:
    """``count`` sampler seeds no other process of any run of this study has used.

    A fixed ``seed`` alone would make every worker (and every resumed run) replay the same
    samples; each process takes the next slot of a counter stored in the study, and its seed
    mixes the run's seed with the study's name and the slot.
    """
    if settings.seed is None:
        return [None] * count
    first = records.take_worker_slots(study, count)
    name = zlib.crc32(study.study_name.encode())
    return [(settings.seed * 1_000_003 + name * 7919 + slot) % 2**32 for slot in range(first, first + count)]


def _optimize(study: optuna.Study, settings: SearchSettings, where: Location, data, device: str,
              sampler_seed: int | None, progress: SearchProgress, parallel: bool) -> None:
    """Run ``settings.trials`` trials of ``study`` in this process (``settings.jobs`` at a time)."""
    study.sampler = make_sampler(settings.sampler, sampler_seed, parallel=parallel)
    # The steps a trial reports (see Objective): one per epoch with fused seeds, else every seed's epochs.
    study.pruner = make_pruner(settings.pruner, settings.epochs * (1 if settings.fuse_seeds else settings.seeds_per_trial))

    def on_epoch(number: int, seed: int, epoch: int, metrics) -> None:
        progress.epoch(number, seed, settings.seeds_per_trial, epoch, settings.epochs, metrics)

    def on_start(number: int, spec, config, fused: bool) -> None:
        progress.trial_started(number, spec, config, seeds=settings.seeds_per_trial, fused=fused)

    objective = Objective(settings=settings, data=data, device=device, artifact_dir=where.artifacts,
                          teacher=load_teacher(settings), worker=f"{socket.gethostname()}:{os.getpid()}",
                          on_epoch=on_epoch, on_start=on_start, on_batch=progress.batch)
    with quiet_optuna():
        # Optuna checks the timeout between trials, so a running trial is never cut short.
        study.optimize(objective, n_trials=settings.trials, timeout=settings.timeout_s, callbacks=[progress],
                       catch=(TrainingDiverged,), gc_after_trial=False, n_jobs=settings.jobs)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def quiet_optuna():
    """Optuna's INFO log repeats our progress lines (and warnings with tracebacks): show only its
    errors while we run, unless the caller asked for its debug log.

    A filter of our own on Optuna's handlers, not its verbosity: the caller's setting is never
    changed, and searches in several threads each add and remove their own filter, so none can
    restore a level another one set.
    """
    if optuna.logging.get_verbosity() <= optuna.logging.DEBUG:
        yield
        return
    handlers = list(logging.getLogger("optuna").handlers)
    quiet = _BelowError()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def _fan_out(settings: SearchSettings, where: Location, study: optuna.Study, progress: SearchProgress) -> None:
    """Split the trials over ``settings.workers`` local processes sharing the study; fail at once
    the trial of any worker that dies, and raise WorkFailed naming it."""
    shares = [s for s in (settings.trials // settings.workers + (i < settings.trials % settings.workers)
                          for i in range(settings.workers)) if s]
    seeds = _sampler_seed(study, settings, len(shares))
    threads = int(os.environ.get("OMP_NUM_THREADS") or cpu_threads_per_process(len(shares)))
    payloads = [json.dumps({"settings": settings.replace(trials=share, workers=1).to_dict(), "index": index,
                            "where": vars(where), "sampler_seed": seed})
                for index, (share, seed) in enumerate(zip(shares, seeds))]
    progress.line(f"starting {len(shares)} worker processes ({', '.join(map(str, shares))} trials, "
                  f"{threads} CPU thread{'s' if threads > 1 else ''} each)")
    failures: list[str] = []

    def ended(outcome: Outcome) -> None:
        if outcome.ok or outcome.user_error:
            return
        # At once, not after the heartbeat grace period: the trial is not coming back.
        held = fail_trials_of(study, f"{socket.gethostname()}:{outcome.pid}")
        holding = f" holding trial {', '.join(f'#{n}' for n in held)} (now marked failed)" if held else ""
        reason = f"failed: {outcome.error.strip().splitlines()[-1]}" if outcome.error else outcome.died()
        failures.append(f"worker {outcome.index + 1} (pid {outcome.pid}){holding} {reason}")
        progress.line(f"worker {outcome.index + 1} (pid {outcome.pid}){holding} {reason}")

    outcomes = run_processes(work_share, payloads, threads, on_exit=ended)
    progress.done += sum(o.result or 0 for o in outcomes if o.ok)  # the workers' trials are this run's
    ours = {f"{socket.gethostname()}:{o.pid}" for o in outcomes}
    progress.finished += [t.number for t in study.get_trials(deepcopy=False)
                          if t.state.is_finished() and records.worker_of(t) in ours]
    refused = next((o.error for o in outcomes if o.user_error), None)
    if refused:
        raise UserError(refused)
    progress.line(f"workers finished; {counts(study)}; {progress.best(study)}")
    if failures:
        raise WorkFailed("; ".join(failures))


def fail_trials_of(study: optuna.Study, worker: str) -> list[int]:
    """Mark failed the running trials that ``worker`` (host:pid) held; their numbers."""
    storage = study._storage  # Optuna has no public way to end another process's trial
    held = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if records.worker_of(t) == worker]
    for trial in held:
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return [t.number for t in held]


def work_share(payload: str) -> int:
    """A local worker process: run its share of the trials; returns how many ran."""
    job = json.loads(payload)
    settings = SearchSettings.from_dict(job["settings"])  # jobs already resolved by the parent
    study, data, where = _open_existing(settings, Location(**job["where"]))
    progress = SearchProgress(settings.trials, live=False, prefix=f"[worker {job['index'] + 1}] ")
    _optimize(study, settings, where, data, str(resolve_device(settings.device)), job["sampler_seed"], progress,
              parallel=True)
    return progress.done
