"""A private PostgreSQL server (initdb in a temporary directory, free port) restarted mid-run.
PostgreSQL's alone: a SQLite file has no server to restart (its transient fault, a lock, is in
test_transient_faults.py)."""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from tests.services import absent, pg_server_binary
from tests.waiting import wait_until_trial_trains

TINY = ("--val-size", "100", "--last-k", "1", "--seed", "2", "--workers", "1")


def as_postgres(*cmd: str) -> list[str]:
    """initdb refuses to run as root: run the server as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_postgres():
    initdb, pg_ctl = pg_server_binary("initdb"), pg_server_binary("pg_ctl")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            absent("initdb refuses to run as root and there is no user postgres to run it as")
        if shutil.which("runuser") is None:
            absent("initdb refuses to run as root and runuser (util-linux) is not installed to run it as postgres")
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="mnist-search-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()

    def ctl(*a):
        return subprocess.run(
            as_postgres(pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"),
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", *a),
            check=True, capture_output=True, timeout=120)

    try:
        subprocess.run(as_postgres(initdb, "-D", str(data), "-A", "trust", "-U", "postgres"),
                       check=True, capture_output=True, timeout=120)
        ctl("start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", ctl
    finally:
        subprocess.run(as_postgres(pg_ctl, "-D", str(data), "-m", "immediate", "stop"), capture_output=True,
                       timeout=120)
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
