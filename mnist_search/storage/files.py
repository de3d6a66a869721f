"""The files a storage URL's data lives in: what no output may ever replace."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def store_files(url: str) -> tuple[Path, ...]:
    """A SQLite store's database file and its journals; nothing for a server database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return ()
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return ()
    database = Path(parsed.database)  # as SQLite opens it: no ~ expansion
    return (database, *(database.with_name(database.name + suffix) for suffix in ("-journal", "-wal", "-shm")))
