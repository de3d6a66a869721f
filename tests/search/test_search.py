"""The search as a library, in-process on tiny synthetic data: real SQLite files, the real PostgreSQL
server (resume and join on both). Resume, warm start, Pareto, seeds per trial, jobs, confirm and export."""

from __future__ import annotations

import re

import optuna
import pytest
import torch
from safetensors.torch import load_file

import mnist_search as ms
from mnist_search.errors import ConfigError, UserError
from mnist_search.search import records
from mnist_search.search.confirm import confirm
from mnist_search.search.exporting import export, measured_on
from mnist_search.search.objective import Objective
from mnist_search.search.report import write_report
from mnist_search.search.settings import ConfirmSettings, SearchSettings
from mnist_search.storage import open_storage
from mnist_search.trainer import load_mnist
from tests import stores
from tests.helpers import TINY_SEARCH, search, states

GOOD_RECIPE = {"optimizer": "sgd", "sgd_lr": 0.1, "momentum": 0.9, "scheduler": "cosine", "batch_size": 64,
               "rotation": 3.0, "translate": 0.05, "label_smoothing": 0.0, "dropout": 0.05, "ema": False}


def test_a_search_resumes_and_records_every_trial(tiny_mnist, tmp_path, storage_url):
    url = storage_url
    # A SQLite store keeps the weights beside its file; a database on a server needs a directory.
    artifacts = None if stores.is_sqlite(url) else tmp_path / "artifacts"
    _, shown = search(url, tiny_mnist, artifacts=artifacts, trials=2)
    assert "trial 2/2" in shown and "trial #0 epoch 2/2 val" in shown  # a line per epoch in a log
    assert len(states(url)) == 2
    _, shown = search(url, tiny_mnist, artifacts=artifacts, trials=1)
    assert "2 trials so far" in shown and len(states(url)) == 3
    # A worker joins the study, as `mnist-search worker` does from another machine.
    from mnist_search.search.runner import Location, join_search

    join_search(Location(url, "mnist-search", str(tiny_mnist), str(artifacts) if artifacts else None), {"trials": 1})
    assert len(states(url)) == 4
    study = optuna.load_study(study_name="mnist-search", storage=url)
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            attrs = trial.user_attrs
            assert attrs["params"] <= 8000 and len(attrs["history"]) == 2 and attrs["device"] == "cpu"
            assert set(attrs) >= {"receptive_field", "spec", "config", "seconds", "weights_artifact", "weights_sha256"}
            assert records.TrialRecord.from_trial(trial).score == trial.value
    assert study.user_attrs[records.SETTINGS]["epochs"] == 2


def test_resuming_with_settings_that_change_the_scores_is_refused_unless_mixing_is_allowed(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    search(url, tiny_mnist, trials=1)
    with pytest.raises(UserError, match=r"epochs 2 -> 3; max_params 8000 -> 5000"):
        search(url, tiny_mnist, trials=1, epochs=3, max_params=5000)
    assert len(states(url)) == 1
    search(url, tiny_mnist, trials=1, epochs=3, allow_mixed=True)
    assert len(states(url)) == 2
    search(url, tiny_mnist, trials=1, sampler="random", seed=9)  # the sampler does not change what a score means
    optuna.create_study(storage=url, study_name="minimise", direction="minimize")
    with pytest.raises(UserError, match="optimises minimize"):
        search(url, tiny_mnist, study_name="minimise", trials=1)


def test_settings_check_themselves_and_name_the_setting():
    assert SearchSettings(epochs=2).last_k == 2 and SearchSettings().last_k == 5
    assert SearchSettings().replace(epochs=3).last_k == 3  # a default last_k follows the epochs
    assert (SearchSettings().jobs_for("cuda"), SearchSettings().jobs_for("cpu"),
            SearchSettings(jobs=3).jobs_for("cuda")) \
        == (8, 1, 3)  # jobs auto: the measured best on a GPU, one on the CPU
    assert SearchSettings(last_k=2).replace(epochs=3).last_k == 2  # a chosen one stays
    assert SearchSettings.from_json(SearchSettings(seed=4, timeout_minutes=1.5).to_json()) == SearchSettings(
        seed=4, timeout_minutes=1.5)
    for bad, message in [({"trials": 0}, "trials must be at least 1"), ({"max_params": 50}, "too small"),
                         ({"epochs": 2, "last_k": 3}, "last_k must be between 1 and epochs"),
                         ({"val_size": 0}, "val_size must be between 1"), ({"seed": -1}, "seed must be between"),
                         ({"timeout_minutes": 0}, "timeout_minutes must be a positive"),
                         ({"timeout_minutes": float("nan")}, "timeout_minutes must be"),
                         ({"trials": True}, "trials must be a whole number"), ({"jobs": 17}, "jobs must be between"),
                         ({"sampler": "grid"}, "sampler must be one of")]:
        with pytest.raises(ConfigError, match=message):
            SearchSettings(**bad)
    with pytest.raises(ConfigError, match="unknown search setting"):
        SearchSettings.from_dict({"trails": 3})


def test_the_python_api_searches_confirms_and_exports(tiny_mnist, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'api.db'}"
    study = ms.search(trials=2, storage=url, data_dir=tiny_mnist, **TINY_SEARCH)
    assert "trial 2/2" in capsys.readouterr().out  # the same progress as the command line
    study = ms.search(settings=SearchSettings(trials=1, **TINY_SEARCH), storage=url, data_dir=tiny_mnist,
                      progress=False)  # twice in one process
    assert len(study.trials) == 3 and capsys.readouterr().out == ""
    confirmed = ms.confirm(study, top=1, seeds=1, last_k=1, data_dir=tiny_mnist, progress=False)
    assert [r.number for r, _ in confirmed] == [records.best_trial(study).number]
    done = ms.export(study, tmp_path / "net.py", weights=tmp_path / "net.safetensors")
    assert done.trial.number == confirmed[0][0].number and done.module.read_text().startswith('"""Net:')
    with pytest.raises(UserError, match="would replace the study store"):
        ms.export(study, tmp_path / "api.db")


def test_pruning_stops_a_hopeless_trial(tiny_mnist, tmp_path):
    data = load_mnist(tiny_mnist, val_size=100, download=False)
    storage = open_storage(f"sqlite:///{tmp_path / 'prune.db'}")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    study = optuna.create_study(storage=storage, study_name="prune", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner)
    good = {"optimizer": "sgd", "sgd_lr": 0.1, "momentum": 0.9, "scheduler": "cosine", "batch_size": 64,
            "rotation": 0.0, "translate": 0.0, "label_smoothing": 0.0, "dropout": 0.0, "ema": False}
    hopeless = {**good, "sgd_lr": 0.005, "momentum": 0.8, "batch_size": 256, "scheduler": "step",
                "step_size": 3, "gamma": 0.1}
    for params in (good, good, hopeless):
        study.enqueue_trial(params, skip_if_exists=False)
    objective = Objective(SearchSettings(max_params=8000, epochs=4, last_k=1), data, "cpu", tmp_path / "a")
    study.optimize(objective, n_trials=3)
    trial_states = [t.state for t in study.trials]
    assert trial_states[:2] == [optuna.trial.TrialState.COMPLETE] * 2
    assert trial_states[2] == optuna.trial.TrialState.PRUNED
    assert study.trials[2].last_step < 4  # stopped before its last epoch


def test_jobs_train_several_trials_at_once_in_one_process(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    _, shown = search(url, tiny_mnist, trials=4, jobs=2)
    assert "(2 at a time)" in shown
    # One progress line per trial, numbered 1..4 once each, though two threads report them.
    counted = sorted(int(n) for n in re.findall(r"^trial (\d)/4 ", shown, flags=re.MULTILINE))
    assert counted == [1, 2, 3, 4]
    assert sorted(t.number for t in optuna.load_study(study_name="mnist-search", storage=url).trials) == [0, 1, 2, 3]


def test_resuming_with_the_same_seed_samples_new_points(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'seeded.db'}"
    for _ in range(2):
        search(url, tiny_mnist, trials=1, epochs=1, seed=7)
    first, second = optuna.load_study(study_name="mnist-search", storage=url).trials
    assert first.params != second.params


def test_confirm_retrains_on_the_test_set_and_export_reports_it(tiny_mnist, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'confirm.db'}"
    study, _ = search(url, tiny_mnist, trials=3)
    artifacts = tmp_path / "confirm-artifacts"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot create the artifact directory"):
        confirm(study, ConfirmSettings(last_k=1), data_dir=tiny_mnist, artifact_dir=blocker / "weights")
    with pytest.raises(UserError, match="trial #7 is not a completed trial"):
        confirm(study, ConfirmSettings(trials=[7], last_k=1), data_dir=tiny_mnist, artifact_dir=artifacts)
    for bad, message in [({"last_k": 0}, "last_k must be"), ({"last_k": 3}, "more than trial"),
                         ({"last_k": 1, "first_seed": -1}, "first_seed must be"),
                         ({"last_k": 1, "workers": 0}, "workers must be")]:
        with pytest.raises(ConfigError, match=message):  # before any training
            confirm(study, ConfirmSettings(**bad), data_dir=tiny_mnist, artifact_dir=artifacts)
    best = study.best_trial
    from mnist_search.search.confirm import print_epoch

    confirm(study, ConfirmSettings(trials=[best.number], seeds=2, last_k=1, target=50, device="cpu"),
            data_dir=tiny_mnist, artifact_dir=artifacts, on_epoch=print_epoch)
    assert "seed 1 epoch  2" in capsys.readouterr().out
    study = optuna.load_study(study_name="mnist-search", storage=url)
    assert [k for k in study.user_attrs if k.startswith("confirm:")] == [f"confirm:{best.number}"]
    confirmation = study.user_attrs[f"confirm:{best.number}"]
    assert [r["seed"] for r in confirmation["runs"]] == [0, 1]
    assert all(len(r["test_acc"]) == 2 for r in confirmation["runs"])  # the study's 2 epochs, every epoch scored
    assert confirmation["last_k_min"] == min(r["test_acc"][-1] for r in confirmation["runs"])
    module, weights = tmp_path / "net.py", tmp_path / "net.safetensors"
    export(study, module, weights=weights, artifact_dir=artifacts)
    text = module.read_text()
    assert "Confirmed on the MNIST test set (2 seeds" in text and f"trial #{best.number}" in text
    # The exported weights are a confirmation seed's (the lower median of 2: the worse final accuracy),
    # and the module's own predict reproduces that seed's final test accuracy exactly.
    shipped = min(confirmation["runs"], key=lambda r: (r["test_acc"][-1], r["seed"]))
    assert f"confirmation seed {shipped['seed']}, the median of 2 completed seeds" in text
    assert {r["device"] for r in confirmation["runs"]} == {"cpu"} and "(scored on the CPU)" in text
    assert accuracy_of(module, tiny_mnist) == f"{shipped['test_acc'][-1]:.2f}"
    write_report(study, tmp_path / "report")
    index = (tmp_path / "report" / "index.md").read_text()
    assert "## Confirmed on the test set" in index
    assert (f"| #{best.number} | {best.user_attrs['params']:,} | 2 | "
            f"{confirmation['final_mean']:.2f} ± {confirmation['final_std']:.2f} |") in index
    # Fresh seeds re-check a confirmed trial; the new confirmation replaces the stored one.
    confirm(study, ConfirmSettings(trials=[best.number], seeds=1, first_seed=5, last_k=1), data_dir=tiny_mnist,
            artifact_dir=tmp_path / "fresh")
    rechecked = optuna.load_study(study_name="mnist-search", storage=url).user_attrs[f"confirm:{best.number}"]
    assert [r["seed"] for r in rechecked["runs"]] == [5]
    # Without trial numbers: the top trials by validation score, best first.
    top = confirm(study, ConfirmSettings(top=2, seeds=1, last_k=1), data_dir=tiny_mnist, artifact_dir=artifacts)
    ranked = [t.number for t in sorted((t for t in study.trials if t.state.name == "COMPLETE"),
                                       key=lambda t: t.value, reverse=True)]
    assert [record.number for record, _ in top] == ranked[:2]
    study = optuna.load_study(study_name="mnist-search", storage=url)
    assert sorted(k for k in study.user_attrs if k.startswith("confirm:")) == sorted(f"confirm:{n}" for n in ranked[:2])


def accuracy_of(module_path, data_dir) -> str:
    """The test accuracy the exported module's own predict gives with its shipped weights, as evaluate prints it."""
    import importlib.util

    loaded = importlib.util.spec_from_file_location(module_path.stem, module_path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    test = load_mnist(data_dir, val_size=0, download=False).test
    return f"{100.0 * int((module.predict(test.images) == test.labels).sum()) / len(test):.2f}"


def test_confirm_workers_train_seeds_in_parallel_processes_exactly_as_one_after_another(tiny_mnist, tmp_path,
                                                                                         monkeypatch):
    url = f"sqlite:///{tmp_path / 'parallel.db'}"
    study, _ = search(url, tiny_mnist, trials=1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic both ways, so the same numbers
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        common = ConfirmSettings(trials=[0], seeds=2, last_k=1, compile="off")
        where = {"data_dir": tiny_mnist, "artifact_dir": tmp_path / "artifacts"}
        (_, sequential), = confirm(study, common.replace(fuse=False), **where)
        (_, parallel), = confirm(study, common.replace(workers=2), **where)
    finally:
        torch.set_num_threads(before)
    assert [r.seed for r in parallel.runs] == [0, 1] and [r.cpu_threads for r in parallel.runs] == [1, 1]
    assert [r.test_acc for r in parallel.runs] == [r.test_acc for r in sequential.runs]
    assert parallel.stats == sequential.stats
    for ours, theirs in zip(parallel.runs, sequential.runs, strict=True):
        a, b = (load_file(tmp_path / "artifacts" / r.weights_artifact) for r in (ours, theirs))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pareto_search_and_export_within_any_budget(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'pareto.db'}"
    study, _ = search(url, tiny_mnist, objective="pareto", sampler="nsga2", trials=4, max_params=6000)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert completed and all(t.values[1] == t.user_attrs["params"] <= 6000 for t in completed)
    budget = min(t.user_attrs["params"] for t in completed)
    module = tmp_path / "small.py"
    export(study, module, max_params=budget)
    assert f"Parameters: {budget:,}" in module.read_text()
    with pytest.raises(UserError, match="no completed trial has at most"):
        export(study, module, max_params=budget - 1)
    write_report(study, tmp_path / "r")
    with pytest.raises(UserError, match="optimises maximize and minimize"):
        search(url, tiny_mnist, trials=1, max_params=6000)


def test_warm_start_narrows_another_studys_best_trials_to_a_smaller_budget(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'warm.db'}"
    search(url, tiny_mnist, study_name="wide", trials=3)
    with pytest.raises(UserError, match="no study named 'nope'"):
        search(url, tiny_mnist, study_name="narrow", warm_start="nope")
    assert optuna.study.get_all_study_names(url) == ["wide"]  # the typo created no study

    optuna.create_study(storage=url, study_name="empty")
    with pytest.raises(UserError, match="no completed trial"):
        search(url, tiny_mnist, study_name="fresh", warm_start="empty")
    assert sorted(optuna.study.get_all_study_names(url)) == ["empty", "wide"]  # nor did an empty source

    wide = optuna.load_study(study_name="wide", storage=url)
    best = sorted((t for t in wide.trials if t.state.name == "COMPLETE"), key=lambda t: t.value, reverse=True)[:2]
    args = {"trials": 1, "study_name": "narrow", "max_params": 2000, "warm_start": "wide", "warm_start_top": 2}
    _, first = search(url, tiny_mnist, **args)
    assert f"queued #{best[0].number}, #{best[1].number} at a budget of 2,000 params" in first
    assert ", queued 1" in first
    _, again = search(url, tiny_mnist, **args)  # resuming queues nothing twice: it runs the one still queued
    assert "queued none at a budget of 2,000 params (2 queued or run before)" in again
    narrow = optuna.load_study(study_name="narrow", storage=url).trials
    assert len(narrow) == 2 and all(t.state.name != "WAITING" for t in narrow)
    for copied, original in zip(narrow, best):
        # The same parameters; those the space gained since (norm, shared_repeats) at their old values.
        assert {name: copied.params[name] for name in original.params} == original.params
        assert copied.user_attrs["warm_start"] == f"wide#{original.number}"
        # The same structure (layer for layer), narrowed to fit the smaller budget.
        assert copied.user_attrs["params"] <= 2000 < original.user_attrs["params"]
        ops = [[layer["op"] for layer in t.user_attrs["spec"]["layers"]] for t in (copied, original)]
        assert ops[0] == ops[1]
    with pytest.raises(UserError, match="names this study"):
        search(url, tiny_mnist, study_name="narrow", warm_start="narrow", max_params=2000)
    with pytest.raises(ConfigError, match="warm_start_top must be at least 1"):
        search(url, tiny_mnist, study_name="narrow", warm_start="wide", warm_start_top=0)


def test_an_averaged_trial_is_confirmed_exported_and_evaluated_as_averaged(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'ema.db'}"
    study = optuna.create_study(study_name="mnist-search", storage=url, direction="maximize")
    study.enqueue_trial({"optimizer": "sgd", "sgd_lr": 0.1, "momentum": 0.9, "scheduler": "cosine",
                         "batch_size": 64, "ema": True, "ema_epochs": 1.0})
    study, _ = search(url, tiny_mnist, trials=1)
    trial = study.trials[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs["config"]["ema_epochs"] == 1.0
    assert all("raw_eval_acc" in m for m in trial.user_attrs["history"])
    (_, result), = confirm(study, ConfirmSettings(trials=[0], seeds=1, last_k=1), data_dir=tiny_mnist,
                           artifact_dir=tmp_path / "artifacts")
    assert result.raw is not None
    run = study.user_attrs["confirm:0"]["runs"][0]
    assert len(run["raw_test_acc"]) == len(run["test_acc"]) == 2
    module, weights = tmp_path / "net.py", tmp_path / "net.safetensors"
    export(study, module, weights=weights, artifact_dir=tmp_path / "artifacts")
    text = module.read_text()
    assert "exponential moving average of the training weights over about 1 epoch(s) of steps" in text
    assert "the same runs' raw (unaveraged) weights: final" in text
    assert accuracy_of(module, tiny_mnist) == f"{run['test_acc'][-1]:.2f}"  # the averaged weights were shipped


def test_a_trial_trained_with_several_seeds_scores_their_mean(tiny_mnist, tmp_path):
    data = load_mnist(tiny_mnist, val_size=100, download=False)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'seeds.db'}"), study_name="seeds",
                                direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner())
    study.enqueue_trial(GOOD_RECIPE)
    common = SearchSettings(max_params=8000, epochs=2, last_k=2, fuse_seeds=False)
    study.optimize(Objective(common.replace(seed=7, seeds_per_trial=2), data, "cpu", tmp_path / "a"), n_trials=1)
    study.enqueue_trial(study.trials[0].params)  # the same network and recipe ...
    # ... trained with the 2-seed trial's second seed alone
    study.optimize(Objective(common.replace(seed=8), data, "cpu", tmp_path / "a"), n_trials=1)
    both, alone = study.trials
    attrs = both.user_attrs
    assert attrs["seeds"] == 2 and attrs["config"]["seed"] == 7 and len(attrs["seed_histories"]) == 1
    scores = [sum(m["eval_acc"] for m in h) / 2 for h in (attrs["history"], attrs["seed_histories"][0])]
    assert attrs["seed_scores"] == scores and both.value == sum(scores) / 2
    assert attrs["last_k_min"] == min(m["eval_acc"] for h in (attrs["history"], *attrs["seed_histories"]) for m in h)

    def curve(history):  # the second seed is seed 8, trained exactly as a 1-seed trial of seed 8 trains
        return [(m["train_loss"], m["eval_loss"], m["eval_acc"]) for m in history]

    assert curve(attrs["seed_histories"][0]) == curve(alone.user_attrs["history"])
    assert curve(attrs["history"]) != curve(alone.user_attrs["history"])
    # Each seed's epochs are their own pruning steps: seed 2's epoch e is step 2 + e.
    assert sorted(both.intermediate_values) == [1, 2, 3, 4]
    assert both.intermediate_values[3] == attrs["seed_histories"][0][0]["eval_acc"]
    assert "seed_scores" not in alone.user_attrs and alone.value == scores[1]


class PruneAtStep(optuna.pruners.BasePruner):
    def __init__(self, step: int) -> None:
        self.step = step

    def prune(self, study, trial) -> bool:
        return trial.last_step == self.step


def test_a_trial_can_be_pruned_on_its_second_seed_and_says_where(tiny_mnist, tmp_path):
    from mnist_search.search.progress import outcome

    data = load_mnist(tiny_mnist, val_size=100, download=False)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'prune2.db'}"), study_name="prune2",
                                direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0), pruner=PruneAtStep(4))
    study.enqueue_trial(GOOD_RECIPE)
    settings = SearchSettings(max_params=8000, epochs=3, last_k=1, seeds_per_trial=2, fuse_seeds=False)
    study.optimize(Objective(settings, data, "cpu", tmp_path / "a"), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.last_step == 4
    assert len(trial.user_attrs["history"]) == 3 and len(trial.user_attrs["seed_histories"][0]) == 1
    assert records.TrialRecord.from_trial(trial).pruned_at == "epoch 1 of seed 2/2"
    assert outcome(trial).startswith("pruned at epoch 1 of seed 2/2")


def test_several_seeds_per_trial_through_export_and_report(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'seeds-export.db'}"
    study, _ = search(url, tiny_mnist, trials=2, seeds_per_trial=2)
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert completed and all(t.user_attrs["seeds"] == 2 and len(t.user_attrs["seed_scores"]) == 2 for t in completed)
    module = tmp_path / "net.py"
    export(study, module)
    scores = ", ".join(f"{s:.3f}" for s in study.best_trial.user_attrs["seed_scores"])
    assert f"the mean over 2 training seeds ({scores})" in module.read_text()
    write_report(study, tmp_path / "report")
    best_row = next(line for line in (tmp_path / "report" / "index.md").read_text().splitlines()
                    if line.startswith(f"| #{study.best_trial.number} |"))
    assert "| 2 | 2 | COMPLETE |" in best_row  # 2 epochs, 2 seeds


def test_export_says_where_the_shipped_seed_was_scored():
    assert measured_on("cpu") == " (scored on the CPU)"
    assert "TF32" in measured_on("cuda")  # GPU-scored accuracies can differ from a CPU evaluation by an image


def test_confirm_trains_a_networks_seeds_fused_as_it_would_one_after_another(tiny_mnist, tmp_path):
    study, _ = search(f"sqlite:///{tmp_path / 'fused.db'}", tiny_mnist, trials=1)
    common = ConfirmSettings(trials=[0], seeds=2, last_k=1, compile="off")
    where = {"data_dir": tiny_mnist, "artifact_dir": tmp_path / "artifacts"}
    (_, fused), = confirm(study, common.replace(fuse=True), **where)
    (_, alone), = confirm(study, common.replace(fuse=False), **where)
    assert [r.seed for r in fused.runs] == [0, 1]
    for ours, theirs in zip(fused.runs, alone.runs, strict=True):  # up to float error: at most one test image
        assert all(abs(a - b) <= 1.0 for a, b in zip(ours.test_acc, theirs.test_acc, strict=True))
        weights = load_file(tmp_path / "artifacts" / ours.weights_artifact)
        assert weights.keys() == load_file(tmp_path / "artifacts" / theirs.weights_artifact).keys()


def test_a_trial_with_fused_seeds_is_pruned_on_their_mean_per_epoch(tiny_mnist, tmp_path):
    from mnist_search.search.progress import outcome

    data = load_mnist(tiny_mnist, val_size=100, download=False)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'fused.db'}"), study_name="fused",
                                direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner())
    study.enqueue_trial(GOOD_RECIPE)
    objective = Objective(SearchSettings(max_params=8000, epochs=2, last_k=2, seed=7, seeds_per_trial=2,
                                         fuse_seeds=True), data, "cpu", tmp_path / "a")
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    attrs = trial.user_attrs
    assert attrs["seed_layout"] == "fused" and len(attrs["seed_histories"]) == 1 and len(attrs["seed_scores"]) == 2
    assert sorted(trial.intermediate_values) == [1, 2]  # one step per epoch: the seeds advance together
    for epoch in (1, 2):
        seed_accuracies = [h[epoch - 1]["eval_acc"] for h in (attrs["history"], attrs["seed_histories"][0])]
        assert trial.intermediate_values[epoch] == pytest.approx(sum(seed_accuracies) / 2)
    study.pruner = PruneAtStep(1)
    study.enqueue_trial(GOOD_RECIPE)
    study.optimize(objective, n_trials=1)
    assert outcome(study.trials[1]).startswith("pruned at epoch 1 (mean of 2 seeds)")


def test_cpu_runs_default_to_one_single_threaded_worker_per_idle_core():
    """workers=None: on the CPU one worker per idle core, never more than the trials; on a GPU
    one process; an explicit count always wins."""
    settings = SearchSettings(trials=5)
    assert settings.workers is None
    assert settings.workers_for("cpu", free_cores=2) == 2
    assert settings.workers_for("cpu", free_cores=1) == 1
    assert SearchSettings(trials=1).workers_for("cpu", free_cores=4) == 1
    assert settings.workers_for("cuda", free_cores=16) == 1
    assert settings.replace(workers=3).workers_for("cpu", free_cores=1) == 3
    assert SearchSettings.from_json(settings.to_json()) == settings


def test_busy_cores_are_not_counted_as_free(monkeypatch):
    """free_cpu_cores reads /proc/stat: cores that other processes keep busy are not free, and
    OMP_NUM_THREADS, when set, decides a single process's threads."""
    from mnist_search.trainer import setup

    monkeypatch.setattr(setup.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(setup, "cpu_cores", lambda: 4)
    # user nice system idle iowait irq softirq: 100 ticks per core over the sample
    samples = iter([[0, 0, 0, 0, 0, 0, 0], [200, 0, 0, 200, 0, 0, 0]])  # two of four cores busy
    monkeypatch.setattr(setup, "_cpu_times", lambda: next(samples))
    assert setup.free_cpu_cores(sample_s=0) == 2
    samples = iter([[0] * 7, [400, 0, 0, 0, 0, 0, 0]])  # all busy: still one, or nothing would train
    assert setup.free_cpu_cores(sample_s=0) == 1
    samples = iter([[0] * 7, [0, 0, 0, 400, 0, 0, 0]])
    assert setup.free_cpu_cores(sample_s=0) == 4
    monkeypatch.setattr(setup, "free_cpu_cores", lambda: 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads, note = setup.cpu_threads_for_one_process()
    assert threads == 1 and "3 of 4 CPU cores are busy" in note and "OMP_NUM_THREADS" in note
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert setup.cpu_threads_for_one_process()[1] is None


def test_train_images_trains_each_trial_on_a_fixed_subset_and_is_recorded(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study, shown = search(url, tiny_mnist, trials=1, train_images=64, epochs=1)
    assert "on 64 training images" in shown
    assert study.user_attrs[records.SETTINGS]["train_images"] == 64
    trained = study.trials[0]
    assert trained.state == optuna.trial.TrialState.COMPLETE
    # a resume that trains on all the images would score on another scale: refused
    with pytest.raises(UserError, match="train_images 64 -> None"):
        search(url, tiny_mnist, trials=1, epochs=1)
    with pytest.raises(ConfigError, match="train_images must be between 1 and"):
        SearchSettings(train_images=60_000)
    data = load_mnist(tiny_mnist, val_size=100, download=False)
    first, again = data.with_train_images(64), data.with_train_images(64)
    assert len(first.train) == 64 and torch.equal(first.train.images, again.train.images)
    assert len(first.val) == len(data.val) and len(first.test) == len(data.test)


def test_a_search_with_a_teacher_samples_distillation_and_confirm_retrains_with_it(tiny_mnist, tmp_path):
    from mnist_search.models import get_preset
    from mnist_search.models.weights import save_weights
    from mnist_search.trainer import build_seeded

    spec_file, weights_file = tmp_path / "teacher.json", tmp_path / "teacher.safetensors"
    teacher_spec = get_preset("seed002").spec
    spec_file.write_text(teacher_spec.to_json())
    save_weights(build_seeded(teacher_spec, 0), weights_file)
    url = f"sqlite:///{tmp_path / 's.db'}"
    study, _ = search(url, tiny_mnist, trials=2, epochs=1, teacher=str(spec_file), teacher_weights=str(weights_file),
                      max_params=3000)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(0.1 <= t.params["distill_weight"] <= 0.9 for t in done)
    assert all(t.user_attrs["config"]["distill_weight"] == t.params["distill_weight"] for t in done)
    (record, confirmation), = confirm(study, ConfirmSettings(top=1, seeds=1, last_k=1), data_dir=tiny_mnist,
                                      artifact_dir=tmp_path / "artifacts")
    assert confirmation.runs[0].status == "completed" and len(confirmation.runs[0].test_acc) == 1
    with pytest.raises(ConfigError, match="both teacher"):
        SearchSettings(teacher=str(spec_file))
    # a study whose record lost its teacher cannot retrain its distilled trials as they were trained
    settings = dict(study.user_attrs[records.SETTINGS], teacher=None, teacher_weights=None)
    study.set_user_attr(records.SETTINGS, settings)
    with pytest.raises(ConfigError, match="learnt from a teacher"):
        confirm(study, ConfirmSettings(top=1, seeds=1, last_k=1), data_dir=tiny_mnist,
                artifact_dir=tmp_path / "artifacts")


def test_a_trial_still_at_chance_after_five_epochs_is_pruned_whatever_the_pruner_says(tmp_path):
    from mnist_search.search.objective import CHANCE_EPOCHS, Objective

    class Trial:
        attrs: dict = {}

        def report(self, value, step):
            self.reported = (value, step)

        def should_prune(self):
            return False

        def set_user_attr(self, key, value):
            self.attrs[key] = value

    objective = Objective(SearchSettings(max_params=1000, epochs=15), None, "cpu", tmp_path)
    trial = Trial()
    writer = records.TrialWriter(trial)
    objective._report(trial, writer, 11.24, CHANCE_EPOCHS - 1, 0.0, "epoch 2", CHANCE_EPOCHS - 1)  # early: left alone
    objective._report(trial, writer, 35.0, CHANCE_EPOCHS, 0.0, "epoch 3", CHANCE_EPOCHS)  # learning: left alone
    with pytest.raises(optuna.TrialPruned, match="still at chance"):
        objective._report(trial, writer, 11.24, CHANCE_EPOCHS, 0.0, "epoch 3", CHANCE_EPOCHS)
    assert trial.reported == (11.24, CHANCE_EPOCHS)  # the pruner still saw the epoch
