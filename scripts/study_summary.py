"""Print a study's summary for RESULTS.md: trial counts, wall time, the best trial, the budget query.

    python scripts/study_summary.py sqlite:///results/search-cpu/study.db [STUDY]
"""

import sys

import optuna
from sqlalchemy import create_engine, text

from mnist_search.search.records import TrialRecord, is_infeasible
from mnist_search.search.study import score

BUDGET_QUERY = (
    "SELECT COUNT(*), MAX(CAST(a.value_json AS INTEGER)) FROM trials t "
    "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'params'"
)


def main(url: str, name: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    infeasible = sum(is_infeasible(t) for t in trials)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    print(f"trials: {len(trials)}; " + ", ".join(f"{k.lower()} {v}" for k, v in states.items() if v)
          + f" (of the pruned, infeasible: {infeasible})")
    print(f"wall time, first trial start to last trial end: {(max(ends) - min(starts)).total_seconds() / 60:.1f} min; "
          f"with at least one trial running: {busy_minutes(trials):.1f} min (excludes gaps between runs)")
    epochs = sum(len(TrialRecord.from_trial(t).epochs) for t in trials)
    print(f"model-epochs trained: {epochs}")
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in sorted(completed, key=score, reverse=True):
        r = TrialRecord.from_trial(t)
        print(f"  #{t.number}: score {score(t):.3f}, min of last {r.last_k} {r.last_k_min:.2f}, "
              f"{r.params:,} params, RF {r.receptive_field}, final val {r.history[-1]:.2f}, {r.seconds / 60:.1f} min")
    with create_engine(url).connect() as db:
        count, largest = db.execute(text(BUDGET_QUERY)).one()
    print(f"budget query: {BUDGET_QUERY}\n  -> {count} trials with a parameter count, the largest {largest}")


def busy_minutes(trials) -> float:
    """Length of the union of the trials' [start, end] intervals."""
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials if t.datetime_start and t.datetime_complete)
    total, current_start, current_end = 0.0, None, None
    for start, end in spans:
        if current_end is None or start > current_end:
            if current_end is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += (current_end - current_start).total_seconds()
    return total / 60


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "mnist-search")
