"""The weight average (TrainConfig.ema_epochs): what is evaluated, what is kept, what it leaves alone."""

import pytest
import torch

from mnist_search.errors import ConfigError
from mnist_search.models import GAP, ArchSpec, Conv, MaxPool
from mnist_search.trainer import TrainConfig, build_seeded, fit, load_mnist, to_device
from mnist_search.trainer.averaging import WeightAverage, decay_for, warmed_decay
from mnist_search.trainer.loop import evaluate
from mnist_search.trainer.runtime import Runtime

CPU = Runtime("cpu")

SMALL = ArchSpec((Conv(6), MaxPool(2), Conv(8), MaxPool(2), Conv(10, k=1, post=()), GAP()))
DROPOUT = ArchSpec((Conv(6, dropout=0.1), MaxPool(2), Conv(8, dropout=0.1), MaxPool(2), Conv(10, k=1, post=()), GAP()))


@pytest.fixture
def data(tiny_mnist):
    return load_mnist(tiny_mnist, val_size=100, download=False)


def without_time(history):
    return [{k: v for k, v in m.to_dict().items() if k != "seconds"} for m in history]


def test_the_decay_spans_the_horizon_in_steps():
    assert decay_for(1.0, 100) == pytest.approx(0.99)
    assert decay_for(0.5, 400) == pytest.approx(1 - 1 / 200)
    assert decay_for(0.01, 10) == 0.0  # less than one step: the average is the latest weights


def test_the_decay_warms_up_so_early_averages_follow_the_weights():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)  # the first update nearly copies
    assert warmed_decay(0.999, 90) == pytest.approx(91 / 100)
    assert warmed_decay(0.99, 10_000) == 0.99


def test_an_update_moves_floats_by_one_minus_decay_and_copies_counters():
    model = build_seeded(SMALL, 0)
    average = WeightAverage(model, decay=0.75)
    average.prepare(step=1_000)  # warmed up: the decay itself
    before = {k: v.clone() for k, v in average.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        for name, buffer in model.named_buffers():
            buffer.add_(4 if name.endswith("num_batches_tracked") else 1.0)
    average.update()
    for name, value in average.model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            assert torch.equal(value, model.state_dict()[name])  # copied, not averaged
        else:
            assert torch.allclose(value, before[name] + 0.25)  # 0.75 * old + 0.25 * (old + 1)


def test_the_averaged_weights_are_evaluated_and_kept(data):
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, rotation=5, ema_epochs=1.0, seed=2)
    model = build_seeded(SMALL, 2)
    history = fit(model, config, data.train, data.val, CPU).history
    assert all(m.raw_eval_acc is not None for m in history)
    images, labels = to_device(data.val, torch.device("cpu"))
    # The model handed back holds what the last epoch evaluated (what gets saved and exported).
    assert evaluate(model, images, labels) == (history[-1].eval_loss, history[-1].eval_acc)


def test_averaging_changes_what_is_evaluated_not_how_the_network_trains(data):
    plain = TrainConfig(epochs=3, batch_size=32, lr=0.05, rotation=5, seed=2)  # augmentation and dropout draw
    without = fit(build_seeded(DROPOUT, 2), plain, data.train, data.val, CPU).history
    averaged = fit(build_seeded(DROPOUT, 2), plain.replace(ema_epochs=1.0), data.train, data.val, CPU).history
    assert [m.raw_eval_acc for m in averaged] == [m.eval_acc for m in without]
    assert [m.train_loss for m in averaged] == [m.train_loss for m in without]
    assert [m.eval_loss for m in averaged] != [m.eval_loss for m in without]  # a different network scored
    assert without[0].raw_eval_acc is None


def test_averaged_seeded_runs_repeat(data):
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, translate=0.05, ema_epochs=0.5, seed=1)
    first = fit(build_seeded(SMALL, 1), config, data.train, data.val, CPU).history
    second = fit(build_seeded(SMALL, 1), config, data.train, data.val, CPU).history
    assert without_time(first) == without_time(second)


@pytest.mark.parametrize("ema_epochs", [-0.5, 16])
def test_a_horizon_outside_the_run_is_a_config_error(ema_epochs):
    with pytest.raises(ConfigError, match="ema_epochs"):
        TrainConfig(epochs=15, ema_epochs=ema_epochs)


def test_early_averages_are_not_dragged_down_by_the_initial_weights(data):
    """With a fixed decay this 3-epoch horizon scored 19-45 points under the raw weights (the
    random start still weighed in); warmed up, the average stays near them from epoch 1."""
    config = TrainConfig(epochs=3, batch_size=30, lr=0.05, ema_epochs=3.0, seed=2)
    history = fit(build_seeded(SMALL, 2), config, data.train, data.val, CPU).history
    assert all(m.eval_acc >= m.raw_eval_acc - 12 for m in history), history
