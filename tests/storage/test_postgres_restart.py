"""A private PostgreSQL server (initdb in a temporary directory, free port) restarted mid-run."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from tests.waiting import wait_until_trial_trains

TINY = ("--val-size", "100", "--last-k", "1", "--seed", "2", "--workers", "1")


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        pytest.fail(f"{name} not found: install the PostgreSQL server binaries")
    return found[-1]


def as_postgres(*cmd: str) -> list[str]:
    """initdb refuses to run as root: run the server as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_postgres():
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="mnist-search-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    subprocess.run(as_postgres(pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"),
                   check=True, capture_output=True)
    port = free_port()
    def ctl(*a):
        return subprocess.run(
            as_postgres(pg_bin("pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", *a),
            check=True, capture_output=True)
    ctl("start")
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres", ctl
    subprocess.run(as_postgres(pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"), capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_a_postgres_restart_mid_run_is_survived(private_postgres, tiny_mnist, tmp_path):
    url, ctl = private_postgres
    run = subprocess.Popen(
        [sys.executable, "-m", "mnist_search", "run", "--trials", "3", "--epochs", "4", "--storage", url,
         "--artifacts", str(tmp_path / "artifacts"), "--data-dir", str(tiny_mnist), *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_until_trial_trains(url, 0)
    ctl("stop", "-m", "fast")  # drops every connection of the running worker
    time.sleep(3)
    ctl("start")
    stdout, stderr = run.communicate(timeout=240)
    assert run.returncode == 0, stderr
    assert "Traceback" not in stderr
    states = [t.state.name for t in optuna.load_study(study_name="mnist-search", storage=url).trials]
    assert states == ["COMPLETE"] * 3, stdout
