"""What BEGIN IMMEDIATE costs the SQLite storage: trials side by side, as `run --jobs K` drives it.

K threads share one study in a fresh SQLite file. Each thread, as one trial of a search does,
asks for a trial, writes ``--epochs`` per-epoch reports and history user attributes, and tells
the result; ``--trials`` trials in all, a few of them queued first as a warm start queues them.
Two variants, alternated for ``--rounds``: ``immediate`` (the storage as `open_storage` returns
it: every transaction begins with BEGIN IMMEDIATE) and ``deferred`` (the same storage without
that hook: Python's sqlite3 default, under which two threads could take one queued trial).
Prints each round's trials per second, the medians, and last ``immediate / deferred: X.XXx``.

    python bench/sqlite_storage.py [--threads 8] [--trials 64] [--epochs 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path
from unittest import mock

import optuna

from mnist_search.storage import open_storage


def one_round(immediate: bool, threads: int, trials: int, epochs: int, directory: Path) -> tuple[float, int]:
    """Trials per second of one study driven by ``threads`` threads, and how many trials clashed
    (a queued trial another thread had also taken, found when writing to it after that one finished)."""
    url = f"sqlite:///{directory / f'{immediate}-{time.monotonic_ns()}.db'}"
    if immediate:
        storage = open_storage(url)
    else:
        with mock.patch("mnist_search.storage.resilient.begin_immediate"):
            storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="bench", direction="maximize")
    for x in range(threads // 2):  # queued trials, as a warm start leaves them
        study.enqueue_trial({"x": float(x)})
    remaining = iter(range(trials))
    lock = threading.Lock()
    clashes = []

    def worker() -> None:
        while True:
            with lock:
                if next(remaining, None) is None:
                    return
            trial = study.ask()
            try:
                trial.suggest_float("x", 0.0, 10.0)
                history = []
                for epoch in range(1, epochs + 1):
                    history.append({"epoch": epoch, "eval_acc": 99.0})
                    trial.report(99.0, epoch)
                    trial.set_user_attr("history", history)
                study.tell(trial, 99.0)
            except (ValueError, RuntimeError):  # Optuna's errors for writing to a finished trial
                clashes.append(trial.number)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - started
    storage.engine.dispose()
    return trials / seconds, len(clashes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")  # heartbeats outside Study.optimize
    rates: dict[str, list[float]] = {"deferred": [], "immediate": []}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.rounds):
            for name in ("deferred", "immediate"):
                rate, clashes = one_round(name == "immediate", args.threads, args.trials, args.epochs, Path(directory))
                rates[name].append(rate)
                print(f"round {round_ + 1} {name:9s}: {rate:6.1f} trials/s, {clashes} trials clashed", flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in medians.items():
        print(f"median {name:9s}: {value:6.1f} trials/s ({args.threads} threads, {args.epochs} epochs of reports each)")
    print(f"immediate / deferred: {medians['immediate'] / medians['deferred']:.2f}x")


if __name__ == "__main__":
    main()
