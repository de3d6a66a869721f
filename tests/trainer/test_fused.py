"""fit_seeds: each seed of a fused run trains as its own fit would, and splits back into an ordinary network."""

import dataclasses

import pytest
import torch

from mnist_search.errors import ConfigError, SpecError
from mnist_search.models import GAP, ArchSpec, Conv, MaxPool, build
from mnist_search.models.weights import load_weights, save_weights
from mnist_search.trainer import TrainConfig, build_seeded, fit, fit_seeds, fusion, load_mnist, to_device
from mnist_search.trainer import fused as fused_module
from mnist_search.trainer.fusion import FusedNet, _fused_conv, fuse, unfuse
from mnist_search.trainer.runtime import Runtime

CPU = Runtime("cpu")

SMALL = ArchSpec((Conv(6), MaxPool(2), Conv(8), MaxPool(2), Conv(10, k=1, post=()), GAP()))
DROPOUT = ArchSpec((Conv(6, dropout=0.2), MaxPool(2), Conv(8, post=("bn", "relu"), dropout=0.1), MaxPool(2),
                    Conv(10, k=1, post=()), GAP()))
# Depthwise 3x3 then pointwise 1x1, with a bias and a dilation: every Conv field in use.
SEPARABLE = ArchSpec((Conv(6), Conv(6, groups=6, dilation=2, bias=True), Conv(8, k=1), MaxPool(2),
                      Conv(10, k=1, post=("bn",)), GAP()))
SEEDS = (3, 11)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def data(tiny_mnist):
    return load_mnist(tiny_mnist, val_size=100, download=False)


def assert_same_run(solo, fused_result, solo_model=None, fused_model=None):
    """Histories equal up to float error, and weights too.

    Not bitwise: the fused convolutions round differently, and where an image region is
    constant (the synthetic blobs, the fill of a rotation) max-pool windows and ReLUs meet
    exact ties that a one-ulp difference breaks the other way; over a few dozen steps that
    grows to ~1e-5 in the weights, and with zoom and rotation (more fill, more ties) on an
    AVX-512 CPU to ~2e-3 in single weights, though under 1% of a tensor's norm. A wrong loss
    scale, batch or mask moves them by tens of percent.
    """
    assert fused_result.status == solo.status and len(fused_result.history) == len(solo.history)
    for alone, together in zip(solo.history, fused_result.history, strict=True):
        together = together.to_dict()
        assert set(together) == set(alone.to_dict())
        for key, value in alone.to_dict().items():
            if key == "seconds":
                continue
            # An accuracy may flip one of the 100 images.
            tolerance = {"rel": 1e-3} if "loss" in key else {"abs": 1.0} if "acc" in key else {"rel": 1e-12}
            assert together[key] == pytest.approx(value, **tolerance), key
    if solo_model is not None:
        for (name, alone), together in zip(solo_model.state_dict().items(), fused_model.state_dict().values(),
                                           strict=True):
            together, alone = together.float(), alone.float()
            assert (together - alone).norm() <= 1e-2 * alone.norm() + 1e-4, name


@pytest.mark.parametrize("spec, changes, channels_last", [
    (SMALL, dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, scheduler="step",
                 step_size=1), True),
    (SMALL, dict(optimizer="adamw", lr=0.005, weight_decay=0.05, scheduler="onecycle", label_smoothing=0.1), True),
    (DROPOUT, dict(lr=0.05), True),
    (DROPOUT, dict(lr=0.05), False),
    (SMALL, dict(lr=0.05, rotation=10, translate=0.1, scale_min=0.9, scale_max=1.1), True),
    (SMALL, dict(lr=0.05, ema_epochs=1, scheduler="cosine"), True),
    (SEPARABLE, dict(lr=0.05, momentum=0.9, rotation=5), True),
], ids=["sgd-nesterov", "adamw", "dropout", "dropout-contiguous", "augmentation", "ema", "separable"])
def test_each_seed_trains_as_its_own_fit_would(data, spec, changes, channels_last):
    """In the same memory layout (fused CPU training defaults to channels_last; fit, eager,
    to contiguous): a different layout rounds differently from the first step on."""
    config = TrainConfig(epochs=2, batch_size=32, **changes)
    together = fit_seeds(spec, config, SEEDS, data.train, data.val, runtime=Runtime("cpu", channels_last=channels_last))
    assert [run.seed for run in together] == list(SEEDS)
    for run in together:
        alone_model = build_seeded(spec, run.seed)
        alone = fit(alone_model, config.replace(seed=run.seed), data.train, data.val, runtime=Runtime("cpu",
                                                                                                      channels_last=channels_last))
        assert_same_run(alone, run.result, alone_model, run.model)
    assert together[0].result.history[-1].train_loss != together[1].result.history[-1].train_loss


def test_the_callback_gets_every_seeds_metrics_once_per_epoch(data):
    calls = []
    config = TrainConfig(epochs=2, batch_size=50, lr=0.05)
    runs = fit_seeds(SMALL, config, (0, 1, 2), data.train, data.val, CPU,
                     on_epoch=lambda epoch, metrics: calls.append((epoch, metrics)))
    assert [epoch for epoch, _ in calls] == [1, 2]
    for epoch, metrics in calls:
        assert metrics == [run.result.history[epoch - 1] for run in runs]


def test_a_raising_callback_stops_every_seed(data):
    class Stop(Exception):
        pass

    def stop(epoch, metrics):
        raise Stop

    with pytest.raises(Stop):
        fit_seeds(SMALL, TrainConfig(epochs=3, batch_size=50), SEEDS, data.train, data.val, CPU, on_epoch=stop)


def test_a_diverging_seed_is_reported_and_the_others_train_on(data, monkeypatch):
    """Copies share no weights and no activations: a copy full of NaNs leaves the others exact."""
    def build_with_a_broken_seed(spec, seed):
        model = build_seeded(spec, seed)
        if seed == 13:
            with torch.no_grad():
                model.blocks[0].conv.weight.fill_(float("nan"))
        return model

    monkeypatch.setattr(fused_module, "build_seeded", build_with_a_broken_seed)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, rotation=5)
    calls = []
    first, broken, last = fit_seeds(DROPOUT, config, (4, 13, 5), data.train, data.val, CPU,
                                    on_epoch=lambda epoch, metrics: calls.append(metrics))
    assert broken.result.status == "diverged" and broken.result.history == []
    assert "diverged in epoch 1" in broken.result.message
    assert [metrics[1] for metrics in calls] == [None, None]
    for run in (first, last):
        alone_model = build_seeded(DROPOUT, run.seed)
        alone = fit(alone_model, config.replace(seed=run.seed), data.train, data.val, runtime=Runtime("cpu",
                                                                                                      channels_last=True))
        assert_same_run(alone, run.result, alone_model, run.model)


def test_when_every_seed_diverges_training_stops(data):
    config = TrainConfig(epochs=5, batch_size=16, lr=1e6, momentum=0.0)
    spec = ArchSpec((Conv(6, post=("relu",)), MaxPool(2), Conv(10, k=1, post=()), GAP()))
    calls = []
    runs = fit_seeds(spec, config, SEEDS, data.train, data.val, CPU, on_epoch=lambda e, m: calls.append(e))
    assert [run.result.status for run in runs] == ["diverged", "diverged"]
    assert calls == []


def test_fusing_and_splitting_round_trips_and_each_copy_computes_its_own_network(data):
    models = [build_seeded(SEPARABLE, seed) for seed in (0, 1, 2)]
    for model in models:  # non-trivial BatchNorm statistics, so eval mode uses them
        model.train()(torch.randn(16, 1, 28, 28))
    fused = fuse(SEPARABLE, models).eval()
    images = [torch.randn(5, 1, 28, 28) for _ in models]
    with torch.no_grad():
        logits = fused(torch.cat(images, dim=1)).view(5, 3, 10)
        for index, (model, batch) in enumerate(zip(models, images, strict=True)):
            assert torch.allclose(logits[:, index], model.eval()(batch), atol=1e-5)
    for model, back in zip(models, unfuse(SEPARABLE, fused), strict=True):
        original, returned = model.state_dict(), back.state_dict()
        assert original.keys() == returned.keys()
        assert all(torch.equal(original[name], returned[name]) for name in original)


def test_each_seeds_weights_save_and_load_as_an_ordinary_network(data, tmp_path):
    runs = fit_seeds(SMALL, TrainConfig(epochs=1, batch_size=32, lr=0.05), SEEDS, data.train, data.val, CPU)
    images, _ = to_device(data.test, torch.device("cpu"))
    for run in runs:
        save_weights(run.model, tmp_path / f"{run.seed}.safetensors")
        again = load_weights(build(SMALL), tmp_path / f"{run.seed}.safetensors").eval()
        with torch.no_grad():
            assert torch.equal(run.model.eval()(images), again(images))


def test_compiled_seeds_train_as_their_own_compiled_fit_would(data):
    """Compiled, dropout's noise is drawn outside the graph: per seed from its own generator."""
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, rotation=5)
    together = fit_seeds(DROPOUT, config, SEEDS, data.train, data.val, runtime=Runtime("cpu", compile=True))
    seed = SEEDS[1]  # the second copy: its noise sits in the second half of each layer's channels
    alone = fit(build_seeded(DROPOUT, seed), config.replace(seed=seed), data.train, data.val, runtime=Runtime("cpu",
                                                                                                              compile=True))
    assert_same_run(alone, together[1].result)


@dataclasses.dataclass(frozen=True)
class Mystery:
    op = "mystery"


def test_what_cannot_be_fused_is_refused_with_a_clear_error(data, monkeypatch):
    assert isinstance(_fused_conv(Conv(8), 1, 2), torch.nn.Module)  # fields left at their defaults are fine
    with pytest.raises(SpecError, match="fused training does not support conv 'share'"):
        _fused_conv(Conv(8, share=0), 1, 2)
    with pytest.raises(SpecError, match=r"does not support the post op\(s\) \['in'\]"):
        _fused_conv(Conv(8, post=("in", "relu")), 1, 2)
    with pytest.raises(SpecError, match="does not support the 'mystery' layer"):
        FusedNet(ArchSpec((Conv(8), Mystery(), Conv(10, k=1, post=()), GAP())), 2)
    with pytest.raises(ConfigError, match="at least one seed"):
        fit_seeds(SMALL, TrainConfig(epochs=1), (), data.train, data.val, CPU)
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        fit_seeds(SMALL, TrainConfig(epochs=1, batch_size=32), SEEDS, data.train, data.val, runtime=Runtime("cpu",
                                                                                                            cuda_graph=True))
    monkeypatch.setattr(fusion, "FUSABLE_POST_OPS", frozenset({"relu"}))  # as if "bn" were a new post op
    with pytest.raises(SpecError, match=r"does not support the post op\(s\) \['bn'\]"):
        _fused_conv(Conv(8, post=("relu", "bn")), 1, 2)


@needs_cuda
def test_graphed_seeds_train_as_their_own_graphed_fit_would(data):
    config = TrainConfig(epochs=2, batch_size=30, lr=0.05, rotation=5, ema_epochs=1)
    together = fit_seeds(DROPOUT, config, SEEDS, data.train, data.val, runtime=Runtime(device="cuda", cuda_graph=True))
    for run in together:
        alone_model = build_seeded(DROPOUT, run.seed)
        alone = fit(alone_model, config.replace(seed=run.seed), data.train, data.val, runtime=Runtime(device="cuda",
                                                                                                      cuda_graph=True))
        assert_same_run(alone, run.result, alone_model.cpu(), run.model)
