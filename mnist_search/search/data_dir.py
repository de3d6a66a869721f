"""Which directory of MNIST files a command reads when none is named.

A search records the directory it trained on in its study, so the commands that follow it
(resume, confirm, a local worker) read the same files without being told again; a module
exported from the study has no study, so ``evaluate`` and ``train`` look in ``./data``, where
the Quick start puts the files. Only then the trainer's default, the per-user cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from mnist_search.defaults import DATA_DIR_ENV
from mnist_search.search import records
from mnist_search.trainer.data import RAW_FILES

LOCAL = Path("data")


def holds_mnist(root: str | os.PathLike) -> bool:
    raw = Path(root) / "MNIST" / "raw"
    return all((raw / name).is_file() for name in RAW_FILES)


def data_dir_for(explicit: str | os.PathLike | None, study: optuna.Study | None = None) -> str | None:
    """``explicit``, else None where $MNIST_SEARCH_DATA_DIR is set (the trainer reads it), else the
    directory ``study`` was searched on while it still holds the files, else ./data when it holds
    them, else None (the trainer's default)."""
    if explicit:
        return str(explicit)
    if os.environ.get(DATA_DIR_ENV):
        return None
    recorded = records.recorded_data_dir(study) if study is not None else None
    if recorded is not None and holds_mnist(recorded):
        return recorded
    return str(LOCAL) if holds_mnist(LOCAL) else None


def remember(study: optuna.Study, root: Path) -> None:
    """Record on ``study`` the directory its trials train on (absolute: commands run from anywhere)."""
    records.record_data_dir(study, str(root.expanduser().resolve()))
