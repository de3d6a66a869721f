import math

import pytest
import torch

from mnist_search.errors import ConfigError
from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.schedules import lr_per_step, make_optimizer, make_scheduler


def trajectory(config: TrainConfig, steps_per_epoch: int) -> list[list[float]]:
    """The LR fit() uses for every batch, epoch by epoch."""
    lrs = lr_per_step(config, steps_per_epoch)
    assert len(lrs) == config.epochs * steps_per_epoch
    return [lrs[e * steps_per_epoch : (e + 1) * steps_per_epoch] for e in range(config.epochs)]


def live_trajectory(config: TrainConfig, steps_per_epoch: int) -> list[list[float]]:
    """The LR of every batch when the scheduler is stepped during training (the classic way)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer([param], config)
    scheduler, per_batch = make_scheduler(optimizer, config, steps_per_epoch)
    epochs = []
    for _ in range(config.epochs):
        lrs = []
        for _ in range(steps_per_epoch):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if per_batch:
                scheduler.step()
        if scheduler is not None and not per_batch:
            scheduler.step()
        epochs.append(lrs)
    return epochs


def test_none_keeps_the_lr():
    lrs = trajectory(TrainConfig(epochs=3, lr=0.05, scheduler="none"), 4)
    assert all(lr == 0.05 for epoch in lrs for lr in epoch)


def test_step_decays_once_every_step_size_epochs():
    lrs = trajectory(TrainConfig(epochs=8, lr=0.1, scheduler="step", step_size=3, gamma=0.1), 5)
    per_epoch = [epoch[0] for epoch in lrs]
    assert all(len(set(epoch)) == 1 for epoch in lrs)  # constant within an epoch
    assert per_epoch == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001] * 2)


def test_seed002_recipe_lowers_the_lr_every_epoch():
    gamma = (0.07 - 0.1 / 15) / 0.07
    lrs = [e[0] for e in trajectory(TrainConfig(epochs=4, lr=0.07, scheduler="step", step_size=1, gamma=gamma), 2)]
    assert lrs == pytest.approx([0.07, 0.06333333333333334, 0.057301587301587305, 0.0518442932728647])


def test_onecycle_warms_up_to_the_peak_then_anneals_per_batch():
    config = TrainConfig(epochs=10, lr=0.2, scheduler="onecycle", pct_start=0.3, div_factor=25, final_div_factor=1e4)
    lrs = [lr for epoch in trajectory(config, 10) for lr in epoch]
    assert lrs[0] == pytest.approx(0.2 / 25)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(0.2, rel=1e-3) and 28 <= peak <= 30
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert lrs[-1] < 0.2 / 25 / 1e3


def test_cosine_anneals_per_batch_to_zero():
    lrs = [lr for epoch in trajectory(TrainConfig(epochs=4, lr=0.1, scheduler="cosine"), 5) for lr in epoch]
    total = 20
    assert lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * t / total)) for t in range(total)], abs=1e-9)


@pytest.mark.parametrize("scheduler", ["none", "step", "onecycle", "cosine"])
def test_the_precomputed_schedule_is_what_stepping_the_scheduler_gives(scheduler):
    config = TrainConfig(epochs=5, lr=0.08, scheduler=scheduler, step_size=2, gamma=0.3)
    def flat(epochs):
        return [lr for epoch in epochs for lr in epoch]
    assert flat(trajectory(config, 7)) == pytest.approx(flat(live_trajectory(config, 7)), rel=1e-12)


def test_onecycle_keeps_the_configured_momentum():
    """PyTorch's OneCycleLR would cycle momentum 0.85-0.95 and silently ignore the recipe's."""
    param = torch.nn.Parameter(torch.zeros(1))
    config = TrainConfig(epochs=2, lr=0.1, momentum=0.7, scheduler="onecycle")
    optimizer = make_optimizer([param], config)
    scheduler, _ = make_scheduler(optimizer, config, 5)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["momentum"] == 0.7


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers(name, cls):
    config = TrainConfig(optimizer=name, lr=0.003, weight_decay=1e-4, nesterov=True)
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], config)
    assert isinstance(optimizer, cls)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4
    if name == "sgd":
        assert optimizer.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": -1}, {"optimizer": "lbfgs"}, {"scheduler": "plateau"},
                                 {"scale_min": 1.2, "scale_max": 1.0}, {"warmup": 3}])
def test_bad_configs_are_rejected(bad):
    with pytest.raises(ConfigError):
        TrainConfig.from_dict(bad)
