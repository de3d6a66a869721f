"""A study report: a leaderboard and PNG plots tied together by a Markdown index page.

The plots are plain matplotlib in the project's own terms (validation accuracy, trial number,
parameters); Optuna supplies the one computation behind them that is not a plain reading of the
trials, the parameter importances. A plot that the study cannot yet fill with anything worth
reading is not drawn: index.md says why in its place.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, StrMethodFormatter

from mnist_search.errors import UserError
from mnist_search.levers import param_label
from mnist_search.models import PRESETS, analyse
from mnist_search.search import records
from mnist_search.search.meter import plural
from mnist_search.search.study import score
from mnist_search.storage.files import check_output, remove_if_empty, write_files

TOP = 10
CURVES = 5  # top trials drawn in the per-epoch plot; more lines than this tangle
# Accuracy axes show trials down to this many times the best trial's error rate, and at least
# this many points below it; the rest are counted.
ZOOM_ERROR, ZOOM_POINTS = 3.0, 2.0
ZOOM_MIN_TRIALS = 10  # fewer trials than this are all shown
# Importances rank noise below this many completed trials (each of ~30 parameters needs a spread of values).
MIN_TRIALS_FOR_IMPORTANCE = 10
TOP_FOR_IMPORTANCE = 5  # PED-ANOVA's advice: at least this many trials in the top group
IMPORTANCE_BARS = 12  # the rest are counted in the title
SEED_RANGE = 1.25  # seed networks are drawn up to this many times the largest trial's parameters
DPI = 110

COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED

def leaderboard(study: optuna.Study, top: int = TOP) -> list[dict]:
    """The ``top`` completed trials by score, with what a reader needs to compare them."""
    rows = []
    for r in records.ranked(records.completed(study), top):
        rows.append({
            "trial": r.number, "score": r.score, "last_k_min": r.last_k_min, "params": r.params,
            "receptive_field": r.receptive_field, "epochs": len(r.history), "seeds": r.seeds, "state": r.state.name,
            "seconds": r.seconds,
        })
    return rows


def confirmations(study: optuna.Study) -> list[dict]:
    """The trials `mnist-search confirm` retrained on the test set, best mean final accuracy first."""
    rows, attrs = [], study.user_attrs  # one storage read, not one per trial
    for r in records.completed(study):
        result = records.confirmation(study, r.number, attrs)
        if result:
            rows.append({"trial": r.number, "params": r.params, "seeds": len(result.runs), "last_k": result.last_k,
                         "target": result.target, **vars(result.stats), "consistent": result.consistent})
    return sorted(rows, key=lambda row: row["final_mean"], reverse=True)


def padded(values: list[float], fraction: float = 0.08, least: float = 0.05) -> tuple[float, float]:
    """Axis limits around ``values`` with a margin, so that no point sits on the frame."""
    low, high = min(values), max(values)
    margin = max((high - low) * fraction, least)
    return low - margin, high + margin


def zoom(trials: list[float], marked: list[float]) -> tuple[float, float, int]:
    """The accuracy axis limits and how many trials fall below them.

    Down to ``ZOOM_ERROR`` times the best trial's error rate, and at least ``ZOOM_POINTS`` below
    it: one trial that learnt nothing would squash all the others into a line, while a study whose
    best is far from 100% spreads its good trials wider. Fewer than ``ZOOM_MIN_TRIALS`` are all
    shown: a handful of points is readable at any spread, and hiding some leaves next to nothing.
    And down to every marked point (seed networks, confirmations), so none of those is cut off.
    """
    best, lowest = max(trials), min(trials)
    if len(trials) < ZOOM_MIN_TRIALS:
        bottom = lowest
    else:
        bottom = max(min(best - ZOOM_POINTS, 100 - ZOOM_ERROR * (100 - best)), lowest)
    low, high = padded([min([bottom] + marked), max(trials + marked)])
    return low, high, sum(y < low for y in trials)


def _not_shown(hidden: int, low: float) -> str:
    return f"{hidden} trial{'s' if hidden != 1 else ''} below {low:.1f}% not shown"


def pareto_front(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Points not beaten by another with fewer-or-equal parameters and a higher-or-equal score."""
    front, best = [], float("-inf")
    for params, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((params, accuracy))
            best = accuracy
    return front


def report(study: optuna.Study, output: str | Path = "report", protected: tuple[str | os.PathLike, ...] = (),
           protected_dirs: tuple[tuple[str | os.PathLike, str], ...] = ()) -> list[Path]:
    """Write ``study``'s leaderboard, plots and index.md into the directory ``output``; the files
    written. ``protected`` and ``protected_dirs`` as for :func:`write_report`."""
    from mnist_search.errors import UserError

    if not study.get_trials(deepcopy=False):
        raise UserError(f"study {study.study_name!r} has no trials yet; run a search first")
    try:
        return write_report(study, Path(output), protected, protected_dirs)
    except OSError as exc:
        raise UserError(f"cannot write the report to {output}: {exc.strerror or exc}; choose another output") from None


def write_report(study: optuna.Study, output: Path, protected: tuple[str | os.PathLike, ...] = (),
                 protected_dirs: tuple[tuple[str | os.PathLike, str], ...] = ()) -> list[Path]:
    """Write the leaderboard, the plots and ``index.md`` into ``output``; returns the files written.

    The files follow the rules of every output (``storage.files``): none may be a link, the
    store (``protected``) or lie in ``protected_dirs``; all are written whole or none is.
    """
    done = records.completed(study)  # checked: a damaged or foreign record is one line here, not a traceback later
    if done and all(r.params is None for r in done):
        raise records.RecordError(f"study {study.study_name!r} was not made by mnist-search: its trials store no "
                                  "network size to report on")
    if output.is_symlink() and not output.is_dir():
        raise UserError(f"the report directory {output} is a symbolic link to a file; name a directory")
    if output.exists() and not output.is_dir():
        raise UserError(f"the report directory {output} is a file; name a directory")
    rows = leaderboard(study)
    plots: dict[str, Figure | str] = {
        "accuracy_vs_params": accuracy_vs_params(study),
        "epoch_curves": epoch_curves(study, rows),
        "optimization_history": optimization_history(study),
        "param_importances": param_importances(study),
    }
    files: list[tuple[Path, bytes]] = []
    try:
        for name, plot in plots.items():
            if isinstance(plot, Figure):
                png = io.BytesIO()
                plot.savefig(png, format="png", dpi=DPI, bbox_inches="tight")
                files.append((output / f"{name}.png", png.getvalue()))
    finally:
        for plot in plots.values():
            if isinstance(plot, Figure):
                plt.close(plot)
    index = output / "index.md"
    files.append((index, _index(study, rows, plots).encode()))  # last: it links the plots
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    try:
        for path, _ in files:
            check_output(path, "the report file", protected, protected_dirs)
        write_files(files)
    except BaseException:
        if created:
            remove_if_empty(output)
        raise
    return [index, *(path for path, _ in files[:-1])]


def accuracy_vs_params(study: optuna.Study) -> Figure | str:
    """Every trial that finished an epoch by parameters, with the Pareto front, the seed networks and
    any confirmations; or why there is nothing to draw yet."""
    states = {COMPLETE: ("tab:blue", "completed: validation score"),
              PRUNED: ("tab:gray", "pruned: validation accuracy at its last epoch")}
    series = {}
    for state in states:
        trained = [r for r in map(records.TrialRecord.from_trial, study.get_trials(deepcopy=False, states=(state,)))
                   if r.epochs and r.params is not None]
        series[state] = [(r.params, r.score if state == COMPLETE else r.history[-1]) for r in trained]
    accuracies = [accuracy for points in series.values() for _, accuracy in points]
    if not accuracies:
        return "no trial has finished an epoch yet."
    # The seed networks are the yardstick, but only near the trials' sizes: beside a small budget's
    # study they would squeeze all its trials into a sliver of the plot.
    seeds = [(name, analyse(preset.spec).params, max(preset.reported_test_acc)) for name, preset in PRESETS.items()]
    largest = max(params for points in series.values() for params, _ in points)
    near = [seed for seed in seeds if seed[1] <= SEED_RANGE * largest]
    confirmed = confirmations(study)
    bottom, top, hidden = zoom(accuracies, [best for _, _, best in near] + [r["final_mean"] for r in confirmed])
    visible = {state: [(p, a) for p, a in points if a >= bottom] for state, points in series.items()}

    figure, ax = plt.subplots(figsize=(8, 5))
    for state, (color, label) in states.items():
        if visible[state]:
            ax.scatter(*zip(*visible[state]), c=color, label=label, alpha=0.7)
    front = pareto_front(series[COMPLETE])
    if front:
        # Ringed points as well as the line: a front of one trial has no line to draw.
        ax.step([p for p, _ in front], [s for _, s in front], where="post", c="tab:red", marker="o", markersize=10,
                markerfacecolor="none", label="Pareto front: no smaller trial scores as high")
    # One marker per seed network, named in the legend: labels beside the points overprint, as
    # the seeds sit close together.
    for (name, params, best), marker in zip(near, "*PXpDhv^<>"):
        ax.scatter([params], [best], marker=marker, s=110, c="tab:orange", edgecolors="black", zorder=3,
                   label=f"{name}: {params:,} params, {best:.2f}% test (its write-up)")
    if confirmed:
        ax.errorbar([r["params"] for r in confirmed], [r["final_mean"] for r in confirmed],
                    yerr=[r["final_std"] for r in confirmed], fmt="o", c="tab:green", capsize=3, zorder=4,
                    label="confirmed: final test accuracy, mean ± std over seeds")
    drawn = ([p for points in visible.values() for p, _ in points] + [p for _, p, _ in near]
             + [r["params"] for r in confirmed])
    ax.set_xlim(*padded(drawn, fraction=0.04, least=50))
    ax.set_ylim(bottom, top)
    ax.set_xlabel("parameters")
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_ylabel("accuracy (%)")
    notes = [_not_shown(hidden, bottom)] if hidden else []
    far = [params for _, params, _ in seeds if params > SEED_RANGE * largest]
    if far:
        notes.append(f"seed networks of {min(far):,}+ parameters lie beyond the trials")
    ax.set_title(f"Accuracy against parameters, study {study.study_name!r}"
                 + (f"\n({'; '.join(notes)})" if notes else ""))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return figure


def epoch_curves(study: optuna.Study, rows: list[dict]) -> Figure | str:
    """Validation accuracy after every epoch for the top trials of the leaderboard."""
    trials = study.get_trials(deepcopy=False)  # numbered from 0: a trial's number is its index
    curves = [(row, records.TrialRecord.from_trial(trials[row["trial"]]).epochs) for row in rows[:CURVES]]
    curves = [(row, history) for row, history in curves if history]
    if not curves:
        return "no trial has completed yet."
    figure, ax = plt.subplots(figsize=(8, 5))
    for row, history in curves:
        ax.plot([m.epoch for m in history], [m.eval_acc for m in history], marker="o", markersize=3,
                label=f"trial {row['trial']}: {row['params']:,} params, score {row['score']:.2f}")
    ax.set_ylim(*padded([m.eval_acc for _, history in curves for m in history]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"Validation accuracy after each epoch, top {plural(len(curves), 'trial')} by score")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return figure


def optimization_history(study: optuna.Study) -> Figure | str:
    """Each completed trial's score by trial number, and the best score so far."""
    done = sorted(study.get_trials(deepcopy=False, states=(COMPLETE,)), key=lambda t: t.number)
    if not done:
        return "no trial has completed yet."
    numbers, scores = [t.number for t in done], [score(t) for t in done]
    best = [max(scores[: i + 1]) for i in range(len(scores))]
    figure, ax = plt.subplots(figsize=(8, 5))
    ax.scatter(numbers, scores, c="tab:blue", alpha=0.7, label="completed trial: validation score")
    ax.step(numbers, best, where="post", c="tab:red", label="best so far")
    bottom, top, hidden = zoom(scores, [])
    ax.set_ylim(bottom, top)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel("validation score (%)")
    title = f"Validation score by trial, study {study.study_name!r}"
    ax.set_title(title + (f"\n({_not_shown(hidden, bottom)})" if hidden else ""))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return figure


def param_importances(study: optuna.Study) -> Figure | str:
    """Which parameters set the best trials apart from the rest (Optuna's PED-ANOVA), largest first."""
    completed = len(study.get_trials(deepcopy=False, states=(COMPLETE,)))
    if completed < MIN_TRIALS_FOR_IMPORTANCE:
        return (f"{completed} completed trial{'s' if completed != 1 else ''}; parameter importances need at least "
                f"{MIN_TRIALS_FOR_IMPORTANCE} to tell a parameter's effect from noise.")
    # PED-ANOVA compares the parameters of the top trials (by default the top 10%) with those of
    # all trials; its authors advise at least TOP_FOR_IMPORTANCE in the top, so small studies take
    # a larger share. Half a trial below the count: the evaluator rounds the share's count up.
    top = max(math.ceil(0.1 * completed), TOP_FOR_IMPORTANCE)
    quantile = (top - 0.5) / completed
    with warnings.catch_warnings():
        # PED-ANOVA warns once per conditional parameter that some of its values were tried too
        # rarely, and whenever a target is given; the plot's title already says what it measures.
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile),
            target=lambda t: -score(t))  # PED-ANOVA takes lower as better; a score is higher-better
    shown = [(name, value) for name, value in importances.items() if value > 0][:IMPORTANCE_BARS]
    if not shown:
        return "no parameter sets the best trials apart from the rest."
    figure, ax = plt.subplots(figsize=(8, 1.4 + 0.32 * len(shown)))
    labels = [param_label(name) for name, _ in shown][::-1]  # barh draws bottom-up
    values = [value for _, value in shown][::-1]
    bars = ax.barh(labels, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.2f}" if v >= 0.005 else "<0.01" for v in values], padding=3, fontsize=8)
    ax.set_xlim(0, max(values) * 1.15)
    ax.set_xlabel("importance (PED-ANOVA, all parameters sum to 1)")
    rest = len(importances) - len(shown)
    ax.set_title(f"Parameters that set the top {top} of {completed} completed trials apart"
                 + (f"\n({rest} parameters of little or no importance not shown)" if rest else ""))
    ax.grid(axis="x", alpha=0.3)
    return figure


def _index(study: optuna.Study, rows: list[dict], plots: dict[str, Figure | str]) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    lines = [
        f"# Study {study.study_name!r}",
        "",
        f"{plural(len(trials), 'trial')}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".",
        "Score: mean validation accuracy over the last epochs (held-out 10k of the training set), averaged over "
        "the trial's training seeds when it trained several.",
        "",
        "## Leaderboard",
        "",
        "| trial | score | min of last epochs | params | RF | epochs | seeds | state | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| #{r['trial']} | {r['score']:.3f} | {r['last_k_min'] or float('nan'):.2f} | {r['params']:,} | "
                     f"{r['receptive_field']} | {r['epochs']} | {r['seeds']} | {r['state']} | {r['seconds'] or 0:.0f} |")
    confirmed = confirmations(study)
    if confirmed:
        lines += ["", "## Confirmed on the test set", "",
                  "Retrained on all 60,000 training images, once per seed, scoring the test set every epoch "
                  "(`mnist-search confirm`).", "",
                  "| trial | params | seeds | final test % | last-K test % | min of last K | every last-K epoch >= target |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| #{r['trial']} | {r['params']:,} | {r['seeds']} | {r['final_mean']:.2f} ± {r['final_std']:.2f} | "
                  f"{r['last_k_mean']:.2f} ± {r['last_k_std']:.2f} (K={r['last_k']}) | {r['last_k_min']:.2f} | "
                  f"{'yes' if r['consistent'] else 'no'} ({r['target']}) |" for r in confirmed]
    lines += ["", "## Plots", ""]
    for name, plot in plots.items():
        title = name.replace("_", " ")
        lines.append(f"![{title}]({name}.png)" if isinstance(plot, Figure) else f"*{title}*: not drawn, {plot}")
        lines.append("")
    return "\n".join(lines)
