"""Every file the tool writes follows one set of rules (``storage.files``): never through a link,
never onto the store, its journals, the artifact directory or the MNIST files, and whole or not
at all, Ctrl-C and a full disk included. Real SQLite studies, real artifacts, real files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mnist_search.defaults import DATA_DIR_ENV
from mnist_search.errors import UserError
from mnist_search.search import records
from mnist_search.search.exporting import export
from mnist_search.search.report import write_report
from mnist_search.storage import default_artifact_dir
from mnist_search.storage.files import check_output, write_files
from tests.helpers import assert_user_error, cli_in_process, stored_epochs
from tests.search.test_export_safety import make_study

HISTORY = {records.HISTORY: stored_epochs(98.0, 98.5)}


def study_with_weights(tmp_path: Path):
    """A SQLite study of one completed seed002 trial with its weights stored (make_study) that a report can draw."""
    return make_study(tmp_path, **HISTORY)


def contents(*paths: Path) -> list[bytes]:
    return [p.read_bytes() for p in paths]


def test_no_output_is_written_through_a_link_or_onto_a_protected_file(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tiny_mnist))  # the MNIST files the user trains on
    study, artifacts = study_with_weights(tmp_path)
    store = tmp_path / "study.db"
    journal = store.with_name("study.db-journal")
    artifact = next(artifacts.iterdir())
    mnist = tiny_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    before = contents(store, artifact, mnist)
    targets = [store, artifact, mnist, tmp_path / "dangling"]

    # report: a link named like a report file, to the store, an artifact, an MNIST file, nowhere
    for index, target in enumerate(targets):
        for name in ("index.md", "accuracy_vs_params.png"):
            directory = tmp_path / f"report-{index}-{name}"
            directory.mkdir()
            (directory / name).symlink_to(target)
            with pytest.raises(UserError, match="symbolic link"):
                write_report(study, directory, protected=(store,))
            assert [p.name for p in directory.iterdir()] == [name]  # nothing written beside it
    for directory, holds in ((artifacts, "the trials' weights"), (tiny_mnist / "MNIST", "the MNIST files")):
        with pytest.raises(UserError, match="lies in"):
            write_report(study, directory, protected_dirs=((directory, holds),))

    # export: a module or weights output that is a link, or names a protected file or directory
    for target in targets:
        link = tmp_path / f"link-to-{target.name}.py"
        link.symlink_to(target)
        with pytest.raises(UserError, match="symbolic link"):
            export(study, link, artifact_dir=artifacts, protected=(store,))
        with pytest.raises(UserError, match="symbolic link"):
            export(study, tmp_path / "net.py", weights=link, artifact_dir=artifacts, protected=(store,))
        assert link.is_symlink()
        link.unlink()
    for output in (store, journal, mnist, artifact, tiny_mnist / "MNIST" / "raw" / "new.py"):
        with pytest.raises(UserError):
            export(study, output, artifact_dir=artifacts, protected=(store, journal))
    # A copy of a store or of an MNIST file the tool was not told about is still known by its bytes.
    for original in (store, mnist):
        copy = tmp_path / f"copy-of-{original.name}"
        copy.write_bytes(original.read_bytes())
        with pytest.raises(UserError, match="never replaces"):
            export(study, copy, artifact_dir=artifacts)
        assert copy.read_bytes() == original.read_bytes()
        copy.unlink()
    assert contents(store, artifact, mnist) == before
    assert not journal.exists() and not (tmp_path / "net.py").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix in (".tmp", ".old")]


def test_commands_check_their_outputs_before_working_and_a_full_disk_leaves_nothing(tmp_path, tiny_mnist,
                                                                                     monkeypatch):
    study_with_weights(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    store = (tmp_path / "study.db").read_bytes()
    out = tmp_path / "report"
    out.mkdir()
    (out / "index.md").symlink_to(tmp_path / "study.db")
    assert_user_error(cli_in_process("report", "--storage", url, "--output", str(out)), "symbolic link")
    assert (tmp_path / "study.db").read_bytes() == store and [p.name for p in out.iterdir()] == ["index.md"]
    default_artifacts = default_artifact_dir(url)
    default_artifacts.mkdir()
    assert_user_error(cli_in_process("report", "--storage", url, "--output", str(default_artifacts)), "lies in")
    assert_user_error(cli_in_process("report", "--storage", url, "--output", str(tmp_path / "artifacts"),
                                     "--artifacts", str(tmp_path / "artifacts")), "lies in")
    assert_user_error(cli_in_process("export", "--storage", url, "--output", str(default_artifacts / "x.py")),
                      "lies in")
    assert list(default_artifacts.iterdir()) == []

    train = ("train", "--preset", "seed002", "--epochs", "1", "--val-size", "100", "--data-dir", str(tiny_mnist),
             "--quiet")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").symlink_to(tiny_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte")
    assert_user_error(cli_in_process(*train, "--output", str(run)), "symbolic link")
    assert_user_error(cli_in_process(*train, "--output", str(tiny_mnist / "MNIST" / "raw")), "the MNIST files")
    assert not (tiny_mnist / "MNIST" / "raw" / "metrics.json").exists()

    # The disk fills once training is done: one line, and neither the files nor the new directory remain.
    real_fsync = os.fsync

    def full(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".spec.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    fresh = tmp_path / "runs" / "fresh"
    assert_user_error(cli_in_process(*train, "--output", str(fresh)), "No space left on device", "nothing was written")
    assert not fresh.exists() and list((tmp_path / "runs").iterdir()) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    result = cli_in_process(*train, "--output", str(fresh))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in fresh.iterdir()) == ["metrics.json", "spec.json", "weights.safetensors"]


@pytest.mark.parametrize("interrupt_at", [1, 2])
def test_an_interrupted_write_puts_every_file_back(tmp_path, monkeypatch, interrupt_at):
    """Ctrl-C at either rename of an export's pair (weights, then module): the earlier export stays whole."""
    study, artifacts = study_with_weights(tmp_path)
    module, weights = tmp_path / "net.py", tmp_path / "net.safetensors"
    export(study, module, weights=weights, artifact_dir=artifacts)
    old = contents(module, weights)
    module.write_text(module.read_text() + "# edited\n")  # so a restored file can be told from a new one
    old = contents(module, weights)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        export(study, module, weights=weights, artifact_dir=artifacts, force=True)  # replacing the earlier export
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls[0] == weights  # the weights go first: a module never stands without its weights
    assert contents(module, weights) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "net.py", "net.safetensors", "study.db"]

    # The same for new files: none of the pair remains.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    calls.clear()
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        export(study, fresh / "net.py", weights=fresh / "net.safetensors", artifact_dir=artifacts)
    assert list(fresh.iterdir()) == []


def test_write_files_fails_whole_on_any_error(tmp_path):
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    with pytest.raises(UserError, match="nothing was written"):
        write_files([(kept, b"new"), (tmp_path / "missing" / "b.txt", b"b")])
    assert kept.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):  # and does not hang opening it
        check_output(fifo, "the output")
