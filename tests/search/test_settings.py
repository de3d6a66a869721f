"""ConfirmSettings, the twin of SearchSettings for confirm: frozen, checked on construction, a JSON round trip."""

import dataclasses
import json

import pytest

from mnist_search.errors import ConfigError
from mnist_search.search.confirm import ConfirmJob
from mnist_search.search.settings import ConfirmSettings


def test_confirm_settings_round_trip_and_are_frozen():
    settings = ConfirmSettings(trials=[3, 1], seeds=6, first_seed=2, last_k=4, target=99.1, workers=2, fuse=False)
    assert settings.trials == (3, 1) and settings.seed_list == [2, 3, 4, 5, 6, 7]
    assert ConfirmSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seeds = 1
    job = ConfirmJob(settings, {"layers": []}, {"epochs": 2}, "/data", 3, None)
    assert ConfirmJob.from_json(job.to_json()) == job  # what a confirmation worker process receives


@pytest.mark.parametrize(("values", "message"), [
    ({"top": 0}, "top must be a whole number of at least 1"),
    ({"seeds": True}, "seeds must be a whole number"),
    ({"first_seed": -1}, "first_seed must be a whole number of at least 0"),
    ({"last_k": 0}, "last_k must be a whole number of at least 1"),
    ({"target": float("nan")}, "target must be a percentage between 0 and 100"),
    ({"target": 100.5}, "target must be a percentage between 0 and 100"),
    ({"trials": []}, "trials must be a list of trial numbers"),
    ({"trials": [1, "2"]}, "trials must be a list of trial numbers"),
    ({"device": "tpu"}, "device must be auto, cpu or cuda"),
    ({"compile": "maybe"}, "compile must be one of"),
    ({"first_seed": 2**31, "seeds": 1}, "first_seed \\+ seeds must stay below 2\\*\\*31"),
])
def test_bad_confirm_settings_name_the_setting(values, message):
    with pytest.raises(ConfigError, match=message):
        ConfirmSettings(**values)


def test_unknown_confirm_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown confirm setting"):
        ConfirmSettings.from_dict({"seeds": 2, "epochs": 3})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        ConfirmSettings.from_dict([1])
