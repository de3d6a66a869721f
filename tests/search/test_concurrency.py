"""Many worker processes on one study: every trial counted once, no locking error reaches the user."""

import subprocess
import sys

import optuna
import pytest

TRIALS_EACH = 2


def start_worker(url: str, study: str, data_dir, artifacts, seed: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_search", "worker", "--trials", str(TRIALS_EACH), "--storage", url,
         "--study-name", study, "--epochs", "1", "--last-k", "1", "--val-size", "100", "--seed", str(seed),
         "--artifacts", str(artifacts), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("backend, workers", [("sqlite", 4), ("postgresql", 8)])
def test_parallel_workers_finish_exactly_their_trials(backend, workers, tiny_mnist, tmp_path, request):
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 's.db'}"
    study = f"parallel-{backend}"
    optuna.create_study(study_name=study, storage=url, direction="maximize")
    procs = [start_worker(url, study, tiny_mnist, tmp_path / "artifacts", seed) for seed in range(workers)]
    outputs = [p.communicate(timeout=280) for p in procs]
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr
        assert "locked" not in stderr and "serializ" not in stderr.lower() and "Traceback" not in stderr
    trials = optuna.load_study(study_name=study, storage=url).trials
    assert len(trials) == workers * TRIALS_EACH
    assert sorted(t.number for t in trials) == list(range(workers * TRIALS_EACH))
    assert all(t.state.is_finished() for t in trials)


def test_local_workers_never_get_the_password_on_their_command_line(tiny_mnist, tmp_path, postgres_url):
    secret_url = postgres_url.replace("postgres@", "postgres:not-a-real-secret@")  # trust auth ignores it
    study = "workers-argv"
    optuna.create_study(study_name=study, storage=postgres_url, direction="maximize")
    result = subprocess.run(
        [sys.executable, "-m", "mnist_search", "run", "--trials", "2", "--workers", "2", "--storage", secret_url,
         "--study-name", study, "--epochs", "1", "--last-k", "1", "--val-size", "100",
         "--artifacts", str(tmp_path / "a"), "--data-dir", str(tiny_mnist)],
        capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stderr
    assert "not-a-real-secret" not in result.stdout + result.stderr
    assert len(optuna.load_study(study_name=study, storage=postgres_url).trials) == 2
