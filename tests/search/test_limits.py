"""Limits that follow the machine and the settings: every allowed seed count trains fused (in
groups that fit one network), worker and seed counts are bounded by this machine's memory, and
an MNIST file's size is checked before it is read. Real SQLite studies, tiny synthetic data."""

from __future__ import annotations

import os

import optuna
import pytest

from mnist_search.errors import ConfigError, DataError
from mnist_search.models import ArchSpec
from mnist_search.models.spec import MAX_WIDTH
from mnist_search.search import machine
from mnist_search.search.confirm import confirm
from mnist_search.search.objective import Objective
from mnist_search.search.settings import ConfirmSettings, SearchSettings
from mnist_search.storage import open_storage
from mnist_search.trainer import load_mnist
from mnist_search.trainer.fusion import FusedNet, copies_per_network, seed_groups
from tests.conftest import make_tiny_mnist
from tests.helpers import assert_user_error, cli_in_process
from tests.search.test_export_safety import make_study


def spec_of_width(width: int) -> ArchSpec:
    return ArchSpec.from_dict({"layers": [
        {"op": "conv", "out": width, "k": 3, "post": ["relu", "bn"]}, {"op": "maxpool", "k": 2},
        {"op": "conv", "out": 10, "k": 1, "post": []}, {"op": "gap"}]})


@pytest.mark.parametrize("width", [4, 52, 300, 1000, MAX_WIDTH])
def test_any_seed_count_splits_into_fused_networks_that_can_be_built(width):
    spec = spec_of_width(width)
    for count in (1, 2, 18, 20, 100):
        seeds = list(range(7, 7 + count))
        groups = seed_groups(spec, seeds)
        assert [s for g in groups for s in g] == seeds and all(groups)
        assert max(len(g) for g in groups) * width <= MAX_WIDTH or len(groups) == count
        assert len(groups) == -(-count // copies_per_network(spec))  # as few as fit
    FusedNet(spec, copies_per_network(spec))  # the largest group is a network that builds


def test_a_trial_with_more_fused_seeds_than_one_network_holds_completes(tmp_path):
    # Fewer images than the usual tiny data: 20 wide copies make the CPU's grouped convolutions slow.
    data = load_mnist(make_tiny_mnist(tmp_path / "data", n_train=100, n_test=20), val_size=20, download=False)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'wide.db'}"), study_name="wide",
                                direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner())
    settings = SearchSettings(max_params=8000, epochs=1, last_k=1, seed=3, seeds_per_trial=20, fuse_seeds=True)
    study.optimize(Objective(settings, data, "cpu", tmp_path / "a"), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
    assert len(seed_groups(ArchSpec.from_dict(trial.user_attrs["spec"]), range(20))) > 1  # the case under test
    assert len(trial.user_attrs["seed_scores"]) == 20 and len(trial.user_attrs["seed_histories"]) == 19
    assert sorted(trial.intermediate_values) == [1]  # one step per epoch, whatever the grouping


def test_confirm_trains_more_seeds_than_one_fused_network_holds(tmp_path):
    from mnist_search.search import records
    from mnist_search.trainer import TrainConfig

    study, artifacts = make_study(tmp_path, **{records.SPEC: spec_of_width(400).to_dict(), records.PARAMS: 8030,
                                               records.CONFIG: TrainConfig(epochs=1, batch_size=32).to_dict()})
    small = make_tiny_mnist(tmp_path / "data", n_train=60, n_test=20)
    (_, result), = confirm(study, ConfirmSettings(trials=[0], seeds=3, first_seed=2, last_k=1, compile="off"),
                           data_dir=small, artifact_dir=artifacts)  # groups of 2 and 1
    assert [r.seed for r in result.runs] == [2, 3, 4] and all(len(r.test_acc) == 1 for r in result.runs)
    assert len({r.weights_artifact for r in result.runs}) == 3


def test_workers_and_seeds_are_bounded_by_the_machine(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "memory_bytes", lambda: 4 * machine.GB)
    machine.check_workers(8)
    with pytest.raises(ConfigError, match=r"^workers 24 would need about 12.0 GB .* use at most 8$"):
        machine.check_workers(24)
    machine.check_seeds(1000, 8000)
    with pytest.raises(ConfigError, match="^seeds 5000000 would hold"):
        machine.check_seeds(5_000_000, 8000)
    monkeypatch.undo()

    # On this machine, through the command line: one line, exit 2, before any store, trial or training.
    too_many = str(machine.max_workers() + 1)
    url = f"sqlite:///{tmp_path / 'new.db'}"
    if int(too_many) <= 256:  # the settings' own bound; beyond it this machine has room for all
        assert_user_error(cli_in_process("run", "--storage", url, "--workers", too_many, "--data-dir",
                                         str(tiny_mnist)), f"--workers {too_many} would need", "use at most")
        assert not (tmp_path / "new.db").exists()
    make_study(tmp_path)
    existing = f"sqlite:///{tmp_path / 'study.db'}"
    for flags, needle in ((("--workers", too_many), f"--workers {too_many} would need"),
                          (("--seeds", "5000000"), "--seeds 5000000 would hold")):
        assert_user_error(cli_in_process("confirm", "--storage", existing, "--trial", "0", *flags,
                                         "--data-dir", str(tiny_mnist), "--artifacts", str(tmp_path / "artifacts")),
                          needle, "use at most")
    assert records_of_confirmation(existing) == []


def records_of_confirmation(url: str) -> list[str]:
    study = optuna.load_study(study_name="mnist-search", storage=url)
    return [k for k in study.user_attrs if k.startswith("confirm:")]


def test_an_mnist_file_is_measured_before_it_is_read(tiny_mnist):
    raw = tiny_mnist / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    good = images.read_bytes()
    cases = {
        "header says more images than the file holds": good[:4] + (10**6).to_bytes(4, "big") + good[8:],
        "one byte too many": good + b"\0",
        "no header": b"\x00\x00",
        "labels header on an images file": b"\x00\x00\x08\x01" + good[4:],
    }
    for case, content in cases.items():
        images.write_bytes(content)
        with pytest.raises(DataError, match="truncated or corrupted") as info:
            load_mnist(tiny_mnist, val_size=10, download=False)
        assert "\n" not in str(info.value), case
    # A file far larger than any MNIST file (sparse: it takes no disk) is refused without being read.
    with open(images, "wb") as f:
        f.write(good[:16])
        f.truncate(4 << 30)
    with pytest.raises(DataError, match="more than any MNIST file"):
        load_mnist(tiny_mnist, val_size=10, download=False)
    os.unlink(images)
    images.write_bytes(good)
    assert len(load_mnist(tiny_mnist, val_size=10, download=False).train) == 390
