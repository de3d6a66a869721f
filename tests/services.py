"""The servers and tools some tests need (PostgreSQL, its server binaries, linters, a browser):
found, or the test skips and says what is missing.

A developer without PostgreSQL still runs everything else. CI has every required service, so
there MNIST_SEARCH_REQUIRE_SERVICES=1 turns a missing one into a failure: a server that went
away cannot pass as a green run of skipped checks. Only absence skips: a server that answers
and then misbehaves fails its tests as before."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

PG_ENV = "MNIST_SEARCH_TEST_PG"
REQUIRE_ENV = "MNIST_SEARCH_REQUIRE_SERVICES"
PG_ADMIN_URL = os.environ.get(PG_ENV, "postgresql://postgres@127.0.0.1:5432/test")
# Long enough for a server on another machine; a closed port answers at once anyway.
CONNECT_TIMEOUT_S = 3
# Debian keeps the server binaries off PATH, in one directory per major version.
PG_BIN_DIRS = "/usr/lib/postgresql/*/bin"


def absent(reason: str) -> NoReturn:
    """Skip the running test because ``reason`` (a service is missing); fail it where services are required."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: this run must have it)", pytrace=False)
    pytest.skip(reason)


def shown(url: str) -> str:
    from mnist_search.storage.urls import mask_password

    return mask_password(url)


def postgres_error(url: str = PG_ADMIN_URL) -> str | None:
    """Why the PostgreSQL server at ``url`` cannot be reached (the driver's first line), or None."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as admin:
            admin.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def unreachable(error: str) -> str:
    """Why tests of the PostgreSQL test server do not run, given the probe's ``error``."""
    return f"PostgreSQL not reachable at {shown(PG_ADMIN_URL)} (set {PG_ENV} to another server): {error}"


def pg_admin(sql: str) -> None:
    """Run ``sql`` on the test server's admin database (outside a transaction, as CREATE DATABASE needs)."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as admin:
        admin.execute(sql)


def database_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


@contextlib.contextmanager
def fresh_database(prefix: str = "mnist_search_test") -> Iterator[tuple[str, str]]:
    """(URL, name) of a new, empty database on the test server, dropped afterwards (connections and all)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name), name
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def tool(name: str, install: str) -> str:
    """The path of command ``name``: the virtual environment's own first (even when it is not
    activated), then PATH; the test skips when neither has it, saying ``install``."""
    beside_python = Path(sys.executable).parent / name
    path = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if path is None:
        absent(f"{name} is not installed: {install}")
    return path


def pg_server_binary(name: str) -> str:
    """A PostgreSQL server binary (initdb, pg_ctl): the newest Debian version's, else PATH's."""
    found = sorted(glob.glob(f"{PG_BIN_DIRS}/{name}")) or [shutil.which(name)]
    if not found[-1]:
        absent(f"{name} not found in {PG_BIN_DIRS} or on PATH: install the PostgreSQL server binaries "
               "(apt install postgresql)")
    return found[-1]
