"""Replay a real study's recorded learning curves through each pruner, and compare mean- and min-of-last-K scores.

    python scripts/pruner_replay.py sqlite:///results/search-cpu/study.db [STUDY]

Running a whole study once per pruner on real MNIST costs many CPU-hours, so this measures
the pruners on the curves the study already recorded instead. The trials are replayed in
the order they started, each through a fresh in-memory study with the pruner under test,
reporting its recorded validation accuracy epoch by epoch through Optuna's own
``report``/``should_prune``. What is known and what is not:

- a pruner's decision on a trial is exact while the trial's recorded curve lasts;
- a trial that the original (median) run pruned has no curve after that epoch: if the
  replayed pruner would have let it go on, its outcome is unknown, and it is counted as
  trained to the last epoch (the cost such a pruner would really pay), marked "unknown";
- trials ran two at a time in the original study; the replay is sequential.

The question for a default pruner: how many model-epochs it saves, and whether it would
ever have stopped one of the trials that ended among the best completed ones.
"""

from __future__ import annotations

import sys

import optuna
import pandas as pd

from mnist_search.commands.common import format_table
from mnist_search.search import make_pruner

TOP = 3


def curves(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, list[float]]]:
    trained = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("history") and t.datetime_start]
    return [(t, [m["eval_acc"] for m in t.user_attrs["history"]]) for t in sorted(trained, key=lambda t: t.datetime_start)]


def replay(name: str, recorded: list, epochs: int, study_name: str) -> dict:
    # The original study's name: Hyperband assigns trials to brackets by hashing it with the trial number.
    study = optuna.create_study(study_name=study_name, direction="maximize", pruner=make_pruner(name, epochs))
    stopped, unknown, model_epochs = {}, [], 0
    for original, accs in recorded:
        trial = study.ask()
        for step, acc in enumerate(accs, start=1):
            trial.report(acc, step)
            if trial.should_prune():
                stopped[original.number] = step
                break
        if original.number in stopped:
            model_epochs += stopped[original.number]
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif len(accs) == epochs:
            model_epochs += epochs
            study.tell(trial, sum(accs[-5:]) / 5)
        else:  # the original run pruned it earlier than this pruner would have: its future is unknown
            unknown.append(original.number)
            model_epochs += epochs
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return {"stopped": stopped, "unknown": unknown, "model_epochs": model_epochs}


def main(url: str, study_name: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=study_name, storage=url)
    recorded = curves(study)
    epochs = max(len(accs) for _, accs in recorded)
    finished = [(t, accs) for t, accs in recorded if len(accs) == epochs]
    best = sorted(finished, key=lambda item: sum(item[1][-5:]), reverse=True)[:TOP]
    best_numbers = [t.number for t, _ in best]
    print(f"{len(recorded)} trained trials replayed in start order, {len(finished)} with all {epochs} epochs; "
          f"best {TOP} completed: {', '.join(f'#{n}' for n in best_numbers)}\n")
    rows = []
    for name in ("none", "median", "hyperband"):
        result = replay(name, recorded, epochs, study_name)
        killed = [n for n in best_numbers if n in result["stopped"]]
        rows.append({
            "pruner": name,
            "stopped early": len(result["stopped"]),
            "model-epochs": result["model_epochs"],
            "vs none": "",
            f"best-{TOP} stopped": ", ".join(f"#{n} at epoch {result['stopped'][n]}" for n in killed) or "none",
            "unknown outcome": len(result["unknown"]),
        })
    baseline = rows[0]["model-epochs"]
    for row in rows:
        row["vs none"] = f"{row['model-epochs'] / baseline:.2f}x"
    print(format_table(list(rows[0]), [list(row.values()) for row in rows]))

    # How early can a curve be read? Rank agreement between epoch-e accuracy and the final score.
    table = pd.DataFrame({f"epoch {e}": [accs[e - 1] for _, accs in finished] for e in (1, 2, 3, 4, 6, 9)})
    table["mean of last 5"] = [sum(accs[-5:]) / 5 for _, accs in finished]
    table["min of last 5"] = [min(accs[-5:]) for _, accs in finished]
    ranks = table.corr(method="kendall")["mean of last 5"].drop("mean of last 5")
    print(f"\nKendall rank correlation with the mean-of-last-5 score, over the {len(finished)} completed trials:")
    print(format_table(["accuracy", "tau"], [[name, f"{tau:.2f}"] for name, tau in ranks.items()]))
    by_mean = max(range(len(finished)), key=lambda i: table["mean of last 5"][i])
    by_min = max(range(len(finished)), key=lambda i: table["min of last 5"][i])
    spread = pd.Series([max(accs[-5:]) - min(accs[-5:]) for _, accs in finished])
    print(f"\nwinner by mean of last 5: #{finished[by_mean][0].number}; by min of last 5: #{finished[by_min][0].number}")
    print(f"spread (max - min) within the last 5 epochs: median {spread.median():.2f}, max {spread.max():.2f} points")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "mnist-search")
