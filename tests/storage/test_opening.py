"""Opening a store: nothing is created for a reader, and a store this tool cannot use is refused
in one line before anything is written to it. Real SQLite files, the real PostgreSQL server."""

from __future__ import annotations

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

OPTUNA_TABLE = "studies"


def tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def optuna_store(path: Path) -> Path:
    storage = open_storage(f"sqlite:///{path}")
    optuna.create_study(storage=storage, study_name="kept")
    storage.engine.dispose()
    return path


def test_a_reader_gets_a_missing_file_named_and_nothing_is_created(tmp_path):
    path = tmp_path / "never-run.db"
    with pytest.raises(StorageError, match=f"no study store at {path}; run `mnist-search run` first"):
        open_storage(f"sqlite:///{path}", create=False)
    assert not path.exists()


def test_a_reader_of_an_empty_file_gets_no_tables_added(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StorageError, match="no study store in"):
        open_storage(f"sqlite:///{path}", create=False)
    assert tables(path) == []


def test_a_reader_of_an_empty_postgres_database_gets_no_tables_added(postgres_db):
    url, _ = postgres_db
    with pytest.raises(StorageError, match="no study store in postgresql://"):
        open_storage(url, create=False)
    with psycopg.connect(url) as db:
        assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_a_reader_opens_an_existing_store(tmp_path):
    storage = open_storage(f"sqlite:///{optuna_store(tmp_path / 'study.db')}", create=False)
    assert [s.study_name for s in storage.get_all_studies()] == ["kept"]
    storage.engine.dispose()


@pytest.mark.parametrize("with_optuna_tables", [False, True])
def test_another_programs_sqlite_file_is_refused_and_left_alone(tmp_path, with_optuna_tables):
    path = optuna_store(tmp_path / "mixed.db") if with_optuna_tables else tmp_path / "notes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    before = tables(path)
    with pytest.raises(StorageError, match=f"{path} is not an Optuna study store: it holds the tables notes"):
        open_storage(f"sqlite:///{path}")
    assert tables(path) == before


def test_a_file_that_is_no_database_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list: milk, eggs\n" * 100)
    with pytest.raises(StorageError, match="the file is not a SQLite database .*; choose another file"):
        open_storage(f"sqlite:///{path}")
    assert path.read_text().startswith("shopping list")


@pytest.mark.parametrize("revision, fix", [
    ("v3.0.0.d", "upgrade it with `optuna storage upgrade --storage URL`"),  # a known, older schema
    ("v99.0.0.a", "upgrade Optuna: pip install -U optuna"),  # a schema from a future Optuna
])
def test_a_schema_of_another_optuna_version_is_refused_at_once_and_left_alone(tmp_path, revision, fix):
    path = optuna_store(tmp_path / "study.db")
    with sqlite3.connect(path) as db:  # what the alembic table of that Optuna version holds
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    before = tables(path)
    start = time.monotonic()
    with pytest.raises(StorageError, match=f"{revision}.*; {fix}".replace("(", r"\(").replace(")", r"\)")):
        open_storage(f"sqlite:///{path}")
    assert time.monotonic() - start < 5  # no retries
    assert tables(path) == before


def test_an_older_schema_missing_todays_tables_gets_none_added(tmp_path):
    path = optuna_store(tmp_path / "study.db")
    with sqlite3.connect(path) as db:  # Optuna 2.x had no heartbeat table
        db.execute("DROP TABLE trial_heartbeats")
        db.execute("UPDATE alembic_version SET version_num = 'v2.6.0.a'")
    with pytest.raises(StorageError, match="optuna storage upgrade"):
        open_storage(f"sqlite:///{path}")
    assert "trial_heartbeats" not in tables(path)


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
    shutil.copy(optuna_store(tmp_path / "study.db"), copy)
    storage = open_storage(f"sqlite:///{copy}")
    assert optuna.load_study(storage=storage, study_name="kept").study_name == "kept"
    storage.engine.dispose()


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
