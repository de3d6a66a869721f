"""SQLite transactions that take the write lock when they begin (BEGIN IMMEDIATE).

Python's sqlite3 driver opens a transaction only at the first write, so a read-then-write
transaction is not atomic. Optuna hands out a queued (warm-start or retried) trial exactly
that way: it reads that the trial is WAITING, then marks it RUNNING. Two threads of
``run --jobs K`` (or two workers) can both read WAITING and both train the same trial; the
second to finish then crashes the run with "Cannot tell a COMPLETE trial" (seen on the
H100 with 8 jobs). PostgreSQL is safe: there Optuna reads the row FOR UPDATE.

Beginning every transaction with BEGIN IMMEDIATE makes SQLite serialise them whole: the
second thread waits (the driver's busy timeout), then reads RUNNING and takes another trial.
This is SQLAlchemy's documented recipe for real transactions on pysqlite. Read-only
transactions (the dashboard, heartbeats) take the lock too; bench/sqlite_storage.py found
no measurable cost with 8 threads.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Engine


def begin_immediate(engine: Engine) -> None:
    """Make every transaction on ``engine`` (a pysqlite engine) begin with BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _driver_opens_no_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below opens them

    @event.listens_for(engine, "begin")
    def _take_the_write_lock(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # the connections Optuna opened while creating the schema predate the hook
