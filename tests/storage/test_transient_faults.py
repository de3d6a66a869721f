"""A fault that heals is retried until it does; one that outlasts the retry window is one line.
A real lock on a real SQLite file, held by another connection."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import optuna
import pytest
from sqlalchemy import event

from mnist_search.errors import StorageError
from mnist_search.storage import open_storage, resilient


def locked_study(tmp_path):
    """A study whose storage gives up on a lock at once (the driver waits 60 s by default), so
    that the lock reaches the retry loop, and a connection ready to take the file's lock."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path / "study.db"
    storage = open_storage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage, study_name="locked")

    @event.listens_for(storage.engine, "connect")
    def no_busy_wait(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA busy_timeout = 0")

    storage.engine.dispose()
    return storage, study, sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def test_a_lock_that_is_let_go_is_waited_out(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(resilient, "RETRY_WINDOW_S", 30.0)
    storage, study, holder = locked_study(tmp_path)
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(1.5, holder.execute, ("ROLLBACK",)).start()
    with caplog.at_level(logging.WARNING, logger=resilient.__name__):
        study.set_user_attr("after", "the lock")
    assert "database is locked" not in caplog.text  # the warning names the error type only
    assert "failed (OperationalError); retrying" in caplog.text
    assert study.user_attrs == {"after": "the lock"}
    storage.engine.dispose()


def test_a_lock_held_past_the_retry_window_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(resilient, "RETRY_WINDOW_S", 2.0)
    storage, study, holder = locked_study(tmp_path)
    holder.execute("BEGIN EXCLUSIVE")
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"stayed unavailable for 2 s \(database is locked\)") as caught:
        study.set_user_attr("never", "written")
    assert 1.0 < time.monotonic() - start < 10
    assert caught.value.__cause__ is None
    holder.execute("ROLLBACK")
    storage.engine.dispose()
