"""Warm start: queue the best structures and recipes of another study as the first trials of this one.

The space samples widths *relative* to a unit that is scaled to the budget, so a trial's
parameters describe a structure and recipe independent of the budget: enqueued into a study
with a smaller ``--max-params`` they become the same network, narrowed to fit. That is how
one CPU-expensive search at 8,000 parameters seeds the searches at 5,000 and 2,000.
"""

from __future__ import annotations

import optuna

from mnist_search.errors import UserError
from mnist_search.search.space import LATER_PARAMS
from mnist_search.search.study import ranked


def best_of(source: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """The ``top`` best completed trials of ``source``; a user error when it has none."""
    completed = source.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise UserError(f"study {source.study_name!r} has no completed trial to warm-start from")
    return ranked(completed, top)


def enqueue(study: optuna.Study, source_name: str, trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    """Queue ``trials`` (of study ``source_name``) as the next trials of ``study``; the numbers queued now.

    Parameters the space gained after ``trials`` ran are fixed to what those trials trained
    (``LATER_PARAMS``). A trial this study already holds, queued, run or retried, is not
    queued again, so resuming a warm-started study repeats nothing.
    """
    labels = {t.user_attrs.get("warm_start") for t in study.get_trials(deepcopy=False)}
    queued = []
    for trial in trials:
        label = f"{source_name}#{trial.number}"
        if label not in labels:
            study.enqueue_trial({**LATER_PARAMS, **trial.params}, user_attrs={"warm_start": label})
            queued.append(trial.number)
    return queued
