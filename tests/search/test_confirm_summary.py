"""The confirmation summary and the choice of which seed's weights to ship."""

import pytest

from mnist_search.search.records import Confirmation, ConfirmationRun


def runs(*finals, status="completed", raw=None):
    return tuple(ConfirmationRun(seed=i, status=status, test_acc=(98.0, 99.45, final), weights_artifact=f"w{i}",
                                 raw_test_acc=raw(final) if raw else None) for i, final in enumerate(finals))


def test_summary_judges_every_last_k_epoch_of_every_seed():
    result = Confirmation(runs(99.5, 99.6, 99.41), last_k=2, target=99.4)
    assert result.stats.final_mean == pytest.approx((99.5 + 99.6 + 99.41) / 3)
    assert result.stats.last_k_min == 99.41 and result.consistent
    assert not Confirmation(runs(99.5, 99.6, 99.39), last_k=2, target=99.4).consistent
    assert not Confirmation(runs(99.5, 99.6, status="diverged"), last_k=2, target=99.4).consistent


def test_the_shipped_seed_is_the_median_completed_one_not_the_best():
    assert Confirmation(runs(99.1, 99.5, 99.3), 2, 99.4).representative() == (runs(99.1, 99.5, 99.3)[2], 3)
    assert Confirmation(runs(99.6, 99.2), 2, 99.4).representative()[0].seed == 1  # even count: the lower middle
    diverged = ConfirmationRun(seed=3, status="diverged", test_acc=(99.3, 99.35, 99.5), weights_artifact="w3")
    mixed = Confirmation(runs(99.6, 99.2, 99.4) + (diverged,), 2, 99.4)
    assert mixed.representative() == (mixed.runs[2], 3)  # the diverged seed is never shipped
    assert Confirmation(runs(99.6, status="diverged"), 2, 99.4).representative() is None


def test_averaged_runs_also_summarise_their_raw_weights():
    averaged = runs(99.5, 99.6, raw=lambda final: (97.0, 99.30, final - 0.1))
    result = Confirmation(averaged, last_k=2, target=99.4)
    assert result.stats.last_k_min == 99.45 and result.consistent  # judged on the averaged weights
    assert result.raw.last_k_min == 99.30
    assert result.raw.final_mean == pytest.approx(99.45)
    assert Confirmation(runs(99.5, 99.6), last_k=2, target=99.4).raw is None


def test_a_confirmation_survives_its_stored_form():
    stored = Confirmation(runs(99.5, 99.6, raw=lambda f: (97.0, 99.3, f)), 2, 99.4)
    again = Confirmation.from_dict(stored.to_dict(), "test")
    assert again == stored and again.to_dict()["final_mean"] == stored.stats.final_mean
