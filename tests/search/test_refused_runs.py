"""A `run` refused for bad input leaves nothing behind: no store, no study, no artifact directory
(real SQLite files, a fresh database on the real PostgreSQL server)."""

import shutil

import pytest

from tests import stores
from tests.helpers import assert_user_error, cli_in_process

TINY = ("--val-size", "100", "--last-k", "1", "--seed", "1")


def test_a_run_refused_for_bad_input_leaves_no_store_and_no_artifact_directory(tiny_mnist, tmp_path):
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
    ]
    for (url, *flags), needle in cases:
        assert_user_error(cli_in_process("run", "--storage", url, "--trials", "1", *TINY, *flags), needle)
        assert sorted(p.name for p in work.iterdir()) == ["a-file"], needle


@pytest.mark.parametrize("flags, needle", [
    (("--warm-start", "nope"), "no study named 'nope' to warm-start"),
    (("--data-dir", "nowhere"), "MNIST files not found"),
], ids=["warm-start", "data-dir"])
def test_a_refused_run_adds_no_table_to_any_store(tiny_mnist, tmp_path, storage_url, flags, needle):
    """A fresh database as much as a new file: nothing is created before the input is checked."""
    artifacts = tmp_path / "artifacts"
    flags = tuple(str(tmp_path / f) if f == "nowhere" else f for f in flags)
    data = () if "--data-dir" in flags else ("--data-dir", str(tiny_mnist))
    assert_user_error(cli_in_process("run", "--storage", storage_url, "--trials", "1", "--artifacts", str(artifacts),
                                     *TINY, *data, *flags), needle)
    assert stores.tables(storage_url) == []
    assert not artifacts.exists()
    if stores.is_sqlite(storage_url):  # no file, no lock beside it
        assert list(stores.sqlite_path(storage_url).parent.iterdir()) == []
