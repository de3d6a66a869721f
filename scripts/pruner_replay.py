"""Replay a real study's recorded learning curves through each pruner, and compare mean- and min-of-last-K scores.

    python scripts/pruner_replay.py sqlite:///results/search-cpu/study.db [STUDY]

Running a whole study once per pruner on real MNIST costs many CPU-hours, so this measures
the pruners on the curves the study already recorded instead. The completed and pruned
trials are replayed in the order they started (failed ones, killed or diverged, are left
out), each through a fresh in-memory study with the pruner under test, reporting its
recorded validation accuracy epoch by epoch through Optuna's own ``report``/``should_prune``.
What this can and cannot say:

- while a trial's recorded curve lasts, the pruner sees the real numbers;
- a trial that the original (median) run pruned has no curve after that epoch: if the
  replayed pruner would have let it go on, its outcome is unknown. It is charged all the
  epochs (an upper bound on that pruner's cost) and, having no final value, cannot join the
  completed trials later decisions compare against, so those later decisions are
  approximate for every pruner but the original one;
- trials ran two at a time in the original study; the replay keeps their recorded timeline
  (a report at the trial's start plus its epochs' seconds, a trial finished from its
  recorded end), but a trial stopped earlier would in reality have freed its worker for the
  next trial sooner, which no replay can know; and it numbers the trials afresh, so
  Hyperband's (hash-based) brackets are not the ones a real run would draw.

The question for a default pruner: how many model-epochs it saves, and whether it would
ever have stopped one of the trials that ended among the best completed ones.
"""

from __future__ import annotations

import datetime
import sys

import optuna
import pandas as pd

from mnist_search.commands.common import format_table
from mnist_search.defaults import DEFAULT_LAST_K
from mnist_search.search.records import TrialRecord
from mnist_search.search.study import make_pruner

TOP = 3


def curves(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, TrialRecord]]:
    """The trials that trained at least one epoch, in start order, with their records."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trained = [(t, TrialRecord.from_trial(t)) for t in study.get_trials(deepcopy=False, states=states)]
    return sorted([(t, r) for t, r in trained if r.epochs], key=lambda pair: pair[0].datetime_start)


def replay(name: str, recorded: list, epochs: int, study_name: str) -> dict:
    """Replay the recorded trials on their recorded timeline: each epoch's report happens at
    the trial's start plus its epochs' seconds, and a trial counts as finished for the
    pruner's comparisons only from its recorded end, as in the original parallel run."""
    # The original study's name: Hyperband assigns trials to brackets by hashing it with the trial number.
    study = optuna.create_study(study_name=study_name, direction="maximize", pruner=make_pruner(name, epochs))
    events = []  # (time, order at equal times: start < report < end, original, step)
    history = {original.number: record.epochs for original, record in recorded}
    for original, record in recorded:
        events.append((original.datetime_start, 0, original, 0))
        elapsed = datetime.timedelta()
        for step, metrics in enumerate(record.epochs, start=1):
            elapsed += datetime.timedelta(seconds=metrics.seconds)
            events.append((original.datetime_start + elapsed, 1, original, step))
        events.append((original.datetime_complete, 2, original, 0))
    running, stopped, unknown, model_epochs = {}, {}, [], 0
    for _, kind, original, step in sorted(events, key=lambda e: (e[0], e[1], e[2].number, e[3])):
        if kind == 0:
            running[original.number] = study.ask()
            continue
        trial = running.get(original.number)
        if trial is None:  # this pruner already stopped it
            continue
        if kind == 1:
            trial.report(history[original.number][step - 1].eval_acc, step)
            if trial.should_prune():
                stopped[original.number] = step
                model_epochs += step
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                del running[original.number]
            continue
        model_epochs += epochs
        if original.state == optuna.trial.TrialState.COMPLETE:
            study.tell(trial, original.values[0])
        else:  # the original run pruned it earlier than this pruner would have: its future is unknown
            unknown.append(original.number)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        del running[original.number]
    return {"stopped": stopped, "unknown": unknown, "model_epochs": model_epochs}


def main(url: str, study_name: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=study_name, storage=url)
    recorded = curves(study)
    epochs = max(len(record.epochs) for _, record in recorded)
    finished = [(t, record.history) for t, record in recorded if t.state == optuna.trial.TrialState.COMPLETE]
    min_of_last = {t.number: record.last_k_min for t, record in recorded}
    ranked = sorted(finished, key=lambda item: item[0].values[0], reverse=True)
    best = ranked[:TOP]
    last_k = TrialRecord.from_trial(finished[0][0]).last_k or DEFAULT_LAST_K  # recorded since the attribute was added
    best_numbers = [t.number for t, _ in best]
    print(f"{len(recorded)} trained trials replayed in start order, {len(finished)} with all {epochs} epochs; "
          f"best {TOP} completed: {', '.join(f'#{n}' for n in best_numbers)}\n")
    rows, results = [], {}
    for name in ("none", "median", "hyperband"):
        result = results[name] = replay(name, recorded, epochs, study_name)
        killed = [n for n in best_numbers if n in result["stopped"]]
        finishers = [(rank, t.number) for rank, (t, _) in enumerate(ranked, start=1) if t.number in result["stopped"]]
        rows.append({
            "pruner": name,
            "stopped early": len(result["stopped"]),
            "model-epochs": result["model_epochs"],
            "vs none": "",
            f"best-{TOP} stopped": ", ".join(f"#{n} at epoch {result['stopped'][n]}" for n in killed) or "none",
            "finishers stopped (their rank)": ", ".join(f"#{n} ({rank})" for rank, n in finishers) or "none",
            "unknown outcome": len(result["unknown"]),
        })
    baseline = rows[0]["model-epochs"]
    for row in rows:
        row["vs none"] = f"{row['model-epochs'] / baseline:.2f}x"
    print(format_table(list(rows[0]), [list(row.values()) for row in rows]))
    # Fidelity check: the study ran the median pruner, so replaying it should repeat its decisions.
    actual = {t.number: len(record.epochs) for t, record in recorded if t.state == optuna.trial.TrialState.PRUNED}
    same = sum(results["median"]["stopped"].get(n) == step for n, step in actual.items())
    extra = len(set(results["median"]["stopped"]) - set(actual))
    print(f"\nfidelity: replaying the median pruner repeats {same} of the study's {len(actual)} pruning decisions "
          f"(same trial, same epoch) and stops {extra} trial(s) the study let finish")

    # How early can a curve be read? Rank agreement between epoch-e accuracy and the final score.
    mean_k, min_k = f"mean of last {last_k}", f"min of last {last_k}"
    table = pd.DataFrame({f"epoch {e}": [accs[e - 1] for _, accs in finished] for e in (1, 2, 3, 4, 6, 9) if e < epochs})
    table[mean_k] = [t.values[0] for t, _ in finished]
    table[min_k] = [min_of_last[t.number] for t, _ in finished]
    ranks = table.corr(method="kendall")[mean_k].drop(mean_k)
    print(f"\nKendall rank correlation with the {mean_k} score, over the {len(finished)} completed trials:")
    print(format_table(["accuracy", "tau"], [[name, f"{tau:.2f}"] for name, tau in ranks.items()]))
    by_mean = max(range(len(finished)), key=lambda i: table[mean_k][i])
    by_min = max(range(len(finished)), key=lambda i: table[min_k][i])
    spread = pd.Series([max(accs[-last_k:]) - min(accs[-last_k:]) for _, accs in finished])
    print(f"\nwinner by {mean_k}: #{finished[by_mean][0].number}; by {min_k}: #{finished[by_min][0].number}")
    print(f"spread (max - min) within the last {last_k} epochs: median {spread.median():.2f}, "
          f"max {spread.max():.2f} points")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "mnist-search")
