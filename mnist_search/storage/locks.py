"""Locks that several processes on a store agree on, released when their holder dies.

SQLite: ``flock`` on a file the lock is named by (the directory holding the store for its
creation, so that no lock file is left beside it). PostgreSQL: a session advisory lock on a
connection of its own, keyed by a hash of the lock's name, scoped to the database. Neither
outlives its process, so a crashed holder never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool


class Busy(Exception):
    """Another process holds the lock (only when not waiting for it)."""


def advisory_key(name: str) -> int:
    """A signed 64-bit key for ``name``, the argument PostgreSQL's advisory locks take."""
    return int.from_bytes(hashlib.sha256(f"mnist-search:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def postgres_lock(parsed: URL, name: str, wait: bool = True, engine_kwargs: dict | None = None) -> Iterator[None]:
    """Hold PostgreSQL advisory lock ``name`` in ``parsed``'s database; Busy if not ``wait`` and taken."""
    kwargs = {k: v for k, v in (engine_kwargs or {}).items() if k != "pool_pre_ping"}
    engine = create_engine(parsed, poolclass=NullPool, **kwargs)
    try:
        with engine.connect() as connection:
            key = advisory_key(name)
            if wait:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            elif not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
                raise Busy(name)
            connection.commit()
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a dead connection has released it already
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
    finally:
        engine.dispose()


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (a directory or an existing file); Busy if not ``wait`` and taken."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(str(path)) from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def lock_file(path: Path) -> Iterator[None]:
    """Hold ``path`` (created, and removed again on release) under an exclusive ``flock``; Busy when
    another process holds it. Nothing is left behind but by a holder that was killed."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy(str(path)) from None
        # The previous holder removes the file as it lets go: a lock on a file no longer at
        # ``path`` excludes no one, so take the one that is.
        try:
            if os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def held_lock(storage, name: str) -> contextlib.AbstractContextManager:
    """Lock ``name`` among all processes using ``storage`` (an Optuna storage): a file beside a
    SQLite store, an advisory lock in a PostgreSQL database; Busy when another process holds it.
    A storage with no database behind it (in memory) is this process's alone: no lock."""
    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    if engine is None:
        return contextlib.nullcontext()
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return postgres_lock(url, name, wait=False)
    database = Path(url.database).resolve()
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return lock_file(database.with_name(f".{database.name}.{digest}.lock"))
