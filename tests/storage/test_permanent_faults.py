"""A database fault that cannot heal is one line at once, not 90 s of retries and a traceback;
one that heals (a lock) is still retried. Real SQLite files, the real PostgreSQL server.

Most faults here are made the one way a backend allows (a file mode for SQLite, a database
setting or a role for PostgreSQL; only PostgreSQL enforces column lengths) and each backend's
message names its own fix, so most tests are a backend's own; a limit both share runs on both."""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import re
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import psycopg
import pytest
from optuna.storages._cached_storage import _CachedStorage
from sqlalchemy import create_engine, event
from sqlalchemy.exc import OperationalError

from mnist_search.errors import StorageError
from mnist_search.storage import MAX_STUDY_NAME_LENGTH, check_study_name, open_storage
from mnist_search.storage.faults import database_error, is_transient
from mnist_search.storage.resilient import RETRY_WINDOW_S, ResilientRDBStorage
from tests.services import pg_admin
from tests.storage.conftest import others_cannot_read, unprivileged

AT_ONCE_S = 2.0  # nothing was retried: ours waits up to 90 s, Optuna's own up to 5 x 2 s
assert RETRY_WINDOW_S > 10 * AT_ONCE_S


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # heartbeats outside Study.optimize: fine for ask()
        yield


def fails_at_once(call, match: str) -> str:
    start = time.monotonic()
    with pytest.raises(StorageError, match=match) as caught:
        call()
    assert time.monotonic() - start < AT_ONCE_S
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one line, no traceback chain
    return str(caught.value)


def test_a_read_only_sqlite_file_reads_and_refuses_writes_at_once(shared_dir):
    # Opening a store reads Optuna's schema scripts from disk, so the child must be able to reach them.
    hidden = others_cannot_read(Path(optuna.__file__).parent / "storages" / "_rdb" / "alembic")
    if os.geteuid() == 0 and hidden:
        pytest.skip(f"user nobody cannot read the installed Optuna: {hidden} is private to its owner "
                    "(a checkout under `mktemp -d`?); run from a directory others may enter")
    path = shared_dir / "study.db"
    storage = open_storage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage, study_name="kept")
    study.tell(study.ask(), 1.0)
    with pytest.raises(StorageError):  # the same code paths once here, so that the child imports nothing
        check_study_name("")
    storage.engine.dispose()
    path.chmod(0o444)
    shared_dir.chmod(0o555)

    def read_then_write() -> str:
        reader = open_storage(f"sqlite:///{path}", create=False)
        read = len(optuna.load_study(storage=reader, study_name="kept").trials)
        try:
            fails_at_once(lambda: optuna.create_study(storage=reader, study_name="new"),
                          "the store is read-only .*attempt to write a readonly database.*; make the file and its "
                          "directory writable")
        finally:
            reader.engine.dispose()
        return f"read {read} trial, write refused"

    assert unprivileged(read_then_write) == "read 1 trial, write refused"


def test_a_full_disk_is_one_line_at_once(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="full")

    @event.listens_for(storage.engine, "connect")
    def no_room_to_grow(dbapi_connection, _record):  # SQLite's own "disk is full", without filling a disk
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    storage.engine.dispose()
    fails_at_once(lambda: study.set_user_attr("history", "x" * 100_000),
                  r"the disk is full \(database or disk is full\); free some space and run again")
    storage.engine.dispose()


def test_a_read_only_postgres_database_is_one_line_at_once(postgres_db):
    url, name = postgres_db
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="kept").ask()
    storage.engine.dispose()
    pg_admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')

    reader = open_storage(url, create=False)
    assert len(optuna.load_study(storage=reader, study_name="kept").trials) == 1
    fails_at_once(lambda: optuna.create_study(storage=reader, study_name="new"),
                  "the database is read-only .*cannot execute INSERT in a read-only transaction.*; use a writable")
    fails_at_once(lambda: optuna.load_study(storage=reader, study_name="kept").ask(), "the database is read-only")
    reader.engine.dispose()


def test_an_unpickled_storage_still_names_a_permanent_fault_at_once(postgres_db):
    url, name = postgres_db
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="kept")
    storage.engine.dispose()
    pg_admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    copy = pickle.loads(pickle.dumps(storage))  # a new engine, which needs the same hooks
    fails_at_once(lambda: optuna.load_study(storage=copy, study_name="kept").ask(), "the database is read-only")
    copy.engine.dispose()


def test_a_read_only_empty_postgres_database_is_refused_when_opened(postgres_db):
    url, name = postgres_db
    pg_admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    fails_at_once(lambda: open_storage(url), "cannot open storage postgresql://.*: the database is read-only")


def test_a_postgres_user_without_write_rights_is_one_line_at_once(postgres_db):
    url, name = postgres_db
    optuna.create_study(storage=open_storage(url), study_name="kept")
    role = f"reader_{name[-10:]}"
    pg_admin(f'CREATE ROLE "{role}" LOGIN')
    try:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        reader = open_storage(url.replace("postgres@", f"{role}@"))
        try:
            fails_at_once(lambda: optuna.create_study(storage=reader, study_name="new"),
                          "the database user may not do this .*permission denied")
        finally:
            reader.engine.dispose()
    finally:
        with psycopg.connect(url, autocommit=True) as db:  # the role's grants live in the test database
            db.execute(f'DROP OWNED BY "{role}"')
        pg_admin(f'DROP ROLE IF EXISTS "{role}"')


def test_a_study_name_longer_than_the_store_allows_is_one_line(storage_url):
    storage = open_storage(storage_url)
    optuna.create_study(storage=storage, study_name="n" * MAX_STUDY_NAME_LENGTH)
    fails_at_once(lambda: optuna.create_study(storage=storage, study_name="n" * (MAX_STUDY_NAME_LENGTH + 1)),
                  f"the study name is {MAX_STUDY_NAME_LENGTH + 1} characters long; a study store allows at most "
                  f"{MAX_STUDY_NAME_LENGTH}")
    assert len(storage.get_all_studies()) == 1
    storage.engine.dispose()


@pytest.mark.parametrize("name, problem", [("", "empty"), ("   ", "empty"), ("a\x00b", "NUL character")])
def test_study_names_no_store_can_hold_are_refused(name, problem):
    with pytest.raises(StorageError, match=problem):
        check_study_name(name)


def test_any_value_longer_than_postgres_allows_is_one_line(postgres_db):
    url, _ = postgres_db
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="long-key")
    fails_at_once(lambda: study.set_user_attr("k" * 600, 1),
                  r"a value is longer than the store allows \(value too long for type character varying\(512\)\)")
    storage.engine.dispose()


def test_a_locked_sqlite_database_counts_as_transient_and_a_read_only_one_does_not(tmp_path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    with pytest.raises(OperationalError, match="database is locked") as locked, engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (a)")
    holder.execute("ROLLBACK")
    assert is_transient(database_error(locked.value))

    read_only = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(OperationalError, match="readonly database") as refused, read_only.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (a)")
    assert not is_transient(database_error(refused.value))
    engine.dispose()
    read_only.dispose()


def test_every_storage_call_a_study_makes_goes_through_the_retry(tmp_path):
    # A Study wraps the storage in Optuna's _CachedStorage, which calls private methods of its
    # backend (creating trials, setting parameters); each must be classified and retried too.
    called = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_CachedStorage)))
    no_database = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
    best_effort = {"record_heartbeat"}
    assert len(called) > 10
    unguarded = [name for name in sorted(called - no_database - best_effort)
                 if not hasattr(getattr(ResilientRDBStorage, name), "__wrapped__")]
    assert unguarded == []


def test_a_heartbeat_that_cannot_be_written_is_a_warning_not_a_thread_traceback(postgres_db, caplog):
    url, name = postgres_db
    storage = open_storage(url)
    trial_id = optuna.create_study(storage=storage, study_name="beats").ask()._trial_id
    storage.engine.dispose()
    pg_admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    with caplog.at_level(logging.WARNING, logger="mnist_search.storage.resilient"):
        storage.record_heartbeat(trial_id)
    assert f"heartbeat of trial {trial_id} not recorded" in caplog.text and "read-only" in caplog.text
    storage.engine.dispose()
