"""Faults and bad input around the search: Ctrl-C, broken data, exports that cannot work."""

import signal
import subprocess
import sys
import time

import optuna
import pytest

from tests.helpers import assert_user_error, cli, cli_in_process
from tests.waiting import wait_until_trial_trains

TINY = ("--val-size", "100", "--last-k", "1", "--seed", "1")


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated"),
                                               (signal.SIGHUP, 143, "terminated")])
def test_ctrl_c_fails_the_running_trial_exits_130_and_the_study_resumes(signum, code, word, tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run = subprocess.Popen(
        [sys.executable, "-m", "mnist_search", "run", "--trials", "3", "--epochs", "200", "--storage", url,
         "--data-dir", str(tiny_mnist), "--workers", "1", *TINY],  # one process: the one the signal reaches
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_until_trial_trains(url, 0)
    run.send_signal(signum)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == code, stderr
    assert word in stderr and "Traceback" not in stderr
    # The summary says why the run stopped.
    how = "Ctrl-C" if signum == signal.SIGINT else "a signal to stop"
    assert "this run: 0 trials in" in stdout and f"interrupted by {how} after 0 of 3" in stdout
    states = [t.state.name for t in optuna.load_study(study_name="mnist-search", storage=url).trials]
    assert states == ["FAIL"]

    # Shorter trials score differently from the study's 200-epoch ones: the study refuses them unless asked.
    # (The signal needs a real process; resuming runs the same entry point in this one.)
    refused = cli_in_process("run", "--trials", "1", "--epochs", "1", "--storage", url, "--data-dir", str(tiny_mnist),
                             *TINY)
    assert_user_error(refused, "epochs 200 -> 1", "--allow-mixed")
    resumed = cli_in_process("run", "--trials", "1", "--epochs", "1", "--allow-mixed", "--storage", url, "--data-dir",
                             str(tiny_mnist), *TINY)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 trial so far" in resumed.stdout
    states = [t.state.name for t in optuna.load_study(study_name="mnist-search", storage=url).trials]
    assert states == ["FAIL", "COMPLETE"]


def test_more_bad_inputs_write_nothing(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    # A study with only a failed-to-start history: export has nothing to export.
    optuna.create_study(study_name="empty", storage=url, direction="maximize")
    # One check in a real process; the rest run the same entry point in this one.
    assert_user_error(cli("export", "--storage", url, "--study-name", "empty"), "no completed trial")
    assert_user_error(cli_in_process("run", "--storage", "sqlite:///" + str(tmp_path / "no" / "dir" / "s.db"),
                                     "--data-dir", str(tiny_mnist), *TINY), "does not exist")
    assert_user_error(cli_in_process("run", "--storage", "not a url", "--data-dir", str(tiny_mnist), *TINY),
                      "malformed storage URL")
    assert_user_error(cli_in_process("run", "--epochs", "5", "--last-k", "9", "--storage", url, "--data-dir",
                                     str(tiny_mnist), "--val-size", "100"), "--last-k")
    images = tiny_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    assert_user_error(cli_in_process("run", "--trials", "1", "--storage", url, "--data-dir", str(tiny_mnist),
                                     *TINY), "truncated or corrupted")
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["empty"]
    assert optuna.load_study(study_name="empty", storage=url).trials == []


def test_a_worker_killed_mid_trial_loses_nothing_and_its_trial_is_retried(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    grace = ("--heartbeat-grace", "4")
    # Only the victim needs a process of its own.
    first = cli_in_process("run", "--trials", "1", "--epochs", "1", "--storage", url, "--data-dir", str(tiny_mnist),
                           *grace, *TINY)
    assert first.returncode == 0, first.stderr
    victim = subprocess.Popen(
        [sys.executable, "-m", "mnist_search", "worker", "--trials", "1", "--epochs", "200", "--allow-mixed",
         "--storage", url, "--data-dir", str(tiny_mnist), *grace, *TINY],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_until_trial_trains(url, 1)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    time.sleep(6)  # past the grace period: the victim's trial is now stale

    survivor = cli_in_process("worker", "--trials", "1", "--epochs", "1", "--storage", url, "--data-dir",
                              str(tiny_mnist), *grace, *TINY)
    assert survivor.returncode == 0, survivor.stderr
    trials = optuna.load_study(study_name="mnist-search", storage=url).trials
    assert trials[0].state.name == "COMPLETE"  # the finished trial survived
    assert trials[1].state.name == "FAIL"  # the killed one was failed once stale ...
    retries = [t for t in trials[2:] if t.system_attrs.get("failed_trial") == trials[1].number]
    assert retries and retries[0].state.name == "COMPLETE"  # ... and retried with the same parameters
    assert retries[0].params == trials[1].params

