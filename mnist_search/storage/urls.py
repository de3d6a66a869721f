"""Storage URLs: which store a study lives in, which driver reaches it, and how to show the URL safely."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mnist_search.defaults import DEFAULT_STORAGE, STORAGE_ENV
from mnist_search.errors import StorageError

SCHEMES = ("sqlite", "postgresql")
USE = "use sqlite:///PATH.db or postgresql://USER@HOST:PORT/DB"
ENCODE_PASSWORD = "percent-encode the password, e.g. with urllib.parse.quote(password, safe='')"
POSTGRES_DRIVERS = "use postgresql:// or postgresql+psycopg:// (psycopg 3, installed with mnist-search)"


def resolve_storage_url(url: str | None) -> str:
    """``--storage`` > $MNIST_SEARCH_STORAGE > sqlite:///mnist-search.db (in the working directory)."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def credentials(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, user, password as written, what follows the '@'), or None when the URL has no password.

    The password ends at the LAST '@': a password with an unencoded '@' ("s3cr@et") would
    otherwise show its tail as the host. A '/' before the ':' means a path, not a user.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return None
    userinfo, _, after = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not colon or "/" in user:
        return None
    return scheme, user, password, after


def mask_password(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or log."""
    found = credentials(url)
    if not found:  # then SQLAlchemy finds no password either: it too needs USER:PASSWORD@
        return url
    scheme, user, _, after = found
    return f"{scheme}://{user}:***@{after}"


def hide_password(text: str, url: str) -> str:
    """``text`` (say, a driver's error message) with the URL's password replaced by ***, in every spelling."""
    found = credentials(url)
    secrets = {found[2], unquote(found[2])} if found else set()
    try:
        secrets.add(make_url(url).password or "")
    except (ArgumentError, ValueError):
        pass
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def checked_url(url: str) -> URL:
    """The parsed storage URL, with the driver to use; StorageError if it names no store this tool can use."""
    shown = mask_password(url)
    found = credentials(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # the message can quote part of the password: not chained
        hint = f"; if the password holds @, : or /, {ENCODE_PASSWORD}" if found else ""
        raise StorageError(f"malformed storage URL {shown}; {USE}{hint}") from None
    if found and parsed.password != unquote(found[2]):  # SQLAlchemy ends the password at the FIRST '@'
        raise StorageError(f"the password in storage URL {shown} holds an '@' that is not percent-encoded, so "
                           f"the URL reads as another host; {ENCODE_PASSWORD}")
    backend = parsed.get_backend_name()
    if backend not in SCHEMES:
        raise StorageError(f"unsupported storage {backend!r} in {shown}; {USE}")
    if backend == "sqlite":
        if parsed.get_driver_name() != "pysqlite":
            raise StorageError(f"unsupported SQLite driver {parsed.get_driver_name()!r} in {shown}; {USE}")
        if is_in_memory(parsed):
            # Each thread (trials, heartbeats) would get its own empty database, and all of it is lost on exit.
            raise StorageError("an in-memory SQLite storage keeps no trials; use sqlite:///PATH.db")
        return parsed
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    check_postgres_driver(parsed, shown)
    return parsed


def check_postgres_driver(parsed: URL, shown: str) -> None:
    """StorageError unless the URL's PostgreSQL driver is known to SQLAlchemy, synchronous and installed."""
    driver = parsed.drivername.partition("+")[2]
    try:
        dialect = parsed.get_dialect()
    except ArgumentError:
        raise StorageError(f"unknown PostgreSQL driver {driver!r} in {shown}; {POSTGRES_DRIVERS}") from None
    if dialect.is_async:
        raise StorageError(f"the PostgreSQL driver {driver!r} in {shown} is asynchronous, which Optuna cannot use; "
                           f"{POSTGRES_DRIVERS}")
    try:
        dialect.import_dbapi()
    except ImportError:
        raise StorageError(f"the PostgreSQL driver {driver!r} in {shown} is not installed; {POSTGRES_DRIVERS}") from None


def is_in_memory(parsed: URL) -> bool:
    """sqlite://, sqlite:///:memory: and SQLite's URI forms (file::memory:, mode=memory)."""
    database = parsed.database or ""
    return database in ("", ":memory:") or database.startswith("file::memory:") or parsed.query.get("mode") == "memory"


def default_artifact_dir(url: str) -> Path:
    """A directory beside a SQLite file (``NAME-artifacts``), else ./mnist-search-artifacts."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return Path("mnist-search-artifacts")
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        db = Path(parsed.database)  # beside the file SQLite opens, which has no ~ expansion
        return db.with_name(db.stem + "-artifacts")
    return Path("mnist-search-artifacts")
