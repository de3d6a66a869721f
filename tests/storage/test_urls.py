"""Storage URLs: passwords never shown (even unencoded ones), drivers refused by name."""

from __future__ import annotations

import importlib.util
from urllib.parse import quote

import optuna
import pytest

from mnist_search.errors import StorageError
from mnist_search.storage import mask_password, open_storage
from mnist_search.storage.urls import hide_password

# Passwords with characters a URL reserves, as a user pastes them; the pieces a parser that
# stops at the first '@' would show as host, port or database.
UNENCODED = [
    ("s3cr@et:4321/xyz", ["s3cr", "et:4321", "xyz"]),
    ("p@ss:w/rd", ["p@ss", "ss:w", "w/rd"]),
]


@pytest.mark.parametrize("password, pieces", UNENCODED)
def test_an_unencoded_password_is_masked_whole_and_refused_with_the_fix(password, pieces):
    url = f"postgresql://postgres:{password}@127.0.0.1:5432/db"
    assert mask_password(url) == "postgresql://postgres:***@127.0.0.1:5432/db"
    with pytest.raises(StorageError) as caught:
        open_storage(url)
    message = str(caught.value)
    assert "urllib.parse.quote(password, safe='')" in message and "postgresql://postgres:***@127.0.0.1" in message
    assert caught.value.__cause__ is None  # no chained traceback quoting the URL
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    for piece in pieces:
        assert piece not in message


# A password and a driver name are parts of a server's URL only: these run on PostgreSQL alone.
def test_a_percent_encoded_password_opens(postgres_db):
    base, _ = postgres_db
    url = base.replace("postgres@", f"postgres:{quote('p@ss:w/rd', safe='')}@")  # the server trusts any password
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="encoded")
    assert "p%40ss" not in mask_password(url) and "***" in mask_password(url)
    storage.engine.dispose()


def test_masking_keeps_a_user_name_with_an_at_sign_and_paths_with_one():
    assert mask_password("postgresql://me@corp:pw@db.example:5432/db") == "postgresql://me@corp:***@db.example:5432/db"
    assert mask_password("sqlite:////data/run@2/study.db") == "sqlite:////data/run@2/study.db"
    assert mask_password("postgresql://postgres@127.0.0.1:5432/db") == "postgresql://postgres@127.0.0.1:5432/db"


def test_a_driver_message_loses_the_password_in_every_spelling():
    url = f"postgresql://postgres:{quote('hunt@er2', safe='')}@127.0.0.1:5432/db"
    text = 'FATAL: password "hunt@er2" (hunt%40er2) rejected'
    assert hide_password(text, url) == 'FATAL: password "***" (***) rejected'


@pytest.mark.skipif(importlib.util.find_spec("psycopg2") is not None, reason="psycopg2 is installed here")
def test_a_driver_that_is_not_installed_is_refused_by_name():
    with pytest.raises(StorageError, match=r"driver 'psycopg2' .* is not installed; use postgresql:// or "
                                           r"postgresql\+psycopg://"):
        open_storage("postgresql+psycopg2://postgres:hunter2@127.0.0.1:5432/test")


@pytest.mark.parametrize("url, problem", [
    ("postgresql+asyncpg://postgres@127.0.0.1:5432/test", "asynchronous"),
    ("postgresql+nosuch://postgres@127.0.0.1:5432/test", "unknown PostgreSQL driver 'nosuch'"),
    ("sqlite+aiosqlite:///study.db", "unsupported SQLite driver 'aiosqlite'"),
])
def test_unusable_drivers_are_refused_by_name(url, problem):
    with pytest.raises(StorageError, match=problem):
        open_storage(url)


def test_the_psycopg_driver_may_be_named(postgres_db):
    base, _ = postgres_db
    storage = open_storage(base.replace("postgresql://", "postgresql+psycopg://"))
    optuna.create_study(storage=storage, study_name="named-driver")
    storage.engine.dispose()
