"""Helpers shared by tests: running the CLI as a user does, and checking its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_search", *args], capture_output=True, text=True, timeout=240,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


# A search small enough for a test: 2 epochs on the tiny synthetic data, judged on the last one.
TINY_SEARCH = {"epochs": 2, "last_k": 1, "val_size": 100, "seed": 3}


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
