"""MNIST on disk -> uint8 tensors in memory, with a stratified validation split.

Files are read here, each measured against its IDX header before it is read, and held once
as uint8 tensors (``torchvision.datasets.MNIST`` only downloads and verifies missing files on
a machine that is online); the trainer normalises them on
its device. The directory is resolved as the ``data_dir`` given > ``MNIST_SEARCH_DATA_DIR`` > a
per-user cache directory, and must use torchvision's layout (``<dir>/MNIST/raw/...``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from mnist_search.defaults import DATA_DIR_ENV, DEFAULT_VAL_SIZE
from mnist_search.errors import DataError

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# IDX magic numbers of uint8 files: labels (1 dimension) and images (3); the real files are
# 47 MB at most, so a file past this is not MNIST and is never read into memory.
IDX_DIMENSIONS = {0x0801: 1, 0x0803: 3}
MAX_FILE_BYTES = 1 << 30
SPLIT_SEED = 20_231  # fixed: every trial of every study sees the same validation split
# Mean and std of the 60,000 training images scaled to [0, 1] (the figures the seeds use).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # N x 28 x 28, uint8
    labels: torch.Tensor  # N, int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class MNISTData:
    """Training, held-out validation and test splits of MNIST."""

    train: Split
    val: Split
    test: Split
    root: Path

    def with_train_images(self, count: int) -> MNISTData:
        """The same splits with ``count`` of the training images, drawn with a fixed seed (the
        same subset for every trial); validation and test are left whole."""
        keep = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(SPLIT_SEED))[:count]
        return MNISTData(Split(self.train.images[keep], self.train.labels[keep]), self.val, self.test, self.root)

    def full_train(self) -> Split:
        """All training images (train + val), for final retraining and test-set evaluation."""
        return Split(torch.cat([self.train.images, self.val.images]), torch.cat([self.train.labels, self.val.labels]))


def default_data_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mnist-search"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else $MNIST_SEARCH_DATA_DIR, else the per-user cache directory."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return default_data_dir()


def mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory the MNIST files of ``data_dir`` (resolved as ``load_mnist`` does) are kept in."""
    return resolve_data_dir(data_dir) / "MNIST"


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    val_size: int = DEFAULT_VAL_SIZE,
    download: bool = True,
) -> MNISTData:
    """Read the four MNIST files (downloading them if absent and ``download``) and split off validation."""
    root = resolve_data_dir(data_dir)
    if root.exists() and not root.is_dir():
        raise DataError(f"MNIST data directory {root} is not a directory; set data_dir or ${DATA_DIR_ENV}")
    train_images, train_labels = _read(root, train=True, download=download)
    test_images, test_labels = _read(root, train=False, download=download)
    if not 0 <= val_size < len(train_labels):
        raise DataError(
            f"validation size {val_size} must be between 0 and {len(train_labels) - 1} "
            f"(the training set has {len(train_labels)} images)"
        )
    val_index = stratified_indices(train_labels, val_size, seed=SPLIT_SEED)
    is_val = torch.zeros(len(train_labels), dtype=torch.bool)
    is_val[val_index] = True
    return MNISTData(
        train=Split(train_images[~is_val], train_labels[~is_val]),
        val=Split(train_images[is_val], train_labels[is_val]),
        test=Split(test_images, test_labels),
        root=root,
    )


def stratified_indices(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """``size`` indices whose class proportions match ``labels`` (largest-remainder rounding)."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels, minlength=10).double()
    quota = counts * size / len(labels)
    take = quota.floor().long()
    shortfall = size - int(take.sum())
    take[torch.argsort(quota - take, descending=True)[:shortfall]] += 1
    chosen = []
    for digit in range(len(counts)):
        members = torch.nonzero(labels == digit).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[: int(take[digit])]])
    return torch.sort(torch.cat(chosen)).values


_DOWNLOAD = threading.Lock()  # the redirection of the process's streams below must not interleave


def _read(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    kind = "training" if train else "test"
    raw = root / "MNIST" / "raw"
    missing = [name for name in RAW_FILES if not (raw / name).is_file()]
    if missing:
        _download(root, raw, kind, missing, download)
    prefix = "train" if train else "t10k"
    images, labels = (_read_idx(raw / name, kind) for name in RAW_FILES if name.startswith(prefix))
    _check(images, labels, kind, raw)
    return images.contiguous(), labels.long()


def _download(root: Path, raw: Path, kind: str, missing: list[str], download: bool) -> None:
    """Fetch the MNIST files with torchvision (which verifies them), or say which are missing."""
    try:
        if not download:
            raise RuntimeError("not downloading")
        from torchvision.datasets import MNIST  # slow to import: only when files are missing

        # torchvision prints download progress to stdout: kept out of the caller's output, one
        # download at a time, so the streams are put back exactly as they were.
        with _DOWNLOAD, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            MNIST(str(root), train=True, download=True)
    except Exception:  # noqa: BLE001 - offline, refused, or files that fail torchvision's checksums
        raise DataError(
            f"MNIST files not found in {raw} (missing {', '.join(missing)})"
            + (" and the download failed" if download else "")
            + f"; set data_dir (or ${DATA_DIR_ENV}) to a directory whose MNIST/raw holds the four MNIST files"
        ) from None


def _read_idx(path: Path, kind: str) -> torch.Tensor:
    """One IDX file of uint8 data as a tensor of its header's shape, measured before it is read."""
    shape = _check_size(path, kind)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the MNIST {kind} files in {path.parent}: {exc.strerror or exc}") from None
    body = bytearray(data[4 + 4 * len(shape):])
    if len(body) != math.prod(shape):  # changed since it was measured
        raise DataError(f"the MNIST {kind} files in {path.parent} are truncated or corrupted: {path.name} changed "
                        "while it was read; delete them to download again, or set data_dir to good copies")
    return torch.frombuffer(body, dtype=torch.uint8).reshape(shape) if body else torch.empty(shape, dtype=torch.uint8)


def _check_size(path: Path, kind: str) -> tuple[int, ...]:
    """The shape in the file's IDX header; DataError unless the file is exactly as long as the
    header says, checked before it is read whole."""
    import struct

    problem = None
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            dims = IDX_DIMENSIONS.get(int.from_bytes(head, "big")) if len(head) == 4 else None
            shape = struct.unpack(f">{dims}I", f.read(4 * dims)) if dims else None
    except (OSError, struct.error) as exc:
        problem = getattr(exc, "strerror", None) or str(exc)
    else:
        if size > MAX_FILE_BYTES:
            problem = f"{path.name} is {size:,} bytes, more than any MNIST file ({MAX_FILE_BYTES:,} at most)"
        elif shape is None:
            problem = f"{path.name} does not start with an IDX header of uint8 data"
        else:
            expected = 4 + 4 * len(shape) + math.prod(shape)
            if size != expected:
                problem = f"{path.name} is {size:,} bytes but its header {tuple(shape)} says {expected:,}"
    if problem:
        raise DataError(f"the MNIST {kind} files in {path.parent} are truncated or corrupted: {problem}; "
                        "delete them to download again, or set data_dir to good copies")
    return tuple(shape)


def _check(images: torch.Tensor, labels: torch.Tensor, kind: str, raw: Path) -> None:
    problem = None
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        problem = f"images have shape {tuple(images.shape)}, expected N x 28 x 28 bytes"
    elif labels.dim() != 1 or len(labels) != len(images):
        problem = f"{len(images)} images but {labels.numel()} labels"
    elif len(labels) == 0:
        problem = "no images"
    elif int(labels.min()) < 0 or int(labels.max()) > 9:
        problem = f"labels outside 0-9 (min {int(labels.min())}, max {int(labels.max())})"
    if problem:
        raise DataError(
            f"the MNIST {kind} files in {raw} are truncated or corrupted: {problem}; "
            "delete them to download again, or set data_dir to good copies"
        )
