"""The Python API: search, confirm, export, evaluate and report, for notebooks and scripts.

The same library calls the command line makes, with the same progress; nothing here exits the
process or installs signal handlers, so each function can be called again in the same process.
Heavy modules (torch, Optuna) are imported when a function is called, not when this is imported.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_search.search.settings import SearchSettings

if TYPE_CHECKING:
    import optuna

    from mnist_search.search.evaluating import Evaluation
    from mnist_search.search.exporting import Exported
    from mnist_search.search.records import Confirmation, TrialRecord


def search(settings: SearchSettings | None = None, *, storage: str | None = None, study_name: str = "mnist-search",
           data_dir: str | os.PathLike | None = None, artifacts: str | os.PathLike | None = None,
           progress: bool = True, **options: Any) -> optuna.Study:
    """Run a budget-aware search and return its Optuna study.

    Creates the study ``study_name`` in ``storage`` (default $MNIST_SEARCH_STORAGE, else
    sqlite:///mnist-search.db) or resumes it, and adds ``trials`` trials, showing each trial's
    network and its progress unless ``progress`` is False. ``data_dir`` holds MNIST/raw (default
    $MNIST_SEARCH_DATA_DIR, else the directory the study was searched on, else ./data when it
    holds the files, else ~/.cache/mnist-search); ``artifacts`` is where the trials' weights go
    (default: beside the SQLite file).

    With ``workers`` > 1 the trials run in spawned processes, which import your script again:
    in a script, call this under ``if __name__ == "__main__":`` (it is refused otherwise, before
    anything starts). Nothing process-wide is left changed: Optuna's verbosity, the global
    torch generator and ``sys.stdout``/``sys.stderr`` are as they were, in every thread.

    The options are those of :class:`SearchSettings`, given as keyword arguments or as
    ``settings=SearchSettings(...)`` (keywords then override it); each with its default:
    """
    from mnist_search.search.progress import SearchProgress
    from mnist_search.search.runner import Location, run_search
    from mnist_search.storage import resolve_storage_url

    chosen = (settings or SearchSettings()).replace(**options) if options else (settings or SearchSettings())
    where = Location(storage_url=resolve_storage_url(storage), study_name=study_name,
                     data_dir=str(data_dir) if data_dir is not None else None,
                     artifact_dir=str(artifacts) if artifacts is not None else None)
    return run_search(chosen, where, SearchProgress(chosen.trials, silent=not progress))


def _settings_help() -> str:
    """SearchSettings' attribute descriptions, each with its default, for ``help(search)``."""
    described = (SearchSettings.__doc__ or "").split("Attributes:", 1)[-1]
    defaults = {f.name: f.default for f in fields(SearchSettings) if f.default is not MISSING}
    lines = []
    for line in described.splitlines():
        name, colon, rest = line.strip().partition(":")
        if colon and name in defaults and line.startswith(" " * 8) and not line.startswith(" " * 12):
            line = f"        {name} (default {defaults[name]!r}):{rest}"
        lines.append(line)
    return "\n".join(lines)


def _with_settings(function, signature_of=None) -> None:
    """Show every SearchSettings field as a keyword of ``function`` with its default, so that
    help() and a notebook's completion list them rather than ``**options``."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    names = {p.name for p in kept}
    extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
             for f in fields(SearchSettings) if f.name not in names]
    function.__signature__ = signature.replace(parameters=kept + extra)


search.__doc__ = (search.__doc__ or "") + _settings_help()
_with_settings(search)


def confirm(study: optuna.Study, top: int = 3, seeds: int = 3, *, trials: list[int] | None = None,
            first_seed: int = 0, last_k: int | None = None, target: float = 99.4, workers: int = 1, device: str = "auto",
            compile: str = "auto", data_dir: str | os.PathLike | None = None,
            artifacts: str | os.PathLike | None = None,
            progress: bool = True) -> list[tuple[TrialRecord, Confirmation]]:
    """Retrain the ``top`` best trials of ``study`` (or the numbers in ``trials``) on all 60,000
    training images with ``seeds`` seeds each, scoring the TEST set every epoch; store each
    confirmation in the study and return (trial, confirmation) pairs.

    A confirmation judges consistency: every one of the last ``last_k`` epochs of every seed at
    or above ``target`` percent (``last_k`` default: the K the search scored on, at most the
    trial's epochs). ``workers`` trains that many seeds at once in spawned processes (in a
    script: call it under ``if __name__ == "__main__":``, as for :func:`search`). ``data_dir``
    default: the directory the study was searched on (then as for :func:`search`).
    """
    from mnist_search.search.confirm import ConfirmProgress
    from mnist_search.search.confirm import confirm as confirm_study
    from mnist_search.search.settings import ConfirmSettings

    settings = ConfirmSettings(top=top, trials=tuple(trials) if trials is not None else None, seeds=seeds,
                               first_seed=first_seed, last_k=last_k, target=target, workers=workers, device=device,
                               compile=compile)
    shown = ConfirmProgress(settings) if progress else None
    try:
        return confirm_study(study, settings, data_dir=str(data_dir) if data_dir is not None else None,
                             artifact_dir=artifacts if artifacts is not None else artifact_dir_of(study),
                             on_epoch=shown.epoch if shown else None, on_trial=shown.trial if shown else None,
                             on_batch=shown.batch if shown else None)
    finally:
        if shown:
            shown.close()


def export(study: optuna.Study, output: str | os.PathLike = "best_net.py", weights: str | os.PathLike | None = None,
           *, max_params: int | None = None, artifacts: str | os.PathLike | None = None,
           onnx: str | os.PathLike | None = None, int8: str | os.PathLike | None = None,
           data_dir: str | os.PathLike | None = None, force: bool = False) -> Exported:
    """Write the best trial of ``study`` (within ``max_params``) as a standalone module at
    ``output`` and, with ``weights``, the weights that go with it (safetensors).

    "Best": the confirmed trial with the highest mean last-K test accuracy, else the trial with
    the highest validation score; a confirmed trial ships its median confirmation seed's weights.
    Outputs never replace the study's store, its weights or each other, and are written whole
    or not at all; a file already at an output's path is replaced only with ``force``.

    ``onnx`` and ``int8`` (needs ``pip install 'mnist-search[onnx]'``) also write the network
    as ONNX with the preprocessing inside (uint8 ``images`` in, ``logits`` out), checked against
    PyTorch on the MNIST test set in ``data_dir``, and a statically quantised int8 version
    calibrated on training images, with a model card (``NAME.card.json`` and ``.card.md``
    beside the module); the result is then a ``Deployed`` whose ``measured`` holds the figures.
    """
    from mnist_search.search.exporting import export as export_study
    from mnist_search.storage.files import store_files

    url = storage_url_of(study)
    common = dict(max_params=max_params, artifact_dir=artifacts if artifacts is not None else artifact_dir_of(study),
                  protected=store_files(url) if url else (), force=force)
    if onnx is None and int8 is None:
        return export_study(study, output, weights=weights, **common)
    from mnist_search.search.deploying import export_deployable
    from mnist_search.storage import mask_password

    given = {"output": output, "weights": weights, "max_params": max_params, "onnx": onnx, "int8": int8,
             "data_dir": data_dir}
    command = (f"mnist_search.export(<study {study.study_name!r} in {mask_password(url) if url else 'memory'}>, "
               + ", ".join(f"{k}={(os.fspath(v) if isinstance(v, os.PathLike) else v)!r}" for k, v in given.items()
                           if v is not None) + ")")
    return export_deployable(study, output, weights=weights, onnx=onnx, int8=int8, data_dir=data_dir,
                             command=command, **common)


def evaluate(module: str | os.PathLike = "best_net.py", weights: str | os.PathLike = "best_net.safetensors", *,
             device: str = "auto", data_dir: str | os.PathLike | None = None) -> Evaluation:
    """The MNIST test accuracy of an exported ``module`` with its ``weights``: the module is
    imported as a user would (importing it runs it) and its own ``predict`` classifies the
    10,000 raw test images. Returns an Evaluation (``.accuracy`` in percent; print it for a
    line). ``data_dir`` as for :func:`search` (./data when it holds the files).
    """
    from mnist_search.search.evaluating import evaluate as evaluate_module

    return evaluate_module(module, weights, device=device, data_dir=data_dir)


def report(study: optuna.Study, output: str | os.PathLike = "report") -> list[Path]:
    """Write ``study``'s leaderboard (leaderboard.md), PNG plots and an index.md into the
    directory ``output``; returns the paths written."""
    from mnist_search.search.report import report as write
    from mnist_search.storage.files import store_files
    from mnist_search.trainer.data import mnist_dir

    url = storage_url_of(study)
    return write(study, Path(output), protected=store_files(url) if url else (),
                 protected_dirs=((artifact_dir_of(study), "the trials' weights"), (mnist_dir(), "the MNIST files")))


def leaderboard(study: optuna.Study, top: int = 10):
    """The ``top`` completed trials of ``study`` by score, as a pandas DataFrame indexed by trial
    number: score, minimum of the judged epochs, parameters, receptive field, epochs, seeds,
    seconds, and (for confirmed trials) the mean final test accuracy and its spread."""
    import pandas as pd

    from mnist_search.search.report import confirmations
    from mnist_search.search.report import leaderboard as rows

    board = pd.DataFrame(rows(study, top), columns=["trial", "score", "last_k_min", "params", "receptive_field",
                                                    "epochs", "seeds", "state", "seconds"]).set_index("trial")
    tested = {row["trial"]: row for row in confirmations(study)}
    board["test_final_mean"] = [tested[n]["final_mean"] if n in tested else None for n in board.index]
    board["test_final_std"] = [tested[n]["final_std"] if n in tested else None for n in board.index]
    return board


def storage_url_of(study: optuna.Study) -> str | None:
    """The URL of the RDB store ``study`` lives in, when it has one (Optuna keeps it privately)."""
    backend = getattr(study._storage, "_backend", study._storage)
    return getattr(backend, "url", None)


def artifact_dir_of(study: optuna.Study) -> Path:
    """Where the trials' weights of ``study`` are by default: beside its SQLite file."""
    from mnist_search.storage import default_artifact_dir

    url = storage_url_of(study)
    return default_artifact_dir(url) if url else Path("mnist-search-artifacts")
