"""Helpers shared by tests: running the CLI as a user does, and checking its one-line errors."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `mnist-search ARGS` in a new process, as a user does. ``env`` adds to the environment;
    a value of None removes that variable."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mnist_search", *args], capture_output=True, text=True, timeout=240,
        env={k: v for k, v in environment.items() if v is not None}, cwd=cwd,
    )


def cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """Run `mnist-search ARGS` through its entry point in this process and collect what a process
    would print to stdout and stderr: its own lines, warnings, log records and Optuna's log.

    For the many bad-input checks: a new interpreter spends seconds importing torch before it
    reads its first flag, which made those checks most of the suite's time. Exit codes and
    messages are the entry point's own; an unexpected exception propagates (failing the test)
    instead of printing a traceback. Output written below Python, straight to file descriptor 2,
    is not collected: each verb keeps its end-to-end tests in a real process (`cli`)."""
    import optuna

    from mnist_search import cli as entry

    out, err = io.StringIO(), io.StringIO()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    to_stderr = logging.StreamHandler(err)
    to_stderr.setLevel(logging.WARNING)
    to_stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(to_stderr)
    # Optuna's handler holds the stderr of its import, and other tests change its verbosity:
    # give it ours, at a new process's verbosity.
    optuna_streams = [(h, h.setStream(err)) for h in logging.getLogger("optuna").handlers
                      if isinstance(h, logging.StreamHandler)]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # what a new interpreter shows
            for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", hidden)
            try:
                code = entry.main(list(args))
            except SystemExit as exc:  # argparse's usage errors, --help and --version
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        optuna.logging.set_verbosity(verbosity)
        for handler, stream in optuna_streams:
            handler.setStream(stream)
        logging.getLogger().removeHandler(to_stderr)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    for warning in caught:
        err.write(warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno))
    return subprocess.CompletedProcess(["mnist-search", *args], code, out.getvalue(), err.getvalue())


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


# A search small enough for a test: 2 epochs on the tiny synthetic data, judged on the last one.
# One worker: by default a CPU run starts one per idle core, which depends on the test machine's load.
TINY_SEARCH = {"epochs": 2, "last_k": 1, "val_size": 100, "seed": 3, "workers": 1}


def search(url: str, data_dir, study_name: str = "mnist-search", artifacts=None, **settings):
    """Run a search in this process, as `mnist-search run` does; (study, the progress it printed)."""
    import io

    from mnist_search.search.progress import SearchProgress
    from mnist_search.search.runner import Location, run_search
    from mnist_search.search.settings import SearchSettings

    chosen = SearchSettings(**{**TINY_SEARCH, **settings})
    shown = io.StringIO()
    where = Location(url, study_name, str(data_dir), str(artifacts) if artifacts else None)
    study = run_search(chosen, where, SearchProgress(chosen.trials, stream=shown, live=False))
    return study, shown.getvalue()


def states(url: str, name: str = "mnist-search") -> list[str]:
    import optuna

    return [t.state.name for t in optuna.load_study(study_name=name, storage=url).trials]


def stored_epochs(*accuracies: float, seconds: float = 1.0) -> list[dict]:
    """A trial's history as the search stores it: one full EpochMetrics per accuracy."""
    from mnist_search.trainer import EpochMetrics

    return [EpochMetrics(epoch=epoch, train_loss=0.1, train_acc=acc, eval_loss=0.05, eval_acc=acc, lr=0.01,
                         seconds=seconds).to_dict() for epoch, acc in enumerate(accuracies, start=1)]
