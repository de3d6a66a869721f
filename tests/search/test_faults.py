"""Faults around a search, in-process: artifacts that cannot be written, workers that must not repeat each other."""

from __future__ import annotations

import errno

import optuna
import pytest

from mnist_search.errors import UserError
from mnist_search.search import artifacts
from mnist_search.search.runner import _sampler_seed
from mnist_search.search.settings import SearchSettings
from tests.helpers import search, states


def test_an_unwritable_artifact_directory_is_refused_before_any_training(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write trial weights to"):
        search(url, tiny_mnist, artifacts=blocker / "weights", trials=1)
    assert not (tmp_path / "study.db").exists()  # refused before the store was created: nothing trained, nothing lost


def test_a_failed_weights_write_fails_the_trial_and_stops_the_run_cleanly(tiny_mnist, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'full.db'}"

    def disk_full(source, target, *args):
        target.write(source.read(100))  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.shutil, "copyfileobj", disk_full)
    with pytest.raises(artifacts.ArtifactWriteError, match="No space left on device"):
        search(url, tiny_mnist, artifacts=tmp_path / "weights", trials=3)
    assert states(url) == ["FAIL"]  # the run stopped after the trial whose weights were lost
    assert list((tmp_path / "weights").iterdir()) == []  # no truncated weights file


def test_workers_of_one_seed_never_sample_the_same_points(tmp_path):
    url = f"sqlite:///{tmp_path / 'seeds.db'}"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    settings = SearchSettings(seed=7)
    first_run = _sampler_seed(study, settings, 4)
    second_run = _sampler_seed(optuna.load_study(storage=url, study_name="s"), settings, 4)
    assert len(set(first_run + second_run)) == 8  # no two processes of any run of the study share a seed
    other = optuna.create_study(storage=url, study_name="t", direction="maximize")
    assert not set(_sampler_seed(other, settings, 4)) & set(first_run)  # nor do two studies' workers
    fresh = optuna.create_study(storage=f"sqlite:///{tmp_path / 'again.db'}", study_name="s", direction="maximize")
    assert _sampler_seed(fresh, settings, 4) == first_run  # and a fixed seed still reproduces a fresh study
    assert _sampler_seed(study, SearchSettings(), 2) == [None, None]  # no seed: random samplers


def test_workers_with_one_seed_train_distinct_networks(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 'distinct.db'}"
    study, _ = search(url, tiny_mnist, trials=4, workers=2, epochs=1, seed=7, sampler="random")
    params = [tuple(sorted(t.params.items())) for t in optuna.load_study(study_name="mnist-search", storage=url).trials]
    assert len(params) == 4 and len(set(params)) == 4
