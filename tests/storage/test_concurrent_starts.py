"""Processes that first open a new store at the same moment all succeed (real processes, real
SQLite files, fresh databases on the real PostgreSQL server), and two confirmations of one trial
never silently lose a result."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest

from tests import stores
from tests.helpers import assert_user_error, cli
from tests.services import absent, fresh_database, unreachable

PROCESSES = 3
ROUNDS = 3
GAP_S = 1.0
# Each process imports once, says so, and is told when to start: then it opens store i at
# start + i * GAP_S, all processes at the same moment.
RACE = textwrap.dedent("""
    import sys, time
    from mnist_search.errors import UserError
    from mnist_search.search.runner import create_or_resume
    from mnist_search.search.settings import SearchSettings
    from mnist_search.storage import open_storage

    print("ready", flush=True)
    start, gap, urls = float(sys.stdin.readline()), float(sys.argv[1]), sys.argv[2:]
    failures = 0
    for i, url in enumerate(urls):
        time.sleep(max(0.0, start + i * gap - time.time()))
        try:
            storage = open_storage(url)
            create_or_resume(storage, "race", SearchSettings(epochs=2, last_k=1))
            storage.engine.dispose()
        except Exception as exc:
            failures += 1
            print(f"store {i}: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
    sys.exit(1 if failures else 0)
""")


def race(urls: list[str]) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(GAP_S), *urls], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(PROCESSES)]
    for proc in procs:
        assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=60)[1]
    start = time.time() + 0.3
    for proc in procs:
        proc.stdin.write(f"{start}\n")
        proc.stdin.close()
    outputs = [(p.stdout.read(), p.stderr.read(), p.wait(timeout=120)) for p in procs]
    failed = [err for _, err, code in outputs if code != 0]
    assert not failed, "\n".join(failed)
    for url in urls:
        study = optuna.load_study(study_name="race", storage=url)
        assert study.user_attrs["settings"]["epochs"] == 2


@pytest.fixture
def new_stores(tmp_path, postgres_probe):
    """URLs of stores not created yet: ROUNDS SQLite files, ROUNDS fresh PostgreSQL databases
    (none when the test server does not answer), and why there are none, or None."""
    files = [f"sqlite:///{tmp_path / f'store{i}.db'}" for i in range(ROUNDS)]
    if postgres_probe is not None:
        yield files, [], unreachable(postgres_probe)
        return
    with contextlib.ExitStack() as databases:
        yield files, [databases.enter_context(fresh_database("mnist_search_race"))[0] for _ in range(ROUNDS)], None


def test_processes_creating_a_new_store_at_once_all_succeed(tmp_path, new_stores):
    """SQLite files and fresh PostgreSQL databases, in one set of processes: each imports once,
    most of the test's time. Without the server the SQLite half still runs, and the test then skips."""
    files, databases, missing = new_stores
    race(files + databases)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"store{i}.db" for i in range(ROUNDS)]  # no lock files
    if missing:
        absent(f"only the SQLite stores raced: {missing}")


def test_a_second_confirmation_of_a_trial_is_refused_while_the_first_runs(tmp_path, tiny_mnist):
    from mnist_search.search import records
    from mnist_search.search.confirm import _claim
    from mnist_search.trainer import TrainConfig
    from tests.search.test_export_safety import make_study

    study, artifacts = make_study(tmp_path, **{records.CONFIG: TrainConfig(epochs=500, batch_size=32).to_dict()})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = ("confirm", "--storage", url, "--trial", "0", "--seeds", "1", "--last-k", "1", "--data-dir",
            str(tiny_mnist), "--artifacts", str(artifacts), "--device", "cpu")
    first = subprocess.Popen([sys.executable, "-m", "mnist_search", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert "confirming trial #0" in first.stdout.readline()  # it holds the trial, and trains
        second = cli(*args)
        assert_user_error(second, "trial #0 of study 'mnist-search' is being confirmed by another process")
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)  # the lock dies with its holder, even unannounced
        first.wait(timeout=30)
    with _claim(study, 0):  # free again
        pass
    assert not list(tmp_path.glob(".study.db.*.lock"))
    assert records.confirm_key(0) not in optuna.load_study(study_name="mnist-search", storage=url).user_attrs


def test_a_confirmation_lock_is_one_holders_and_dies_with_its_connection(storage_url):
    from mnist_search.storage import open_storage
    from mnist_search.storage.locks import Busy, held_lock

    first, second = open_storage(storage_url), open_storage(storage_url)
    with held_lock(first, "confirm:s:3"):
        with pytest.raises(Busy):
            held_lock(second, "confirm:s:3").__enter__()
        with held_lock(second, "confirm:s:4"):  # another trial is another lock
            pass
    with held_lock(second, "confirm:s:3"):
        pass
    if stores.is_sqlite(storage_url):  # a released lock leaves no file beside the store
        assert sorted(p.name for p in stores.sqlite_path(storage_url).parent.iterdir()) == ["study.db"]
    first.engine.dispose()
    second.engine.dispose()
