"""Raw access to a test's store, a SQLite file or a PostgreSQL database alike: the tables it
holds, and SQL run past Optuna (to plant values Optuna would never write)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path:
    return Path(make_url(url).database)


def tables(url: str) -> list[str]:
    """The tables in the store (PostgreSQL: its public schema); none for a SQLite file not created."""
    if is_sqlite(url):
        if not sqlite_path(url).exists():
            return []
        with sqlite3.connect(sqlite_path(url)) as db:
            return sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    import psycopg

    with psycopg.connect(url) as db:
        return sorted(row[0] for row in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))


def execute(url: str, *statements: str) -> None:
    """Run ``statements`` on the store in one transaction."""
    if is_sqlite(url):
        db = sqlite3.connect(sqlite_path(url))
        try:
            with db:
                for statement in statements:
                    db.execute(statement)
        finally:
            db.close()
        return
    import psycopg

    with psycopg.connect(url) as db:  # commits on leaving
        for statement in statements:
            db.execute(statement)
