from pathlib import Path

import pytest
import torch

from mnist_search.errors import DataError
from mnist_search.trainer.data import DATA_DIR_ENV, load_mnist, resolve_data_dir, stratified_indices


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir(None) == tmp_path / "from-env"
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir(None) == tmp_path / "cache" / "mnist-search"


def test_tiny_files_load_with_a_stratified_validation_split(tiny_mnist):
    data = load_mnist(tiny_mnist, val_size=100, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (300, 100, 100)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (28, 28)
    # 40 images of each digit -> exactly 10 of each in validation, and no image in both splits.
    assert torch.bincount(data.val.labels, minlength=10).tolist() == [10] * 10
    assert len(data.full_train()) == 400


def test_split_is_fixed_and_proportional():
    labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    first = stratified_indices(labels, 100, seed=7)
    assert torch.equal(first, stratified_indices(labels, 100, seed=7))
    assert torch.bincount(labels[first]).tolist() == [60, 30, 10]
    assert len(set(first.tolist())) == 100


def test_missing_files_name_the_setting_and_the_variable(tmp_path):
    # The library names the setting; the command line respells it as its flag (tests/test_first_hour.py).
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path / "empty", download=False)
    message = str(info.value)
    assert "data_dir" in message and "--data-dir" not in message and DATA_DIR_ENV in message and "\n" not in message


def test_missing_files_offline_download_fails_cleanly(tmp_path):
    with pytest.raises(DataError, match="download failed.*set data_dir"):
        load_mnist(tmp_path / "empty", download=True)


def test_truncated_image_file_is_an_error_not_a_partial_dataset(tiny_mnist):
    images = tiny_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-1000])
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_mnist(tiny_mnist, val_size=10, download=False)


def test_truncated_label_file_is_an_error(tiny_mnist):
    labels = tiny_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_mnist(tiny_mnist, val_size=10, download=False)


def test_corrupted_header_is_an_error(tiny_mnist):
    images = tiny_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(b"\xff\xff\xff\xff" + images.read_bytes()[4:])
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_mnist(tiny_mnist, val_size=10, download=False)


def test_real_mnist_has_the_known_sizes_and_mean(real_mnist: Path):
    data = load_mnist(real_mnist, download=False)
    assert len(data.full_train()) == 60_000 and len(data.test) == 10_000
    assert (len(data.train), len(data.val)) == (50_000, 10_000)
    mean = data.full_train().images.double().div(255).mean().item()
    assert mean == pytest.approx(0.1307, abs=5e-5)
