"""`mnist-search run` / `mnist-search worker`: run trials of a budget-aware search on a shared study."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna

from mnist_search.defaults import STORAGE_ENV
from mnist_search.errors import ConfigError
from mnist_search.search import Objective, TrainingDiverged, is_pareto, make_pruner, make_sampler, open_study, score
from mnist_search.search.objective import pruned_at
from mnist_search.search.warm_start import best_of, enqueue
from mnist_search.storage import default_artifact_dir, mask_password, open_storage, resolve_storage_url
from mnist_search.trainer import cpu_threads_per_process, load_mnist, resolve_device

# The narrowest network the space can build (one 4-wide conv per block and a 1x1 head) has ~300 parameters.
MIN_BUDGET = 300
# Each job trains on a CUDA stream of its own out of PyTorch's pool of 32; on the H100 the
# throughput stopped growing at 8 (BENCHMARKS.md).
MAX_JOBS = 16


def run(args: argparse.Namespace) -> int:
    if args.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {args.trials}")
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    if args.max_params < MIN_BUDGET:
        raise ConfigError(f"--max-params {args.max_params} is too small for any network in the space; use at least {MIN_BUDGET}")
    if not 1 <= args.last_k <= args.epochs:
        raise ConfigError(f"--last-k must be between 1 and --epochs ({args.epochs}), got {args.last_k}")
    if args.seeds_per_trial < 1:
        raise ConfigError(f"--seeds-per-trial must be at least 1, got {args.seeds_per_trial}")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of minutes, got {args.timeout}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if not 1 <= args.jobs <= MAX_JOBS:
        raise ConfigError(f"--jobs must be between 1 and {MAX_JOBS}, got {args.jobs}")
    warm_start = getattr(args, "warm_start", None)  # `run` only: workers take what `run` queued
    if warm_start is not None:
        if args.warm_start_top < 1:
            raise ConfigError(f"--warm-start-top must be at least 1, got {args.warm_start_top}")
        if warm_start == args.study_name:
            raise ConfigError(f"--warm-start names this study ({warm_start!r}); name the study to copy from")
    device = resolve_device(args.device)
    # Our own progress lines report each trial; Optuna's warnings repeat them with tracebacks.
    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.ERROR)
    url = resolve_storage_url(args.storage)
    if args.heartbeat_grace < 4:
        raise ConfigError(f"--heartbeat-grace must be at least 4 seconds, got {args.heartbeat_grace}")
    storage = open_storage(url, heartbeat_grace=args.heartbeat_grace)
    data = load_mnist(args.data_dir, val_size=args.val_size)  # before touching the study: bad data writes nothing
    parallel = args.workers > 1 or args.jobs > 1 or args.verb == "worker"  # trials may run side by side
    # The study to copy from is checked first, so a typo creates no empty study.
    picks = best_of(open_study(storage, warm_start, None, None, create=False), args.warm_start_top) if warm_start else []
    study = open_study(storage, args.study_name, make_sampler(args.sampler, args.seed, parallel=parallel),
                       make_pruner(args.pruner, args.epochs * args.seeds_per_trial),  # every seed's epochs are steps
                       create=args.verb == "run", objective=args.objective)
    pareto = is_pareto(study)
    existing = sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))
    if picks:
        queued = enqueue(study, warm_start, picks)
        print(f"warm start from study {warm_start!r}: queued {', '.join(f'#{n}' for n in queued) or 'none'} at a "
              f"budget of {args.max_params:,} params"
              + (f" ({len(picks) - len(queued)} queued or run before)" if len(queued) < len(picks) else ""), flush=True)
        waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        if waiting > args.trials:
            print(f"note: {waiting} queued trials and --trials {args.trials}: the rest run first in the next run "
                  "or worker on this study", flush=True)
    if args.workers > 1:
        return _run_workers(args, study.study_name, url)
    if args.seed is not None and existing:
        # A fixed seed on a resumed study would replay the random startup samples it already
        # tried; offsetting by the trials so far keeps the run reproducible but new.
        study.sampler = make_sampler(args.sampler, args.seed + existing, parallel=parallel)
    artifact_dir = Path(args.artifacts) if args.artifacts else default_artifact_dir(url)
    objective = Objective(data=data, max_params=args.max_params, epochs=args.epochs, device=str(device),
                          artifact_dir=artifact_dir, last_k=args.last_k,
                          seed=args.seed if args.seed is not None else 0,  # training seed; the sampler's may be random
                          compile_choice=args.compile, pareto=pareto, seeds=args.seeds_per_trial)
    at_once = f" ({args.jobs} at a time)" if args.jobs > 1 else ""
    print(f"study {study.study_name!r} in {mask_password(url)}: {existing} trials so far; running {args.trials} more "
          f"on {device}{at_once} (budget {args.max_params:,} params, {args.epochs} epochs"
          + (f" x {args.seeds_per_trial} seeds" if args.seeds_per_trial > 1 else "") + f", sampler {args.sampler}, "
          f"pruner {args.pruner}); weights in {artifact_dir}")
    progress = Progress(args.trials, existing)
    started = time.perf_counter()
    # Optuna checks the timeout between trials, so a running trial is never cut short.
    timeout_s = args.timeout * 60 if args.timeout is not None else None
    study.optimize(objective, n_trials=args.trials, timeout=timeout_s, callbacks=[progress],
                   catch=(TrainingDiverged,), gc_after_trial=False, n_jobs=args.jobs)
    print(progress.summary(study, time.perf_counter() - started))
    if args.verb == "run":  # `run --workers K` prints it once, after its workers
        print(next_step(args, url, study.study_name))
    return 0


def next_step(args: argparse.Namespace, url: str, study_name: str) -> str:
    storage_flag = f" --storage {mask_password(url)}" if args.storage else ""
    return (f"next: mnist-search export{storage_flag} --study-name {study_name} --output best_net.py "
            "--weights best_net.safetensors")


class Progress:
    """Prints one line per finished trial: n/N, its outcome, the best so far, the counts."""

    def __init__(self, total: int, already: int) -> None:
        self.total, self.already, self.done = total, already, 0
        self._lock = threading.Lock()  # with --jobs, trials finish in several threads

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with self._lock:
            self._report(study, trial)

    def _report(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.done += 1
        params = trial.user_attrs.get("params")
        outcome = {
            optuna.trial.TrialState.COMPLETE: f"score {score(trial):.3f}" if trial.values else "complete",
            optuna.trial.TrialState.PRUNED: "infeasible" if "infeasible" in trial.user_attrs else
            f"pruned at {pruned_at(trial)}",
            optuna.trial.TrialState.FAIL: "failed",
        }.get(trial.state, trial.state.name.lower())
        print(f"trial {self.done}/{self.total} (#{trial.number}): {outcome}"
              + (f", {params:,} params" if params else "") + f" | {self.best(study)} | {self.counts(study)}", flush=True)

    @staticmethod
    def best(study: optuna.Study) -> str:
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not completed:
            return "no completed trial yet"
        best = max(completed, key=score)
        return f"best #{best.number} {score(best):.3f} ({best.user_attrs.get('params', 0):,} params)"

    @staticmethod
    def counts(study: optuna.Study) -> str:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        infeasible = sum("infeasible" in t.user_attrs for t in study.get_trials(deepcopy=False))
        S = optuna.trial.TrialState
        waiting = states.count(S.WAITING)
        return (f"completed {states.count(S.COMPLETE)}, pruned {states.count(S.PRUNED) - infeasible}, "
                f"infeasible {infeasible}, failed {states.count(S.FAIL)}" + (f", queued {waiting}" if waiting else ""))

    def summary(self, study: optuna.Study, seconds: float) -> str:
        return f"finished {self.done} trials in {seconds / 60:.1f} min; {self.counts(study)}; {self.best(study)}"


def worker_env(environ: dict[str, str], url: str, workers: int) -> dict[str, str]:
    """The environment of each of ``workers`` local worker processes: the cores split between
    them (``cpu_threads_per_process``), unless the user set OMP_NUM_THREADS."""
    return {"OMP_NUM_THREADS": str(cpu_threads_per_process(workers)), **environ, STORAGE_ENV: url}


def _run_workers(args: argparse.Namespace, study_name: str, url: str) -> int:
    """Split the trials over ``--workers`` local `mnist-search worker` processes sharing the study."""
    shares = [args.trials // args.workers + (i < args.trials % args.workers) for i in range(args.workers)]
    # The URL goes to the children in the environment, not argv: `ps` shows argv (and passwords) to every user.
    env = worker_env(os.environ, url, args.workers)
    passed = ["--study-name", study_name, "--max-params", str(args.max_params),
              "--epochs", str(args.epochs), "--last-k", str(args.last_k), "--jobs", str(args.jobs),
              "--seeds-per-trial", str(args.seeds_per_trial),
              "--sampler", args.sampler,
              "--pruner", args.pruner, "--device", args.device, "--compile", args.compile,
              "--val-size", str(args.val_size), "--objective", args.objective, "--heartbeat-grace", str(args.heartbeat_grace)]
    for flag, value in (("--artifacts", args.artifacts), ("--data-dir", args.data_dir), ("--timeout", args.timeout)):
        if value:
            passed += [flag, str(value)]
    print(f"starting {args.workers} worker processes on study {study_name!r} ({', '.join(map(str, shares))} trials, "
          f"{env['OMP_NUM_THREADS']} CPU threads each)")
    children = []
    for index, share in enumerate(s for s in shares if s):
        seed = ["--seed", str(args.seed + index)] if args.seed is not None else []
        children.append(subprocess.Popen([sys.executable, "-m", "mnist_search", "worker", "--trials", str(share),
                                          *passed, *seed], env=env))
    try:
        codes = [child.wait() for child in children]
    except KeyboardInterrupt:
        for child in children:
            child.send_signal(signal.SIGINT)
        for child in children:
            child.wait()
        raise
    study = optuna.load_study(study_name=study_name, storage=open_storage(url, args.heartbeat_grace))
    print(f"workers finished; {Progress.counts(study)}; {Progress.best(study)}")
    print(next_step(args, url, study_name))
    return max(codes)
