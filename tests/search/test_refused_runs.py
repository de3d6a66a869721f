"""A `run` refused for bad input leaves nothing behind: no store, no study, no artifact directory
(real SQLite files, a fresh database on the real PostgreSQL server)."""

import shutil
import uuid

import psycopg
import pytest

from tests.helpers import assert_user_error, cli_in_process
from tests.storage.conftest import PG_ADMIN_URL, pg_admin

TINY = ("--val-size", "100", "--last-k", "1", "--seed", "1")


@pytest.fixture
def empty_database():
    """A fresh database of its own (the shared test database holds other tests' studies)."""
    name = f"mnist_search_refused_{uuid.uuid4().hex[:10]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_run_refused_for_bad_input_leaves_no_store_and_no_artifact_directory(tiny_mnist, tmp_path, empty_database):
    postgres_url = empty_database
    work = tmp_path / "work"
    work.mkdir()
    (work / "a-file").write_text("")
    truncated = tmp_path / "truncated"
    (truncated / "MNIST").mkdir(parents=True)
    shutil.copytree(tiny_mnist / "MNIST" / "raw", truncated / "MNIST" / "raw")
    images = truncated / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    sqlite = f"sqlite:///{work / 'new.db'}"
    cases = [
        ((sqlite, "--data-dir", str(tmp_path / "nowhere")), "MNIST files not found"),
        ((sqlite, "--data-dir", str(truncated)), "truncated or corrupted"),
        ((sqlite, "--data-dir", str(tiny_mnist), "--warm-start", "nope"), "no study named 'nope' to warm-start"),
        ((sqlite, "--data-dir", str(tiny_mnist), "--artifacts", str(work / "a-file" / "x")), "cannot write trial weights"),
        ((postgres_url, "--data-dir", str(tiny_mnist), "--warm-start", "nope"), "no study named 'nope' to warm-start"),
    ]
    for (url, *flags), needle in cases:
        assert_user_error(cli_in_process("run", "--storage", url, "--trials", "1", *TINY, *flags), needle)
        assert sorted(p.name for p in work.iterdir()) == ["a-file"], needle
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
