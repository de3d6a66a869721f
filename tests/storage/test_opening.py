"""Opening a store: nothing is created for a reader, and a store this tool cannot use is refused
in one line before anything is written to it. Real SQLite files, the real PostgreSQL server:
what every backend must do runs on both (``storage_url``); what only one has stays its own."""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from pathlib import Path

import optuna
import psycopg
import pytest

from mnist_search.errors import StorageError
from mnist_search.storage import open_storage
from mnist_search.storage.files import store_files
from mnist_search.storage.urls import default_artifact_dir
from tests import stores
from tests.stores import tables

OPTUNA_TABLE = "studies"


def optuna_store(url: str) -> str:
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="kept")
    storage.engine.dispose()
    return url


def sqlite_store(path: Path) -> Path:
    optuna_store(f"sqlite:///{path}")
    return path


# Every backend.


def test_a_reader_of_an_empty_store_gets_no_tables_added(storage_url):
    if stores.is_sqlite(storage_url):
        stores.sqlite_path(storage_url).touch()  # an empty file: SQLite's empty database
    with pytest.raises(StorageError, match=f"no study store in {re.escape(storage_url)}"):
        open_storage(storage_url, create=False)
    assert tables(storage_url) == []


def test_a_reader_opens_an_existing_store(storage_url):
    storage = open_storage(optuna_store(storage_url), create=False)
    assert [s.study_name for s in storage.get_all_studies()] == ["kept"]
    storage.engine.dispose()


@pytest.mark.parametrize("revision, fix", [
    ("v3.0.0.d", "upgrade it with `optuna storage upgrade --storage URL`"),  # a known, older schema
    ("v99.0.0.a", "upgrade Optuna: pip install -U optuna"),  # a schema from a future Optuna
])
def test_a_schema_of_another_optuna_version_is_refused_at_once_and_left_alone(storage_url, revision, fix):
    url = optuna_store(storage_url)
    stores.execute(url, f"UPDATE alembic_version SET version_num = '{revision}'")  # what that version's table holds
    before = tables(url)
    start = time.monotonic()
    with pytest.raises(StorageError, match=f"{revision}.*; {fix}".replace("(", r"\(").replace(")", r"\)")):
        open_storage(url)
    assert time.monotonic() - start < 5  # no retries
    assert tables(url) == before


def test_an_older_schema_missing_todays_tables_gets_none_added(storage_url):
    url = optuna_store(storage_url)
    stores.execute(url, "DROP TABLE trial_heartbeats",  # Optuna 2.x had no heartbeat table
                   "UPDATE alembic_version SET version_num = 'v2.6.0.a'")
    with pytest.raises(StorageError, match="optuna storage upgrade"):
        open_storage(url)
    assert "trial_heartbeats" not in tables(url)


# SQLite's own: a store is a file, which may be missing, empty, shared, not a database, or copied.


def test_a_reader_gets_a_missing_file_named_and_nothing_is_created(tmp_path):
    path = tmp_path / "never-run.db"
    with pytest.raises(StorageError, match=f"no study store at {path}; run `mnist-search run` first"):
        open_storage(f"sqlite:///{path}", create=False)
    assert not path.exists()


# A file with another program's tables is refused even beside Optuna's (the PostgreSQL policy
# differs: a database may be shared once it holds a study store, see below).
@pytest.mark.parametrize("with_optuna_tables", [False, True])
def test_another_programs_sqlite_file_is_refused_and_left_alone(tmp_path, with_optuna_tables):
    path = sqlite_store(tmp_path / "mixed.db") if with_optuna_tables else tmp_path / "notes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    url = f"sqlite:///{path}"
    before = tables(url)
    with pytest.raises(StorageError, match=f"{path} is not an Optuna study store: it holds the tables notes"):
        open_storage(url)
    assert tables(url) == before


def test_a_file_that_is_no_database_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list: milk, eggs\n" * 100)
    with pytest.raises(StorageError, match="the file is not a SQLite database .*; choose another file"):
        open_storage(f"sqlite:///{path}")
    assert path.read_text().startswith("shopping list")


def test_a_missing_directory_is_named(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(StorageError, match=f"directory {missing} of the SQLite storage"):
        open_storage(f"sqlite:///{missing / 'study.db'}")
    assert not (tmp_path / "no").exists()


def test_a_tilde_is_a_directory_name_to_sqlite_and_so_to_every_path_beside_the_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match=r"directory .*/~ of the SQLite storage .*SQLite does not expand ~"):
        open_storage("sqlite:///~/study.db")
    # Export refuses to overwrite the store and its journals, and artifacts go beside it: the
    # same file SQLite opens, not one in the home directory.
    assert store_files("sqlite:///~/study.db")[0] == Path("~/study.db")
    assert default_artifact_dir("sqlite:///~/study.db") == Path("~/study-artifacts")


def test_a_copy_of_a_store_opens_like_the_original(tmp_path):
    copy = tmp_path / "copy.db"
    shutil.copy(sqlite_store(tmp_path / "study.db"), copy)
    storage = open_storage(f"sqlite:///{copy}")
    assert optuna.load_study(storage=storage, study_name="kept").study_name == "kept"
    storage.engine.dispose()


# PostgreSQL's own: a database is shared with other applications more often than a file is.


@pytest.mark.parametrize("foreign", [["accounts"], ["orders", "customers", "a", "b", "c", "d"]])
def test_another_applications_postgres_database_is_refused_and_left_alone(postgres_db, foreign):
    url, _ = postgres_db
    with psycopg.connect(url, autocommit=True) as db:
        for name in foreign:
            db.execute(f"CREATE TABLE {name} (id integer)")
    with pytest.raises(StorageError, match="holds the tables .* of another application; give mnist-search a "
                                           "database of its own"):
        open_storage(url)
    with psycopg.connect(url) as db:
        found = {row[0] for row in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert found == set(foreign)  # not one Optuna table added


def test_an_optuna_postgres_store_beside_other_tables_still_opens(postgres_db):
    url, _ = postgres_db
    optuna.create_study(storage=open_storage(url), study_name="kept")
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE notes (id integer)")  # added later by its owner: the store is theirs to share
    assert [s.study_name for s in optuna.get_all_study_summaries(open_storage(url))] == ["kept"]
