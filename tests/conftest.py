"""Shared fixtures: tiny MNIST-format files written by the tests themselves, and the stores tests
run on (a PostgreSQL test server when it answers, see services.py)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from tests import services

REAL_DATA_ENV = "MNIST_SEARCH_REAL_DATA"

# The test processes (pyproject's `-n 2`) and the CLI processes they start share the machine's
# cores: one math thread each, because oversubscribed OpenMP threads spin, which made the whole
# suite a third slower. Set before anything imports torch; a caller's own setting wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the IDX format MNIST uses (big-endian header)."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: each class is a bright 6x6 blob at its own place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = 3 + 7 * (label // 4), 3 + 7 * (label % 4)
        images[i, row : row + 6, col : col + 6] = 255
    return images, labels.astype(np.uint8)


def make_tiny_mnist(root: Path, n_train: int = 400, n_test: int = 100) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A directory in torchvision's layout with 400 training and 100 test synthetic images."""
    return make_tiny_mnist(tmp_path / "data")


@pytest.fixture
def real_mnist() -> Path:
    """The real MNIST files, when CI or the developer points MNIST_SEARCH_REAL_DATA at them."""
    root = os.environ.get(REAL_DATA_ENV)
    if not root or not (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"real MNIST not available: set {REAL_DATA_ENV} to a directory holding MNIST/raw")
    return Path(root)


@pytest.fixture(scope="session")
def postgres_probe() -> str | None:
    """Why the PostgreSQL test server does not answer, or None; asked once per test process."""
    return services.postgres_error()


@pytest.fixture(scope="session")
def postgres_server(postgres_probe) -> str:
    """The admin URL of the PostgreSQL test server; a test that needs it skips, saying why, when it
    does not answer (services.py)."""
    if postgres_probe is not None:
        services.absent(services.unreachable(postgres_probe))
    return services.PG_ADMIN_URL


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    """A database of this test process's own for the whole run (tests in it use their own study
    names), dropped afterwards."""
    with services.fresh_database("mnist_search_test") as (url, _):
        yield url


@pytest.fixture
def postgres_db(postgres_server):
    """(URL, name) of an empty database on the test server for one test, dropped afterwards."""
    with services.fresh_database("mnist_search_storage") as database:
        yield database


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path) -> str:
    """An empty store of each kind, for behaviours every backend must share: a SQLite file (not
    yet created) in a directory of its own, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_db")[0]
    directory = tmp_path / "store"
    directory.mkdir()
    return f"sqlite:///{directory / 'study.db'}"
