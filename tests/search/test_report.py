"""The study report, on studies built in-process with recorded-looking trials (no training)."""

import random
import warnings

import optuna
import pytest
from matplotlib.figure import Figure

from mnist_search.levers import param_label
from mnist_search.models import PRESETS, analyse
from mnist_search.search.report import (
    MIN_TRIALS_FOR_IMPORTANCE,
    accuracy_vs_params,
    epoch_curves,
    leaderboard,
    param_importances,
    pareto_front,
    write_report,
    zoom,
)
from tests.helpers import stored_epochs


def recorded_study(trials: int, level: float = 90.0, epochs: int = 2, pareto: bool = False) -> optuna.Study:
    """A study whose trials sample parameters named as the search space names them (some only for one
    optimizer) and record what the objective records: a per-epoch history, parameters, a score ~``level``."""
    rng = random.Random(0)
    directions = ["maximize", "minimize"] if pareto else ["maximize"]
    study = optuna.create_study(study_name="recorded", directions=directions,
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        convs = trial.suggest_int("block1_convs", 1, 3)
        widths = [trial.suggest_float(f"block1_width{i}", 0.5, 2.0) for i in range(convs)]
        if trial.suggest_categorical("optimizer", ["sgd", "adamw"]) == "sgd":
            trial.suggest_float("sgd_lr", 0.005, 0.2, log=True)
        else:
            trial.suggest_float("adam_lr", 5e-4, 2e-2, log=True)
        rotation = trial.suggest_float("rotation", 0.0, 15.0)
        final = level + rotation / 10 + sum(widths) / 10 + rng.uniform(-0.2, 0.2)
        history = stored_epochs(*(final - 4 / e for e in range(1, epochs + 1)))
        params = 1000 + round(500 * sum(widths))
        trial.set_user_attr("history", history)
        trial.set_user_attr("params", params)
        trial.set_user_attr("receptive_field", 28)
        trial.set_user_attr("last_k_min", history[-1]["eval_acc"])
        trial.set_user_attr("seconds", 2.0)
        return (history[-1]["eval_acc"], params) if pareto else history[-1]["eval_acc"]

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "trial finished" lines in the test output
    try:
        study.optimize(objective, n_trials=trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study


def test_pareto_front_keeps_only_undominated_points():
    points = [(5000, 99.0), (6000, 98.9), (7000, 99.3), (7000, 99.1), (8000, 99.3), (4000, 98.5)]
    assert pareto_front(points) == [(4000, 98.5), (5000, 99.0), (7000, 99.3)]


def test_zoom_shows_the_best_trials_and_every_marked_point():
    many = [99.3, 99.2, 99.1, 99.0, 98.9, 98.8, 98.7]  # with the three below: ZOOM_MIN_TRIALS trials
    # 97.3 (two points below the best) to 99.5 (the marked point), each with 8% of that range as margin:
    bottom, top, hidden = zoom([*many, 98.0, 11.35, 97.2], marked=[99.5])
    assert (bottom, top) == (pytest.approx(97.3 - 0.176), pytest.approx(99.5 + 0.176))
    assert hidden == 1  # 11.35; 97.2 is inside the margin, so it is drawn and not counted
    # A small budget's trials all sit far below the seed networks: they are still shown.
    assert zoom([95.0] * 9 + [94.0], marked=[99.5])[::2] == (pytest.approx(94.0 - 0.44), 0)
    # A confirmation below the trials' range widens it rather than being cut off.
    assert zoom([*many, 99.3, 99.3, 96.0], marked=[97.0]) == (pytest.approx(97.0 - 0.184),
                                                               pytest.approx(99.3 + 0.184), 1)
    # Far from 100%, the range follows the best trial's error rate: 3x its 10% error reaches 70%.
    assert zoom([90.0] * 9 + [80.0, 65.0], marked=[])[::2] == (pytest.approx(70.0 - 1.6), 1)
    # A handful of trials is shown whole, however far apart.
    assert zoom([95.8, 72.65, 67.6], marked=[])[::2] == (pytest.approx(67.6 - 2.256), 0)
    # A single trial still gets an axis of some height.
    assert zoom([90.0], marked=[]) == (pytest.approx(89.95), pytest.approx(90.05), 0)


def test_parameters_have_readable_names_and_unknown_ones_keep_theirs():
    assert param_label("adam_lr") == "AdamW learning rate"
    assert param_label("block2_width0") == "width of conv 1 after the max-pool (relative)"
    assert param_label("block1_width3") == "width of conv 4 before the max-pool (relative)"
    assert param_label("w_b0_1") == "w_b0_1"


@pytest.mark.parametrize("level", [90.0, 99.0])
def test_epoch_curves_are_scaled_to_the_study_s_own_accuracies(level):
    study = recorded_study(4, level=level, epochs=3)
    figure = epoch_curves(study, leaderboard(study))
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    bottom, top = ax.get_ylim()
    accuracies = [y for line in ax.get_lines() for y in line.get_ydata()]
    assert len(accuracies) == 4 * 3  # every trial's every epoch is drawn...
    assert bottom < min(accuracies) and max(accuracies) < top  # ...inside the axes...
    assert top - bottom < 2 * (max(accuracies) - min(accuracies))  # ...and filling them
    assert [tick for tick in ax.get_xticks() if 1 <= tick <= 3] == [1, 2, 3]  # whole epochs only


def test_a_three_trial_report_draws_what_it_can_notes_the_rest_and_warns_nothing(tmp_path, recwarn, capfd):
    study = recorded_study(3)
    capfd.readouterr()
    filters = list(warnings.filters)
    written = write_report(study, tmp_path)
    assert {p.name for p in written} == {"index.md", "accuracy_vs_params.png", "epoch_curves.png",
                                         "optimization_history.png"}
    for path in written[1:]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (tmp_path / "index.md").read_text()
    assert "![epoch curves](epoch_curves.png)" in index and "param_importances.png" not in index
    assert (f"*param importances*: not drawn, 3 completed trials; parameter importances need at least "
            f"{MIN_TRIALS_FOR_IMPORTANCE}") in index
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    assert capfd.readouterr().err == ""
    assert warnings.filters == filters  # the report's own silence does not outlast it


@pytest.mark.parametrize("pareto", [False, True])
def test_importances_name_parameters_readably_and_warn_nothing(pareto, recwarn, capfd):
    study = recorded_study(MIN_TRIALS_FOR_IMPORTANCE + 10, pareto=pareto)
    capfd.readouterr()
    figure = param_importances(study)
    assert isinstance(figure, Figure)
    labels = {label.get_text() for label in figure.axes[0].get_yticklabels()}
    assert "augmentation: rotation (degrees)" in labels and not any("_" in label for label in labels)
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    assert capfd.readouterr().err == ""


def test_importances_wait_for_enough_completed_trials():
    note = param_importances(recorded_study(MIN_TRIALS_FOR_IMPORTANCE - 1))
    assert note == (f"{MIN_TRIALS_FOR_IMPORTANCE - 1} completed trials; parameter importances need at least "
                    f"{MIN_TRIALS_FOR_IMPORTANCE} to tell a parameter's effect from noise.")


def test_accuracy_against_parameters_keeps_a_small_budget_s_trials_in_view():
    study = recorded_study(6)  # 1,000-3,000 parameters at ~90%; the seed networks have 7,000+ at 99.4%+
    figure = accuracy_vs_params(study)
    ax = figure.axes[0]
    (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
    points = [tuple(point) for collection in ax.collections for point in collection.get_offsets()]
    assert len(points) == 6  # the trials, and no seed network
    assert all(left < x < right and bottom < y < top for x, y in points)
    assert right < 4000 and top < 95
    smallest_seed = min(analyse(preset.spec).params for preset in PRESETS.values())
    assert f"seed networks of {smallest_seed:,}+ parameters lie beyond the trials" in ax.get_title()


@pytest.mark.parametrize(("completed", "top"), [(MIN_TRIALS_FOR_IMPORTANCE, 5), (15, 5), (60, 6)])
def test_importances_say_how_many_top_trials_they_compare_with_the_rest(completed, top):
    title = param_importances(recorded_study(completed)).axes[0].get_title()
    assert title.startswith(f"Parameters that set the top {top} of {completed} completed trials apart")
