"""Files the tool writes, and the files no output may ever replace.

Every output (an export's module and weights, a report's pages, a training run's metrics and
weights) goes through :func:`check_output` before any work that an error would waste, and is
written by :func:`write_files`: each file to a temporary name in its own directory, renamed into
place only when all of them are complete. A rename replaces a directory entry and never writes
through a symbolic link, so no output can land on the file a link points at; an output that is
a link is refused outright, since the user named the link, not its target. Protected are the
store and its journals, the artifact directory, the MNIST files, and (by their first bytes) any
SQLite database or MNIST file wherever it lies, so a path that happens to name one is refused
even when the tool could not know it was precious.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mnist_search.errors import UserError

SQLITE_HEADER = b"SQLite format 3\x00"
IDX_MAGICS = (b"\x00\x00\x08\x01", b"\x00\x00\x08\x03")  # MNIST labels, images (uint8 IDX)


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


def check_output(path: Path, what: str, protected: Iterable[str | os.PathLike] = (),
                 protected_dirs: Iterable[tuple[str | os.PathLike, str]] = ()) -> None:
    """UserError unless ``path`` may be (re)written: not a link, not a directory, not one of the
    ``protected`` files, not inside one of the ``protected_dirs`` ((directory, what it holds)
    pairs), not a SQLite database or an MNIST file, and in a directory that exists.

    ``what`` names the output in the message ("the module output").
    """
    if path.is_symlink():
        raise UserError(f"{what} {path} is a symbolic link (to {os.readlink(path)}); outputs never write through "
                        "links: name the file itself, or another path")
    target = path.resolve()
    if target.is_dir():
        raise UserError(f"{what} {path} is a directory; name a file")
    for guarded in protected:
        if target == Path(guarded).resolve():
            raise UserError(f"{what} {path} would replace the study store or an input of the tool ({guarded}); "
                            "choose another path")
    for directory, holds in protected_dirs:
        directory = Path(directory).resolve()
        if target == directory or directory in target.parents:
            raise UserError(f"{what} {path} lies in {directory}, which holds {holds}; choose a path outside it")
    kind = _precious_kind(target)
    if kind:
        raise UserError(f"{what} {path} is {kind}, which an output never replaces; choose another path")
    if not target.parent.is_dir():
        raise UserError(f"the directory of {what} {path} does not exist; create it first")


def _precious_kind(path: Path) -> str | None:
    """What ``path`` holds when it is a file the tool must never overwrite, judged by its first bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # absent (the usual case) or unreadable: the write itself will say so
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a regular file"
        head = os.read(fd, len(SQLITE_HEADER))
    finally:
        os.close(fd)
    if head.startswith(SQLITE_HEADER):
        return "a SQLite database (a study store?)"
    if head[:4] in IDX_MAGICS:
        return "an MNIST data file"
    return None


def write_files(outputs: Sequence[tuple[Path, bytes]]) -> None:
    """Write each (path, content), all of them or none: on any failure, Ctrl-C included, every
    path is left as it was and no temporary file remains.

    Each content goes to a temporary file in its path's directory (so the rename is atomic),
    then the files are renamed into place in the order given; a file that references another
    should come after it. A path that already exists is kept under a hard link until every
    rename has succeeded, so a failure between two renames can put it back.
    """
    staged: list[tuple[str, Path]] = []
    backups: dict[Path, str | None] = {}
    done: list[Path] = []
    try:
        for path, content in outputs:
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((temporary, path))
            with os.fdopen(handle, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temporary, 0o644)
        for temporary, path in staged:
            if path.is_symlink():  # made since it was checked: still never written through
                raise UserError(f"{path} became a symbolic link while it was being written; nothing was written")
            backups[path] = _keep(path)
            os.replace(temporary, path)
            done.append(path)
        for directory in {path.parent for _, path in staged}:
            _sync_directory(directory)
    except BaseException as exc:
        for path in reversed(done):
            with contextlib.suppress(OSError):
                backup = backups.pop(path)
                if backup:
                    os.replace(backup, path)
                else:
                    os.unlink(path)
        for leftover in [t for t, _ in staged] + [b for b in backups.values() if b]:
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        if isinstance(exc, OSError):
            where = exc.filename or (staged[-1][1] if staged else "the output")
            raise UserError(f"cannot write {where}: "
                            f"{exc.strerror or exc}; nothing was written") from None
        raise
    for backup in backups.values():
        if backup:
            with contextlib.suppress(OSError):
                os.unlink(backup)


def _keep(path: Path) -> str | None:
    """A hard link to the file at ``path`` under a temporary name, or None when there is none to keep."""
    if not os.path.lexists(path):
        return None
    for _ in range(100):
        name = os.path.join(path.parent, f".{path.name}.{os.urandom(6).hex()}.old")
        try:
            os.link(path, name, follow_symlinks=False)
            return name
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: the old file cannot be put back
            return None
    return None


def _sync_directory(directory: Path) -> None:
    """Make the renames durable (a power cut must not bring the old names back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_if_empty(directory: Path) -> None:
    """Remove ``directory`` when nothing is in it (an output directory a failed run created)."""
    with contextlib.suppress(OSError):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
