"""The confirmation summary and the choice of which seed's weights to ship."""

import pytest

from mnist_search.search.confirm import representative_run, summarise


def runs(*finals, status="completed"):
    return [{"seed": i, "status": status, "test_acc": [98.0, 99.45, final]} for i, final in enumerate(finals)]


def test_summary_judges_every_last_k_epoch_of_every_seed():
    result = summarise(runs(99.5, 99.6, 99.41), last_k=2, target=99.4)
    assert result["final_mean"] == pytest.approx((99.5 + 99.6 + 99.41) / 3)
    assert result["last_k_min"] == 99.41 and result["consistent"]
    assert not summarise(runs(99.5, 99.6, 99.39), last_k=2, target=99.4)["consistent"]
    assert not summarise(runs(99.5, 99.6, status="diverged"), last_k=2, target=99.4)["consistent"]


def test_the_shipped_seed_is_the_median_not_the_best():
    assert representative_run(summarise(runs(99.1, 99.5, 99.3), 2, 99.4))["seed"] == 2
    assert representative_run(summarise(runs(99.6, 99.2), 2, 99.4))["seed"] == 1  # even count: the lower middle
    with_empty = summarise(runs(99.6, 99.2, 99.4), 2, 99.4)
    with_empty["runs"].append({"seed": 3, "status": "diverged", "test_acc": []})
    assert representative_run(with_empty)["seed"] == 2
