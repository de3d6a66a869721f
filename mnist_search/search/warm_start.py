"""Warm start: queue the best structures and recipes of another study as the first trials of this one.

The space samples widths *relative* to a unit that is scaled to the budget, so a trial's
parameters describe a structure and recipe independent of the budget: enqueued into a study
with a smaller ``--max-params`` they become the same network, narrowed to fit. That is how
one CPU-expensive search at 8,000 parameters seeds the searches at 5,000 and 2,000.
"""

from __future__ import annotations

import optuna

from mnist_search.errors import UserError
from mnist_search.levers import REBUILD
from mnist_search.search import records
from mnist_search.search.study import score


def best_of(source: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """The ``top`` best completed trials of ``source``; a user error when it has none."""
    completed = source.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise UserError(f"study {source.study_name!r} has no completed trial to warm-start from")
    return sorted(completed, key=score, reverse=True)[:top]


def enqueue(study: optuna.Study, source_name: str, trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    """Queue ``trials`` (of study ``source_name``) as the next trials of ``study``; the numbers queued now.

    Parameters the space gained after ``trials`` ran are fixed to what those trials trained
    (each lever's ``rebuild`` values, mnist_search/levers.py). A trial this study already holds, queued, run or retried, is not
    queued again, so resuming a warm-started study repeats nothing.
    """
    labels = records.warm_start_labels(study)
    queued = []
    for trial in trials:
        label = f"{source_name}#{trial.number}"
        if label not in labels:
            records.enqueue_warm_start(study, {**REBUILD, **trial.params}, label)
            queued.append(trial.number)
    return queued
