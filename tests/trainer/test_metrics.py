import math

import pytest

from mnist_search.trainer import EpochMetrics

METRICS = EpochMetrics(epoch=2, train_loss=0.1, train_acc=97.0, eval_loss=0.05, eval_acc=98.5, lr=0.01, seconds=3.0)


def test_metrics_round_trip_through_their_stored_form():
    assert EpochMetrics.from_dict(METRICS.to_dict()) == METRICS
    averaged = EpochMetrics(**{**vars(METRICS), "raw_eval_acc": 98.0})
    assert EpochMetrics.from_dict(averaged.to_dict()) == averaged
    assert "raw_eval_acc" not in METRICS.to_dict()  # stored as before averaging existed


@pytest.mark.parametrize(("change", "named"), [
    ({"eval_acc": "99"}, "whose eval_acc is not a finite number"),
    ({"eval_acc": math.nan}, "whose eval_acc is not a finite number"),
    ({"lr": True}, "whose lr is not a finite number"),
    ({"epoch": 1.5}, "whose epoch is not a whole number"),
    ({"epoch": 0}, "whose epoch is not a whole number"),
])
def test_a_damaged_stored_epoch_names_the_field(change, named):
    with pytest.raises(ValueError, match=named):
        EpochMetrics.from_dict({**METRICS.to_dict(), **change})
    missing = METRICS.to_dict()
    del missing["seconds"]
    with pytest.raises(ValueError, match="whose seconds is not a finite number: None"):
        EpochMetrics.from_dict(missing)
    with pytest.raises(ValueError, match="that is not an object"):
        EpochMetrics.from_dict([1, 2])
