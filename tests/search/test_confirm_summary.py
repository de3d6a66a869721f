"""The confirmation summary and the choice of which seed's weights to ship."""

import pytest

from mnist_search.search.confirm import representative_run, summarise


def runs(*finals, status="completed"):
    return [{"seed": i, "status": status, "test_acc": [98.0, 99.45, final], "weights_artifact": f"w{i}"}
            for i, final in enumerate(finals)]


def test_summary_judges_every_last_k_epoch_of_every_seed():
    result = summarise(runs(99.5, 99.6, 99.41), last_k=2, target=99.4)
    assert result["final_mean"] == pytest.approx((99.5 + 99.6 + 99.41) / 3)
    assert result["last_k_min"] == 99.41 and result["consistent"]
    assert not summarise(runs(99.5, 99.6, 99.39), last_k=2, target=99.4)["consistent"]
    assert not summarise(runs(99.5, 99.6, status="diverged"), last_k=2, target=99.4)["consistent"]


def test_the_shipped_seed_is_the_median_completed_one_not_the_best():
    assert representative_run(summarise(runs(99.1, 99.5, 99.3), 2, 99.4)) == (runs(99.1, 99.5, 99.3)[2], 3)
    assert representative_run(summarise(runs(99.6, 99.2), 2, 99.4))[0]["seed"] == 1  # even count: the lower middle
    mixed = summarise(runs(99.6, 99.2, 99.4), 2, 99.4)
    mixed["runs"].append({"seed": 3, "status": "diverged", "test_acc": [99.3, 99.35, 99.5], "weights_artifact": "w3"})
    assert representative_run(mixed) == (mixed["runs"][2], 3)  # the diverged seed is never shipped
    assert representative_run(summarise(runs(99.6, status="diverged"), 2, 99.4)) is None


def test_averaged_runs_also_summarise_their_raw_weights():
    averaged = [{**r, "raw_test_acc": [97.0, 99.30, r["test_acc"][-1] - 0.1]} for r in runs(99.5, 99.6)]
    result = summarise(averaged, last_k=2, target=99.4)
    assert result["last_k_min"] == 99.45 and result["consistent"]  # judged on the averaged weights
    assert result["raw"]["last_k_min"] == 99.30
    assert result["raw"]["final_mean"] == pytest.approx(99.45)
    assert "raw" not in summarise(runs(99.5, 99.6), last_k=2, target=99.4)
