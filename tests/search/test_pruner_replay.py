"""scripts/pruner_replay.py: replaying a study's recorded curves through its own pruner repeats its decisions."""

import importlib.util
import random
from pathlib import Path

import optuna

from mnist_search.search.study import make_pruner
from tests.helpers import stored_epochs

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pruner_replay.py"


def load_script():
    spec = importlib.util.spec_from_file_location("pruner_replay", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recorded_study(epochs: int = 8) -> optuna.Study:
    """A median-pruned study whose trials report noisy rising curves, recorded as our objective records them."""
    rng = random.Random(0)
    study = optuna.create_study(study_name="replayed", direction="maximize", pruner=make_pruner("median", epochs))

    def objective(trial):
        ceiling, history = rng.uniform(95, 99.5), []
        for epoch in range(1, epochs + 1):
            history.append({**stored_epochs(ceiling - 5 / epoch + rng.uniform(-0.3, 0.3), seconds=0.0)[0],
                            "epoch": epoch})
            trial.set_user_attr("history", history)
            trial.report(history[-1]["eval_acc"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("last_k_min", min(m["eval_acc"] for m in history[-5:]))
        return sum(m["eval_acc"] for m in history[-5:]) / 5

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(objective, n_trials=25)
    return study


def test_replaying_the_original_pruner_repeats_its_decisions():
    study = recorded_study()
    replay = load_script().replay("median", load_script().curves(study), epochs=8, study_name=study.study_name)
    pruned = {t.number: len(t.user_attrs["history"]) for t in study.trials if t.state == optuna.trial.TrialState.PRUNED}
    assert pruned, "the synthetic study should prune some trials"
    assert replay["stopped"] == pruned and replay["unknown"] == []
    assert replay["model_epochs"] == sum(len(t.user_attrs["history"]) for t in study.trials)


def test_no_pruner_charges_every_trial_all_epochs_and_marks_pruned_futures_unknown():
    study = recorded_study()
    replay = load_script().replay("none", load_script().curves(study), epochs=8, study_name=study.study_name)
    assert replay["stopped"] == {} and replay["model_epochs"] == 8 * len(study.trials)
    assert len(replay["unknown"]) == sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
