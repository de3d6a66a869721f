"""For the storage tests: a child process that file permissions bind (tests run as root in CI,
and root may write to a chmod 444 file). The stores themselves come from tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

NOBODY = 65534


@pytest.fixture
def shared_dir():
    """A directory another user can enter (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="mnist-search-storage-"))
    path.chmod(0o755)
    yield path
    path.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


def others_cannot_read(path: Path) -> Path | None:
    """The first directory on the way to ``path`` that users other than its owner cannot enter or
    read (a clone under `mktemp -d`, mode 700, hides its virtual environment), or None."""
    for directory in (*reversed(path.parents), path):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH or (directory == path and not mode & stat.S_IROTH):
            return directory
    return None


def unprivileged(fn: Callable[[], str]) -> str:
    """``fn()`` in a forked child that file permissions bind (run as nobody when we are root):
    what it returned, or "ExceptionType: message". The child imports nothing new (nobody cannot
    read root's Python), so the parent must have run the same code paths first."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
            result = f"{type(exc).__name__}: {exc}"
        with os.fdopen(write_end, "w") as out:
            out.write(result)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        result = answer.read()
    os.waitpid(pid, 0)
    return result
