"""The search commands end to end, as a user runs them: real processes, real SQLite files, real HTTP.

The behaviour of the search itself is tested in-process (test_search.py); these check what only
a real process shows: flags, exit codes, output, worker processes and the dashboard's server."""

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import torch

from mnist_search.models import ArchSpec, build
from mnist_search.models.weights import load_weights
from tests.helpers import assert_user_error, cli, cli_in_process, search
from tests.waiting import wait_until_trial_trains

SEARCH = ("--epochs", "2", "--last-k", "1", "--val-size", "100", "--seed", "3")


def trial_states(url: str, name: str = "mnist-search") -> list[str]:
    study = optuna.load_study(study_name=name, storage=url)
    return [t.state.name for t in study.trials]


def test_sqlite_study_runs_resumes_and_exports(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = cli("run", "--workers", "1", "--trials", "3", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
    assert first.returncode == 0, first.stderr
    assert "trial 3/3" in first.stdout and "then mnist-search export" in first.stdout
    assert len(trial_states(url)) == 3

    again = cli_in_process("run", "--workers", "1", "--trials", "2", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
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
    evaluated = cli("evaluate", str(module), "--weights", str(weights), "--data-dir", str(tiny_mnist))
    assert evaluated.returncode == 0, evaluated.stderr
    assert re.fullmatch(r"best_net.py \+ best_net.safetensors: test accuracy \d+\.\d\d% on 100 images "
                        rf"\({best.user_attrs['params']:,} parameters\)\n", evaluated.stdout), evaluated.stdout
    assert_user_error(cli_in_process("export", "--storage", url, "--output", str(tmp_path / "missing" / "x.py")),
                      "does not exist")
    report = cli("report", "--storage", url, "--output", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    for name in ("accuracy_vs_params.png", "epoch_curves.png", "optimization_history.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (tmp_path / "report" / "index.md").read_text()
    assert "*param importances*: not drawn" in index  # 5 trials are too few for it to mean anything
    assert f"| #{best.number} | {best.value:.3f} |" in index and "accuracy_vs_params.png" in index
    source = module.read_text()
    assert "import pickle" not in source and "torch.load" not in source
    assert f"trial #{best.number}" in source and f"{best.user_attrs['params']:,}" in source


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study_over_http(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    made = cli_in_process("run", "--workers", "1", "--trials", "1", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH)
    assert made.returncode == 0, made.stderr
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
        busy = cli_in_process("dashboard", "--storage", url, "--port", str(port))
        assert_user_error(busy, "choose another port")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_bad_search_inputs_are_one_line_exit_2(tiny_mnist, tmp_path):
    data = ("--data-dir", str(tiny_mnist), "--val-size", "100")
    db = f"sqlite:///{tmp_path / 's.db'}"
    # One check in a real process (the password must not show in anything it prints); the rest run
    # the same entry point in this one (cli_in_process says why).
    with_password = cli("run", "--storage", "postgresql://postgres:hunter2@127.0.0.1:1/none", *data)
    assert_user_error(with_password, "cannot open storage", "***")
    assert "hunter2" not in with_password.stdout + with_password.stderr
    assert_user_error(cli_in_process("run", "--trials", "0", "--storage", db, *data), "--trials must be at least 1")
    assert_user_error(cli_in_process("run", "--trials", "-2", "--storage", db, *data), "--trials must be at least 1")
    assert_user_error(cli_in_process("run", "--max-params", "50", "--storage", db, *data), "too small")
    assert_user_error(cli_in_process("run", "--timeout", "0", "--storage", db, *data), "--timeout must be a positive")
    assert_user_error(cli_in_process("run", "--seeds-per-trial", "0", "--storage", db, *data),
                      "--seeds-per-trial must be")
    assert_user_error(cli_in_process("run", "--storage", "mysql://x@y/z", *data), "unsupported storage")
    for in_memory in ("sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared&uri=true",
                      "sqlite:///file:m?mode=memory&uri=true"):
        assert_user_error(cli_in_process("run", "--storage", in_memory, *data), "in-memory SQLite storage",
                          "sqlite:///PATH.db")
    # Commands that only read never create a store; in an existing one they name its studies.
    assert_user_error(cli_in_process("worker", "--storage", db, "--study-name", "nope", *data), "no study store at")
    assert_user_error(cli_in_process("export", "--storage", db, "--study-name", "nope"), "no study store at")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(storage=other, study_name="kept")
    assert_user_error(cli_in_process("worker", "--storage", other, "--study-name", "nope", *data),
                      "no study named 'nope'", "studies there: kept")
    assert_user_error(cli_in_process("export", "--storage", other, "--study-name", "nope"), "no study named")
    assert_user_error(cli_in_process("evaluate", str(tmp_path / "nope.py"), "--weights", str(tmp_path / "w")),
                      "does not exist")
    stranger = tmp_path / "stranger.py"
    stranger.write_text("x = 1\n")
    assert_user_error(cli_in_process("evaluate", str(stranger), "--weights", str(stranger)), "has no load_weights()")
    assert_user_error(cli_in_process("evaluate", str(tmp_path), "--weights", str(stranger)), "is not a file")
    weights_first = tmp_path / "w.safetensors"
    weights_first.write_bytes(b"\0" * 16)
    assert_user_error(cli_in_process("evaluate", str(weights_first), "--weights", str(stranger)),
                      "is not a Python module")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    assert_user_error(cli_in_process("evaluate", str(broken), "--weights", str(stranger)), "RuntimeError: boom")
    # None of the bad inputs created a study or a trial.
    assert not (tmp_path / "s.db").exists() or optuna.get_all_study_summaries(db) == []


def test_local_workers_share_one_sqlite_study(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    # Without a thread count of the caller's, the machine's cores are split between the workers (one
    # thread per core each would oversubscribe them).
    result = cli("run", "--trials", "4", "--workers", "2", "--storage", url, "--data-dir", str(tiny_mnist), *SEARCH,
                 env={"OMP_NUM_THREADS": None})
    assert result.returncode == 0, result.stderr
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"starting 2 worker processes (2, 2 trials, {threads} CPU thread{'s' if threads > 1 else ''} each)" in result.stdout
    # The workers were given the URL with their job, not on a command line; the hint names it once.
    assert result.stdout.count("then mnist-search export --storage sqlite:///") == 1
    assert "this run: 4 trials in" in result.stdout  # the workers' trials count as this run's
    trials = optuna.load_study(study_name="mnist-search", storage=url).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.user_attrs["cpu_threads"] for t in trials} == {threads}
    assert "database is locked" not in result.stderr




def test_timeout_stops_starting_trials_in_every_worker(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'timeout.db'}"
    # A timeout shorter than one trial: each worker finishes the trial it started, then stops.
    result = cli("run", "--trials", "10", "--workers", "2", "--timeout", "0.0001", "--storage", url,
                 "--data-dir", str(tiny_mnist), *SEARCH)
    assert result.returncode == 0, result.stderr
    assert [t.state.name for t in optuna.load_study(study_name="mnist-search", storage=url).trials] == \
        ["COMPLETE", "COMPLETE"]


def test_a_killed_worker_is_reported_its_trial_failed_at_once_and_the_run_fails(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    run = subprocess.Popen([sys.executable, "-m", "mnist_search", "run", "--trials", "2", "--workers", "2",
                            "--epochs", "200", "--storage", url, "--data-dir", str(tiny_mnist), "--val-size", "100",
                            "--last-k", "1", "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_trial_trains(url, 0)
    wait_until_trial_trains(url, 1)
    study = optuna.load_study(study_name="mnist-search", storage=url)
    victim = study.trials[0]
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)  # as the OOM killer does
    deadline = time.time() + 60  # far less than the heartbeat grace (120 s): the parent acts at once
    while time.time() < deadline and study.trials[victim.number].state.name == "RUNNING":
        time.sleep(0.5)
    assert study.trials[victim.number].state.name == "FAIL"
    run.send_signal(signal.SIGINT)  # stop the other worker's long trial, which fails it cleanly
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode != 0
    assert f"holding trial #{victim.number} (now marked failed) was killed by SIGKILL" in stdout, stdout
    assert "Traceback" not in stderr
    assert all(t.state.name != "RUNNING" for t in optuna.load_study(study_name="mnist-search", storage=url).trials)


def test_killing_the_parent_stops_its_workers(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'orphans.db'}"
    run = subprocess.Popen([sys.executable, "-m", "mnist_search", "run", "--trials", "2", "--workers", "2",
                            "--epochs", "200", "--storage", url, "--data-dir", str(tiny_mnist), "--val-size", "100",
                            "--last-k", "1", "--seed", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_trial_trains(url, 0)
    wait_until_trial_trains(url, 1)
    workers = [int(t.user_attrs["worker"].rsplit(":", 1)[1])
               for t in optuna.load_study(study_name="mnist-search", storage=url).trials]
    run.kill()
    run.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.5)
    assert not any(alive(pid) for pid in workers)  # no orphan trains on
    # Each worker is interrupted (SIGINT), so it normally fails its own trial at once; one caught
    # in the middle of a storage write leaves it to the heartbeat, so that is not asserted here.
    assert not any(t.state.name == "COMPLETE" for t in optuna.load_study(study_name="mnist-search", storage=url).trials)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_takes_the_studys_settings_and_refuses_flags_that_contradict_them(tiny_mnist, tmp_path):
    from mnist_search.search.records import TrialRecord

    url = f"sqlite:///{tmp_path / 'study.db'}"
    search(url, tiny_mnist, trials=1, epochs=1, last_k=1)  # 1 epoch on 100 held-out images: not the defaults
    where = ("--storage", url, "--data-dir", str(tiny_mnist), "--artifacts", str(tmp_path / "weights"))
    joined = cli_in_process("worker", "--trials", "1", *where)
    assert joined.returncode == 0, joined.stderr
    study = optuna.load_study(study_name="mnist-search", storage=url)
    assert [len(TrialRecord.from_trial(t).epochs) for t in study.trials] == [1, 1]  # the study's epochs, as told
    assert_user_error(cli_in_process("worker", "--trials", "1", "--epochs", "3", "--val-size", "100", *where),
                      "--epochs 1 (the study's) against 3")
    restated = cli_in_process("worker", "--trials", "1", "--epochs", "1", "--val-size", "100", *where)
    assert restated.returncode == 0, restated.stderr  # restating the study's settings is fine
    assert len(optuna.load_study(study_name="mnist-search", storage=url).trials) == 3  # the refused one ran nothing
