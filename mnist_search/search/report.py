"""A study report: a leaderboard and PNG plots tied together by a Markdown index page.

Plots use Optuna's matplotlib visualisations where they exist (optimisation history,
parameter importances) and plain matplotlib for the two that are specific to this tool
(accuracy against parameters with the Pareto front and the seed networks; per-epoch
validation curves of the top trials).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from mnist_search.models import PRESETS, analyse  # noqa: E402
from mnist_search.search.records import confirm_key  # noqa: E402
from mnist_search.search.study import is_pareto, ranked, score  # noqa: E402

TOP = 10
ZOOM_POINTS = 2.0  # the accuracy plot shows this many points below the best; the rest are counted


def leaderboard(study: optuna.Study, top: int = TOP) -> list[dict]:
    """The ``top`` completed trials by score, with what a reader needs to compare them."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    rows = []
    for t in ranked(done, top):
        history = t.user_attrs.get("history", [])
        rows.append({
            "trial": t.number, "score": score(t), "last_k_min": t.user_attrs.get("last_k_min"),
            "params": t.user_attrs.get("params"), "receptive_field": t.user_attrs.get("receptive_field"),
            "epochs": len(history), "seeds": t.user_attrs.get("seeds", 1), "state": t.state.name,
            "seconds": t.user_attrs.get("seconds"),
        })
    return rows


def confirmations(study: optuna.Study) -> list[dict]:
    """The trials `mnist-search confirm` retrained on the test set, best mean final accuracy first."""
    rows, attrs = [], study.user_attrs  # one storage read, not one per trial
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        result = attrs.get(confirm_key(t.number))
        if result:
            rows.append({"trial": t.number, "params": t.user_attrs.get("params"), "seeds": len(result["runs"]),
                         **{k: v for k, v in result.items() if k != "runs"}})
    return sorted(rows, key=lambda r: r["final_mean"], reverse=True)


def zoom(trials: list[float], marked: list[float]) -> tuple[float, float, int]:
    """The accuracy range to plot and how many trials fall below it: ``ZOOM_POINTS`` below the
    best trial (one trial that learnt nothing would squash all the others into a line), and
    down to every marked point (seed networks, confirmations), so none of those is cut off."""
    bottom = min([max(max(trials) - ZOOM_POINTS, min(trials))] + marked)
    return bottom, max(trials + marked), sum(y < bottom for y in trials)


def pareto_front(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Points not beaten by another with fewer-or-equal parameters and a higher-or-equal score."""
    front, best = [], float("-inf")
    for params, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((params, accuracy))
            best = accuracy
    return front


def write_report(study: optuna.Study, output: Path) -> list[Path]:
    """Write the leaderboard, the plots and ``index.md`` into ``output``; returns the files written."""
    output.mkdir(parents=True, exist_ok=True)
    rows = leaderboard(study)
    written = [_accuracy_vs_params(study, output / "accuracy_vs_params.png"),
               _epoch_curves(study, rows, output / "epoch_curves.png")]
    with warnings.catch_warnings():  # Optuna flags its matplotlib backend "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        target = {"target": score, "target_name": "score"} if is_pareto(study) else {}
        written.append(_save(optuna.visualization.matplotlib.plot_optimization_history(study, **target),
                             output / "optimization_history.png"))
        completed = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        if completed >= 2:
            written.append(_save(optuna.visualization.matplotlib.plot_param_importances(study, **target),
                                 output / "param_importances.png"))
    index = output / "index.md"
    index.write_text(_index(study, rows, written))
    return [index, *written]


def _save(axes, path: Path) -> Path:
    figure = axes.figure if hasattr(axes, "figure") else axes.flatten()[0].figure
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _accuracy_vs_params(study: optuna.Study, path: Path) -> Path:
    states = {optuna.trial.TrialState.COMPLETE: ("tab:blue", "completed"),
              optuna.trial.TrialState.PRUNED: ("tab:gray", "pruned (last epoch reached)")}
    figure, ax = plt.subplots(figsize=(8, 5))
    points, shown = [], []
    for state, (color, label) in states.items():
        xs, ys = [], []
        for t in study.get_trials(deepcopy=False, states=(state,)):
            history = t.user_attrs.get("history")
            if not history or "params" not in t.user_attrs:
                continue
            ys.append(score(t) if state == optuna.trial.TrialState.COMPLETE else history[-1]["eval_acc"])
            xs.append(t.user_attrs["params"])
        ax.scatter(xs, ys, c=color, label=label, alpha=0.7)
        shown += ys
        if state == optuna.trial.TrialState.COMPLETE:
            points = list(zip(xs, ys))
    front = pareto_front(points)
    if front:
        ax.step([p for p, _ in front], [s for _, s in front], where="post", c="tab:red", label="Pareto front")
    for name, preset in PRESETS.items():
        params, best = analyse(preset.spec).params, max(preset.reported_test_acc)
        ax.scatter([params], [best], marker="*", s=160, c="tab:orange", edgecolors="black", zorder=3)
        ax.annotate(name, (params, best), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.scatter([], [], marker="*", s=160, c="tab:orange", edgecolors="black",
               label="seed networks (best TEST accuracy of their write-ups)")
    confirmed = confirmations(study)
    if confirmed:
        ax.errorbar([r["params"] for r in confirmed], [r["final_mean"] for r in confirmed],
                    yerr=[r["final_std"] for r in confirmed], fmt="D", c="tab:green", capsize=3, zorder=4,
                    label="confirmed: final TEST accuracy, mean +- std over seeds (60k training)")
    ax.set_xlabel("parameters")
    ax.set_ylabel("accuracy (%): trials = validation score")
    title = f"Accuracy against parameters, study {study.study_name!r}"
    if shown:
        marked = [max(p.reported_test_acc) for p in PRESETS.values()] + [r["final_mean"] for r in confirmed]
        bottom, top, hidden = zoom(shown, marked)
        ax.set_ylim(bottom - 0.05, top + 0.25)
        title += f"\n({hidden} trials below {bottom:.1f}% not shown)" if hidden else ""
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(ax, path)


def _epoch_curves(study: optuna.Study, rows: list[dict], path: Path) -> Path:
    figure, ax = plt.subplots(figsize=(8, 5))
    for row in rows[:5]:
        history = study.trials[row["trial"]].user_attrs.get("history", [])
        ax.plot([m["epoch"] for m in history], [m["eval_acc"] for m in history], marker="o", markersize=3,
                label=f"#{row['trial']} ({row['params']:,} params)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(bottom=97.5)
    ax.set_title("Per-epoch validation accuracy of the top trials")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(ax, path)


def _index(study: optuna.Study, rows: list[dict], plots: list[Path]) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    lines = [
        f"# Study {study.study_name!r}",
        "",
        f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".",
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
    lines += [f"![{p.stem.replace('_', ' ')}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"
