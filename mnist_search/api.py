"""The Python API: search, confirm and export, for notebooks and scripts.

The same library calls the command line makes, with the same progress; nothing here exits the
process or installs signal handlers, so each function can be called again in the same process.
Heavy modules (torch, Optuna) are imported when a function is called, not when this is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_search.search.settings import SearchSettings

if TYPE_CHECKING:
    import optuna

    from mnist_search.search.exporting import Exported
    from mnist_search.search.records import Confirmation, TrialRecord


def search(settings: SearchSettings | None = None, *, storage: str | None = None, study_name: str = "mnist-search",
           data_dir: str | os.PathLike | None = None, artifacts: str | os.PathLike | None = None,
           progress: bool = True, **options: Any) -> optuna.Study:
    """Run a budget-aware search and return its Optuna study.

    Creates the study ``study_name`` in ``storage`` (default $MNIST_SEARCH_STORAGE, else
    sqlite:///mnist-search.db) or resumes it, and adds ``trials`` trials, showing each epoch's
    progress unless ``progress`` is False. ``data_dir`` holds MNIST/raw (default
    $MNIST_SEARCH_DATA_DIR, else ~/.cache/mnist-search); ``artifacts`` is where the trials'
    weights go (default: beside the SQLite file).

    With ``workers`` > 1 the trials run in spawned processes, which import your script again:
    in a script, call this under ``if __name__ == "__main__":`` (it is refused otherwise, before
    anything starts). Nothing process-wide is left changed: Optuna's verbosity, the global
    torch generator and ``sys.stdout``/``sys.stderr`` are as they were, in every thread.

    The options are those of :class:`SearchSettings`, given as keyword arguments or as
    ``settings=SearchSettings(...)`` (keywords then override it):
    """
    from mnist_search.search.progress import SearchProgress
    from mnist_search.search.runner import Location, run_search
    from mnist_search.storage import resolve_storage_url

    chosen = (settings or SearchSettings()).replace(**options) if options else (settings or SearchSettings())
    where = Location(storage_url=resolve_storage_url(storage), study_name=study_name,
                     data_dir=str(data_dir) if data_dir is not None else None,
                     artifact_dir=str(artifacts) if artifacts is not None else None)
    return run_search(chosen, where, SearchProgress(chosen.trials, silent=not progress))


search.__doc__ = (search.__doc__ or "") + (SearchSettings.__doc__ or "").split("Attributes:", 1)[-1]


def confirm(study: optuna.Study, top: int = 3, seeds: int = 3, *, trials: list[int] | None = None,
            first_seed: int = 0, last_k: int = 5, target: float = 99.4, workers: int = 1, device: str = "auto",
            compile: str = "auto", data_dir: str | os.PathLike | None = None,
            artifacts: str | os.PathLike | None = None,
            progress: bool = True) -> list[tuple[TrialRecord, Confirmation]]:
    """Retrain the ``top`` best trials of ``study`` (or the numbers in ``trials``) on all 60,000
    training images with ``seeds`` seeds each, scoring the TEST set every epoch; store each
    confirmation in the study and return (trial, confirmation) pairs.

    A confirmation judges consistency: every one of the last ``last_k`` epochs of every seed at
    or above ``target`` percent. ``workers`` trains that many seeds at once in spawned
    processes (in a script: call it under ``if __name__ == "__main__":``, as for :func:`search`).
    """
    from mnist_search.search.confirm import confirm as confirm_study
    from mnist_search.search.confirm import print_epoch

    return confirm_study(study, top=top, trials=trials, seeds=seeds, first_seed=first_seed, last_k=last_k,
                         target=target, workers=workers, device=device, compile=compile,
                         data_dir=str(data_dir) if data_dir is not None else None,
                         artifact_dir=artifacts if artifacts is not None else artifact_dir_of(study),
                         on_epoch=print_epoch if progress else None)


def export(study: optuna.Study, output: str | os.PathLike = "best_net.py", weights: str | os.PathLike | None = None,
           *, max_params: int | None = None, artifacts: str | os.PathLike | None = None) -> Exported:
    """Write the best trial of ``study`` (within ``max_params``) as a standalone module at
    ``output`` and, with ``weights``, the weights that go with it (safetensors).

    "Best": the confirmed trial with the highest mean last-K test accuracy, else the trial with
    the highest validation score; a confirmed trial ships its median confirmation seed's weights.
    Outputs never replace the study's store, its weights or each other, and are written whole
    or not at all.
    """
    from mnist_search.search.exporting import export as export_study
    from mnist_search.storage.files import store_files

    url = storage_url_of(study)
    return export_study(study, output, weights=weights, max_params=max_params,
                        artifact_dir=artifacts if artifacts is not None else artifact_dir_of(study),
                        protected=store_files(url) if url else ())


def storage_url_of(study: optuna.Study) -> str | None:
    """The URL of the RDB store ``study`` lives in, when it has one (Optuna keeps it privately)."""
    backend = getattr(study._storage, "_backend", study._storage)
    return getattr(backend, "url", None)


def artifact_dir_of(study: optuna.Study) -> Path:
    """Where the trials' weights of ``study`` are by default: beside its SQLite file."""
    from mnist_search.storage import default_artifact_dir

    url = storage_url_of(study)
    return default_artifact_dir(url) if url else Path("mnist-search-artifacts")
