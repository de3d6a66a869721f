"""Warm start: queue the best structures and recipes of another study as the first trials of this one.

The space samples widths *relative* to a unit that is scaled to the budget, so a trial's
parameters describe a structure and recipe independent of the budget: enqueued into a study
with a smaller ``--max-params`` they become the same network, narrowed to fit. That is how
one CPU-expensive search at 8,000 parameters seeds the searches at 5,000 and 2,000.
"""

from __future__ import annotations

import optuna

from mnist_search.errors import UserError
from mnist_search.search.study import score


def enqueue_best_of(study: optuna.Study, source: optuna.Study, top: int) -> list[int]:
    """Enqueue the ``top`` best completed trials of ``source`` into ``study``; their numbers.

    Optuna skips a parameter set that this study already holds (in any state), so resuming a
    warm-started study does not queue the same trials again.
    """
    if source.study_name == study.study_name:
        raise UserError(f"--warm-start names this study ({study.study_name!r}); name the study to copy from")
    completed = source.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise UserError(f"study {source.study_name!r} has no completed trial to warm-start from")
    best = sorted(completed, key=score, reverse=True)[:top]
    for trial in best:
        study.enqueue_trial(trial.params, user_attrs={"warm_start": f"{source.study_name}#{trial.number}"},
                            skip_if_exists=True)
    return [t.number for t in best]
