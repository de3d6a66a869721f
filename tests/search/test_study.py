"""End-to-end searches on tiny synthetic data: real SQLite files, the real PostgreSQL server, real HTTP."""

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import torch
from safetensors.torch import load_file

from mnist_search.commands.run import worker_env
from mnist_search.models import ArchSpec, build
from mnist_search.models.weights import load_weights
from mnist_search.search.objective import Objective
from mnist_search.search.study import open_study
from mnist_search.search.confirm import use_threads
from mnist_search.storage import open_storage
from mnist_search.trainer import load_mnist
from tests.helpers import assert_user_error, cli

SEARCH = ("--epochs", "2", "--last-k", "1", "--val-size", "100", "--seed", "3")


def trial_states(url: str, name: str = "mnist-search") -> list[str]:
    study = optuna.load_study(study_name=name, storage=url)
    return [t.state.name for t in study.trials]


def test_sqlite_study_runs_resumes_and_exports(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = cli("run", "--trials", "3", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
    assert first.returncode == 0, first.stderr
    assert "trial 3/3" in first.stdout and "next: mnist-search export" in first.stdout
    assert len(trial_states(url)) == 3

    again = cli("run", "--trials", "2", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
    assert again.returncode == 0, again.stderr
    assert "3 trials so far" in again.stdout and len(trial_states(url)) == 5

    study = optuna.load_study(study_name="mnist-search", storage=url)
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            attrs = trial.user_attrs
            assert attrs["params"] <= 8000 and len(attrs["history"]) == 2 and attrs["device"] == "cpu"
            assert set(attrs) >= {"receptive_field", "spec", "config", "seconds", "weights_artifact"}

    module, weights = tmp_path / "best_net.py", tmp_path / "best_net.safetensors"
    exported = cli("export", "--storage", url, "--output", str(module), "--weights", str(weights))
    assert exported.returncode == 0, exported.stderr

    best = study.best_trial
    spec = ArchSpec.from_dict(best.user_attrs["spec"])
    loaded = importlib.util.spec_from_file_location("best_net", module)
    best_net = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(best_net)
    net = best_net.load_weights(str(weights))
    assert sum(p.numel() for p in net.parameters()) == best.user_attrs["params"]
    artifact = tmp_path / "study-artifacts" / best.user_attrs["weights_artifact"]  # beside study.db by default
    trained = load_weights(build(spec), artifact).eval()
    images = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(net(images), trained(images))
    assert_user_error(cli("export", "--storage", url, "--output", str(tmp_path / "missing" / "x.py")), "cannot write")
    report = cli("report", "--storage", url, "--output", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    for name in ("accuracy_vs_params.png", "epoch_curves.png", "optimization_history.png", "param_importances.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (tmp_path / "report" / "index.md").read_text()
    assert f"| #{best.number} | {best.value:.3f} |" in index and "accuracy_vs_params.png" in index
    source = module.read_text()
    assert "import pickle" not in source and "torch.load" not in source
    assert f"trial #{best.number}" in source and f"{best.user_attrs['params']:,}" in source


def test_postgresql_study(tiny_mnist, tmp_path, postgres_url):
    result = cli("run", "--trials", "3", "--storage", postgres_url, "--study-name", "pg-study",
                 "--artifacts", str(tmp_path / "artifacts"), "--data-dir", str(tiny_mnist), *SEARCH)
    assert result.returncode == 0, result.stderr
    assert len(trial_states(postgres_url, "pg-study")) == 3
    worker = cli("worker", "--trials", "1", "--storage", postgres_url, "--study-name", "pg-study",
                 "--artifacts", str(tmp_path / "artifacts"), "--data-dir", str(tiny_mnist), *SEARCH)
    assert worker.returncode == 0, worker.stderr
    assert len(trial_states(postgres_url, "pg-study")) == 4


def test_pruning_stops_a_hopeless_trial(tiny_mnist, tmp_path):
    data = load_mnist(tiny_mnist, val_size=100, download=False)
    storage = open_storage(f"sqlite:///{tmp_path / 'prune.db'}")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    study = open_study(storage, "prune", optuna.samplers.RandomSampler(seed=0), pruner)
    good = {"optimizer": "sgd", "sgd_lr": 0.1, "momentum": 0.9, "scheduler": "cosine", "batch_size": 64,
            "rotation": 0.0, "translate": 0.0, "label_smoothing": 0.0, "dropout": 0.0, "ema": False}
    hopeless = {**good, "sgd_lr": 0.005, "momentum": 0.8, "batch_size": 256, "scheduler": "step",
                "step_size": 3, "gamma": 0.1}
    for params in (good, good, hopeless):
        study.enqueue_trial(params, skip_if_exists=False)
    objective = Objective(data=data, max_params=8000, epochs=4, device="cpu", artifact_dir=tmp_path / "a", last_k=1)
    study.optimize(objective, n_trials=3)
    states = [t.state for t in study.trials]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE] * 2
    assert states[2] == optuna.trial.TrialState.PRUNED
    assert study.trials[2].last_step < 4  # stopped before its last epoch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study_over_http(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    assert cli("run", "--trials", "1", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH).returncode == 0
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mnist_search", "dashboard", "--storage", url, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        studies = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.load(response)["study_summaries"]
                break
            except OSError:
                time.sleep(0.5)
        assert studies and studies[0]["study_name"] == "mnist-search"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}?after=0") as response:
            detail = json.load(response)
        assert len(detail["trials"]) == 1
        note = detail["trials"][0]["note"]["body"]
        assert "parameters, receptive field" in note and "| # | layer |" in note
        busy = cli("dashboard", "--storage", url, "--port", str(port))
        assert_user_error(busy, "choose another port")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_bad_search_inputs_are_one_line_exit_2(tiny_mnist, tmp_path):
    data = ("--data-dir", str(tiny_mnist), "--val-size", "100")
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert_user_error(cli("run", "--trials", "0", "--storage", db, *data), "--trials must be at least 1")
    assert_user_error(cli("run", "--trials", "-2", "--storage", db, *data), "--trials must be at least 1")
    assert_user_error(cli("run", "--max-params", "50", "--storage", db, *data), "too small")
    assert_user_error(cli("run", "--timeout", "0", "--storage", db, *data), "--timeout must be a positive")
    assert_user_error(cli("run", "--seeds-per-trial", "0", "--storage", db, *data), "--seeds-per-trial must be")
    assert_user_error(cli("run", "--storage", "mysql://x@y/z", *data), "unsupported storage")
    for in_memory in ("sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared&uri=true",
                      "sqlite:///file:m?mode=memory&uri=true"):
        assert_user_error(cli("run", "--storage", in_memory, *data), "in-memory SQLite storage", "sqlite:///PATH.db")
    assert_user_error(cli("run", "--storage", "postgresql://postgres:hunter2@127.0.0.1:1/none", *data),
                      "cannot open storage", "***")
    assert "hunter2" not in cli("run", "--storage", "postgresql://postgres:hunter2@127.0.0.1:1/none", *data).stderr
    assert_user_error(cli("worker", "--storage", db, "--study-name", "nope", *data), "no study named 'nope'")
    assert_user_error(cli("export", "--storage", db, "--study-name", "nope"), "no study named")
    assert_user_error(cli("evaluate", str(tmp_path / "nope.py"), "--weights", str(tmp_path / "w")), "does not exist")
    stranger = tmp_path / "stranger.py"
    stranger.write_text("x = 1\n")
    assert_user_error(cli("evaluate", str(stranger), "--weights", str(stranger)), "has no load_weights()")
    assert_user_error(cli("evaluate", str(tmp_path), "--weights", str(stranger)), "is not a file")
    weights_first = tmp_path / "w.safetensors"
    weights_first.write_bytes(b"\0" * 16)
    assert_user_error(cli("evaluate", str(weights_first), "--weights", str(stranger)), "is not a Python module")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    assert_user_error(cli("evaluate", str(broken), "--weights", str(stranger)), "RuntimeError: boom")
    # None of the bad inputs created a study or a trial.
    assert not (tmp_path / "s.db").exists() or optuna.get_all_study_summaries(db) == []


def test_local_workers_share_one_sqlite_study(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    result = cli("run", "--trials", "4", "--workers", "2", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
    assert result.returncode == 0, result.stderr
    # The machine's cores are split between the workers (one thread per core each would oversubscribe them).
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"starting 2 worker processes on study 'mnist-search' (2, 2 trials, {threads} CPU threads each)" in result.stdout
    # The workers were given the URL in their environment; the hint still names it, once.
    assert result.stdout.count("next: mnist-search export --storage sqlite:///") == 1
    trials = optuna.load_study(study_name="mnist-search", storage=url).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.user_attrs["cpu_threads"] for t in trials} == {threads}
    assert "database is locked" not in result.stderr


def test_jobs_train_several_trials_at_once_in_one_process(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    result = cli("run", "--trials", "4", "--jobs", "2", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
    assert result.returncode == 0, result.stderr
    assert "(2 at a time)" in result.stdout
    # One progress line per trial, numbered 1..4 once each, though two threads report them.
    counted = sorted(int(n) for n in re.findall(r"^trial (\d)/4 ", result.stdout, flags=re.MULTILINE))
    assert counted == [1, 2, 3, 4]
    assert sorted(t.number for t in optuna.load_study(study_name="mnist-search", storage=url).trials) == [0, 1, 2, 3]
    assert_user_error(cli("run", "--jobs", "0", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH),
                      "--jobs must be between 1 and 16")


def test_timeout_stops_starting_trials_in_every_worker(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'timeout.db'}"
    # A timeout shorter than one trial: each worker finishes the trial it started, then stops.
    result = cli("run", "--trials", "10", "--workers", "2", "--timeout", "0.0001", "--storage", url,
                 "--data-dir", str(tiny_mnist), *SEARCH)
    assert result.returncode == 0, result.stderr
    assert trial_states(url) == ["COMPLETE", "COMPLETE"]


def test_resuming_with_the_same_seed_samples_new_points(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'seeded.db'}"
    for _ in range(2):
        result = cli("run", "--trials", "1", "--epochs", "1", "--storage", url, "--data-dir", str(tiny_mnist),
                     "--val-size", "100", "--last-k", "1", "--seed", "7")
        assert result.returncode == 0, result.stderr
    first, second = optuna.load_study(study_name="mnist-search", storage=url).trials
    assert first.params != second.params


def test_confirm_retrains_on_the_test_set_and_export_reports_it(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'confirm.db'}"
    assert cli("run", "--trials", "3", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH).returncode == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_user_error(cli("confirm", "--storage", url, "--artifacts", str(blocker / "weights"),
                          "--data-dir", str(tiny_mnist), "--val-size", "100"), "cannot create the artifact directory")
    study = optuna.load_study(study_name="mnist-search", storage=url)
    assert_user_error(cli("confirm", "--trial", "7", "--storage", url, "--data-dir", str(tiny_mnist),
                          "--val-size", "100"), "trial #7 is not a completed trial")
    best = study.best_trial
    result = cli("confirm", "--trial", str(best.number), "--seeds", "2", "--last-k", "1", "--target", "50",
                 "--storage", url, "--data-dir", str(tiny_mnist), "--val-size", "100", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="mnist-search", storage=url)
    assert [k for k in study.user_attrs if k.startswith("confirm:")] == [f"confirm:{best.number}"]
    confirmation = study.user_attrs[f"confirm:{best.number}"]
    assert [r["seed"] for r in confirmation["runs"]] == [0, 1]
    assert all(len(r["test_acc"]) == 2 for r in confirmation["runs"])  # the study's 2 epochs, every epoch scored
    assert confirmation["last_k_min"] == min(r["test_acc"][-1] for r in confirmation["runs"])
    assert f"#{best.number}" in result.stdout and "seed 1 epoch  2" in result.stdout
    module, weights = tmp_path / "net.py", tmp_path / "net.safetensors"
    exported = cli("export", "--storage", url, "--output", str(module), "--weights", str(weights))
    assert exported.returncode == 0, exported.stderr
    text = module.read_text()
    assert "Confirmed on the MNIST test set (2 seeds" in text and f"trial #{best.number}" in text
    # The exported weights are a confirmation seed's (the lower median of 2: the worse final accuracy),
    # and evaluating the module with them reproduces that seed's final test accuracy exactly.
    shipped = min(confirmation["runs"], key=lambda r: (r["test_acc"][-1], r["seed"]))
    assert f"confirmation seed {shipped['seed']}, the median of 2 completed seeds" in text
    assert {r["device"] for r in confirmation["runs"]} == {"cpu"} and "(scored on the CPU)" in text
    evaluated = cli("evaluate", str(module), "--weights", str(weights), "--data-dir", str(tiny_mnist))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {shipped['test_acc'][-1]:.2f}%" in evaluated.stdout
    report = cli("report", "--storage", url, "--output", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    index = (tmp_path / "report" / "index.md").read_text()
    # Fresh seeds re-check a confirmed trial; the new confirmation replaces the stored one.
    again = cli("confirm", "--trial", str(best.number), "--seeds", "1", "--first-seed", "5", "--last-k", "1",
                "--storage", url, "--data-dir", str(tiny_mnist), "--val-size", "100", "--artifacts",
                str(tmp_path / "fresh"))
    assert again.returncode == 0, again.stderr
    assert "1 seeds (5-5)" in again.stdout
    rechecked = optuna.load_study(study_name="mnist-search", storage=url).user_attrs[f"confirm:{best.number}"]
    assert [r["seed"] for r in rechecked["runs"]] == [5]
    assert_user_error(cli("confirm", "--first-seed", "-1", "--storage", url, "--data-dir", str(tiny_mnist)),
                      "--first-seed must be 0 or more")
    assert "## Confirmed on the test set" in index
    assert (f"| #{best.number} | {best.user_attrs['params']:,} | 2 | "
            f"{confirmation['final_mean']:.2f} ± {confirmation['final_std']:.2f} |") in index
    # Without --trial: the top trials by validation score, best first.
    top = cli("confirm", "--top", "2", "--seeds", "1", "--last-k", "1", "--storage", url, "--data-dir", str(tiny_mnist),
              "--val-size", "100")
    assert top.returncode == 0, top.stderr
    study = optuna.load_study(study_name="mnist-search", storage=url)
    ranked = [t.number for t in sorted((t for t in study.trials if t.state.name == "COMPLETE"),
                                       key=lambda t: t.value, reverse=True)]
    assert re.findall(r"confirming trial #(\d+)", top.stdout) == [str(n) for n in ranked[:2]]
    assert sorted(k for k in study.user_attrs if k.startswith("confirm:")) == sorted(f"confirm:{n}" for n in ranked[:2])
    assert cli("confirm", "--top", "1", "--trial", "0", "--storage", url).returncode == 2  # one or the other


def test_confirm_workers_train_seeds_in_parallel_processes_exactly_as_one_after_another(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'parallel.db'}"
    assert cli("run", "--trials", "1", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH).returncode == 0
    confirm = ("confirm", "--trial", "0", "--seeds", "2", "--last-k", "1", "--compile", "off", "--storage", url,
               "--data-dir", str(tiny_mnist), "--val-size", "100")
    one_thread = {"OMP_NUM_THREADS": "1"}  # the same arithmetic both ways, so the same numbers

    def confirmed(*extra: str) -> tuple[dict, list[dict], str]:
        result = cli(*confirm, *extra, env=one_thread)
        assert result.returncode == 0, result.stderr
        confirmation = optuna.load_study(study_name="mnist-search", storage=url).user_attrs["confirm:0"]
        weights = [load_file(tmp_path / "artifacts" / r["weights_artifact"]) for r in confirmation["runs"]]
        return confirmation, weights, result.stdout

    sequential, sequential_weights, _ = confirmed("--artifacts", str(tmp_path / "artifacts"))
    parallel, parallel_weights, stdout = confirmed("--workers", "2", "--artifacts", str(tmp_path / "artifacts"))
    assert "2 seeds (0-1) x 2 epochs on" in stdout and "2 at once (1 CPU threads each)" in stdout
    assert "seed 0 epoch  2" in stdout and "seed 1 epoch  2" in stdout  # progress from the worker processes
    assert [r["seed"] for r in parallel["runs"]] == [0, 1] and [r["cpu_threads"] for r in parallel["runs"]] == [1, 1]
    assert [r["test_acc"] for r in parallel["runs"]] == [r["test_acc"] for r in sequential["runs"]]
    assert parallel["final_mean"] == sequential["final_mean"]
    for ours, theirs in zip(parallel_weights, sequential_weights, strict=True):
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert_user_error(cli(*confirm, "--workers", "0"), "--workers must be at least 1")


def test_a_confirm_worker_takes_its_share_of_the_cores_unless_the_user_chose(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        torch.set_num_threads(2)
        use_threads(1)
        assert torch.get_num_threads() == 2  # the user's setting, already applied at start-up, stands
        monkeypatch.delenv("OMP_NUM_THREADS")
        use_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_pareto_search_and_export_within_any_budget(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'pareto.db'}"
    result = cli("run", "--objective", "pareto", "--sampler", "nsga2", "--trials", "4", "--max-params", "6000",
                 "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="mnist-search", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert completed and all(t.values[1] == t.user_attrs["params"] <= 6000 for t in completed)
    budget = min(t.user_attrs["params"] for t in completed)
    module = tmp_path / "small.py"
    exported = cli("export", "--storage", url, "--max-params", str(budget), "--output", str(module))
    assert exported.returncode == 0, exported.stderr
    assert f"Parameters: {budget:,}" in module.read_text()
    assert_user_error(cli("export", "--storage", url, "--max-params", str(budget - 1), "--output", str(module)),
                      "no completed trial has at most")
    assert cli("report", "--storage", url, "--output", str(tmp_path / "r")).returncode == 0
    mismatch = cli("run", "--trials", "1", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
    assert_user_error(mismatch, "is a Pareto (score, parameters) study", "--objective pareto")


def test_warm_start_narrows_another_studys_best_trials_to_a_smaller_budget(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'warm.db'}"
    data = ("--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
    assert cli("run", "--trials", "3", "--study-name", "wide", *data).returncode == 0
    assert_user_error(cli("run", "--study-name", "narrow", "--warm-start", "nope", *data), "no study named 'nope'")
    assert optuna.study.get_all_study_names(url) == ["wide"]  # the typo created no study

    optuna.create_study(storage=url, study_name="empty")
    assert_user_error(cli("run", "--study-name", "fresh", "--warm-start", "empty", *data), "no completed trial")
    assert sorted(optuna.study.get_all_study_names(url)) == ["empty", "wide"]  # nor did an empty source

    wide = optuna.load_study(study_name="wide", storage=url)
    best = sorted((t for t in wide.trials if t.state.name == "COMPLETE"), key=lambda t: t.value, reverse=True)[:2]
    args = ("--trials", "1", "--study-name", "narrow", "--max-params", "2000", "--warm-start", "wide",
            "--warm-start-top", "2", *data)
    first = cli("run", *args)
    assert first.returncode == 0, first.stderr
    assert f"queued #{best[0].number}, #{best[1].number} at a budget of 2,000 params" in first.stdout
    assert "note: 2 queued trials and --trials 1" in first.stdout and ", queued 1;" in first.stdout
    again = cli("run", *args)  # resuming queues nothing twice: it runs the one still queued
    assert again.returncode == 0, again.stderr
    assert "queued none at a budget of 2,000 params (2 queued or run before)" in again.stdout
    narrow = optuna.load_study(study_name="narrow", storage=url).trials
    assert len(narrow) == 2 and all(t.state.name != "WAITING" for t in narrow)
    for copied, original in zip(narrow, best):
        assert copied.params == original.params
        assert copied.user_attrs["warm_start"] == f"wide#{original.number}"
        # The same structure (layer for layer), narrowed to fit the smaller budget.
        assert copied.user_attrs["params"] <= 2000 < original.user_attrs["params"]
        ops = [[layer["op"] for layer in t.user_attrs["spec"]["layers"]] for t in (copied, original)]
        assert ops[0] == ops[1]
    assert_user_error(cli("run", "--study-name", "narrow", "--warm-start", "narrow", *data), "names this study")
    assert cli("worker", "--study-name", "narrow", "--warm-start", "wide", *data).returncode == 2  # `run` only
    assert_user_error(cli("run", "--study-name", "narrow", "--warm-start", "wide", "--warm-start-top", "0", *data),
                      "--warm-start-top must be at least 1")


def test_an_averaged_trial_is_confirmed_exported_and_evaluated_as_averaged(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'ema.db'}"
    study = optuna.create_study(study_name="mnist-search", storage=url, direction="maximize")
    study.enqueue_trial({"optimizer": "sgd", "sgd_lr": 0.1, "momentum": 0.9, "scheduler": "cosine",
                         "batch_size": 64, "ema": True, "ema_epochs": 1.0})
    assert cli("run", "--trials", "1", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH).returncode == 0
    trial = optuna.load_study(study_name="mnist-search", storage=url).trials[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs["config"]["ema_epochs"] == 1.0
    assert all("raw_eval_acc" in m for m in trial.user_attrs["history"])
    confirmed = cli("confirm", "--trial", "0", "--seeds", "1", "--last-k", "1", "--storage", url,
                    "--data-dir", str(tiny_mnist), "--val-size", "100")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "(raw weights " in confirmed.stdout and re.search(r"^  raw ", confirmed.stdout, re.MULTILINE)
    run = optuna.load_study(study_name="mnist-search", storage=url).user_attrs["confirm:0"]["runs"][0]
    assert len(run["raw_test_acc"]) == len(run["test_acc"]) == 2
    module, weights = tmp_path / "net.py", tmp_path / "net.safetensors"
    assert cli("export", "--storage", url, "--output", str(module), "--weights", str(weights)).returncode == 0
    text = module.read_text()
    assert "exponential moving average of the training weights over about 1 epoch(s) of steps" in text
    assert "the same runs' raw (unaveraged) weights: final" in text
    evaluated = cli("evaluate", str(module), "--weights", str(weights), "--data-dir", str(tiny_mnist))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {run['test_acc'][-1]:.2f}%" in evaluated.stdout  # the averaged weights were shipped


GOOD_RECIPE = {"optimizer": "sgd", "sgd_lr": 0.1, "momentum": 0.9, "scheduler": "cosine", "batch_size": 64,
               "rotation": 3.0, "translate": 0.05, "label_smoothing": 0.0, "dropout": 0.05, "ema": False}


def test_a_trial_trained_with_several_seeds_scores_their_mean(tiny_mnist, tmp_path):
    data = load_mnist(tiny_mnist, val_size=100, download=False)
    study = open_study(open_storage(f"sqlite:///{tmp_path / 'seeds.db'}"), "seeds",
                       optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())
    study.enqueue_trial(GOOD_RECIPE)
    common = dict(data=data, max_params=8000, epochs=2, device="cpu", artifact_dir=tmp_path / "a", last_k=2)
    study.optimize(Objective(**common, seed=7, seeds=2), n_trials=1)
    study.enqueue_trial(study.trials[0].params)  # the same network and recipe ...
    study.optimize(Objective(**common, seed=8), n_trials=1)  # ... trained with the 2-seed trial's second seed alone
    both, alone = study.trials
    attrs = both.user_attrs
    assert attrs["seeds"] == 2 and attrs["config"]["seed"] == 7 and len(attrs["seed_histories"]) == 1
    scores = [sum(m["eval_acc"] for m in h) / 2 for h in (attrs["history"], attrs["seed_histories"][0])]
    assert attrs["seed_scores"] == scores and both.value == sum(scores) / 2
    assert attrs["last_k_min"] == min(m["eval_acc"] for h in (attrs["history"], *attrs["seed_histories"]) for m in h)
    # The second seed is seed 8, trained exactly as a 1-seed trial of seed 8 trains; the first is not.
    def curve(history):
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
    from mnist_search.search.objective import pruned_at

    data = load_mnist(tiny_mnist, val_size=100, download=False)
    study = open_study(open_storage(f"sqlite:///{tmp_path / 'prune2.db'}"), "prune2",
                       optuna.samplers.RandomSampler(seed=0), PruneAtStep(4))
    study.enqueue_trial(GOOD_RECIPE)
    study.optimize(Objective(data=data, max_params=8000, epochs=3, device="cpu", artifact_dir=tmp_path / "a",
                             last_k=1, seeds=2), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.last_step == 4
    assert len(trial.user_attrs["history"]) == 3 and len(trial.user_attrs["seed_histories"][0]) == 1
    assert pruned_at(trial) == "epoch 1 of seed 2/2"


def test_several_seeds_per_trial_from_the_command_line_through_export(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'cli-seeds.db'}"
    result = cli("run", "--trials", "2", "--seeds-per-trial", "2", "--workers", "2", "--storage", url,
                 "--data-dir", str(tiny_mnist), *SEARCH)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="mnist-search", storage=url)
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert completed and all(t.user_attrs["seeds"] == 2 and len(t.user_attrs["seed_scores"]) == 2 for t in completed)
    module = tmp_path / "net.py"
    assert cli("export", "--storage", url, "--output", str(module)).returncode == 0
    scores = ", ".join(f"{s:.3f}" for s in study.best_trial.user_attrs["seed_scores"])
    assert f"the mean over 2 training seeds ({scores})" in module.read_text()
    assert cli("report", "--storage", url, "--output", str(tmp_path / "report")).returncode == 0
    best_row = next(line for line in (tmp_path / "report" / "index.md").read_text().splitlines()
                    if line.startswith(f"| #{study.best_trial.number} |"))
    assert "| 2 | 2 | COMPLETE |" in best_row  # 2 epochs, 2 seeds


def test_worker_processes_split_the_cores_unless_the_user_chose_a_thread_count():
    cores = len(os.sched_getaffinity(0))
    assert worker_env({}, "sqlite:///x.db", 1)["OMP_NUM_THREADS"] == str(cores)
    assert worker_env({}, "sqlite:///x.db", cores + 1)["OMP_NUM_THREADS"] == "1"  # never 0
    chosen = worker_env({"OMP_NUM_THREADS": "3", "MNIST_SEARCH_STORAGE": "old"}, "sqlite:///x.db", 2)
    assert chosen["OMP_NUM_THREADS"] == "3" and chosen["MNIST_SEARCH_STORAGE"] == "sqlite:///x.db"


def test_export_says_where_the_shipped_seed_was_scored():
    from mnist_search.commands.export import measured_on

    assert measured_on("cpu") == " (scored on the CPU)"
    assert "TF32" in measured_on("cuda")  # GPU-scored accuracies can differ from a CPU evaluation by an image
    assert measured_on(None) == ""  # confirmations stored before runs recorded their device
