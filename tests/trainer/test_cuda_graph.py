"""The CUDA-graph training path. Runs where a GPU is present (the lent GPU machine); on a
CPU-only machine only the checks that need no GPU run."""

import threading

import pytest
import torch

from mnist_search.errors import ConfigError
from mnist_search.models import GAP, ArchSpec, Conv, MaxPool
from mnist_search.trainer import TrainConfig, build_seeded, fit, load_mnist, should_compile
from mnist_search.trainer.graphs import own_stream
from mnist_search.trainer.runtime import Runtime

SMALL = ArchSpec((Conv(6), MaxPool(2), Conv(8), MaxPool(2), Conv(10, k=1, post=()), GAP()))
DROPOUT = ArchSpec((Conv(6, dropout=0.1), MaxPool(2), Conv(8, dropout=0.1), MaxPool(2), Conv(10, k=1, post=()), GAP()))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def data(tiny_mnist):
    return load_mnist(tiny_mnist, val_size=100, download=False)


def test_cuda_graphs_on_the_cpu_are_a_user_error(data):
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        fit(build_seeded(SMALL, 0), TrainConfig(epochs=1, batch_size=32), data.train, data.val,
            runtime=Runtime(device="cpu", cuda_graph=True))


def test_auto_compiles_long_cpu_runs_only():
    config = TrainConfig(epochs=15, batch_size=128)
    assert should_compile("auto", config, 50_000, "cpu")
    assert not should_compile("auto", config, 50_000, "cuda")  # the CUDA graph replaces it
    assert not should_compile("auto", config, 1_000, "cpu")
    assert should_compile("on", config, 1_000, "cuda") and not should_compile("off", config, 50_000, "cpu")


def history_without_time(result):
    return [{k: v for k, v in m.to_dict().items() if k != "seconds"} for m in result.history]


@needs_cuda
@pytest.mark.parametrize("optimizer, scheduler", [("sgd", "onecycle"), ("adamw", "cosine"), ("sgd", "step")])
def test_graph_replay_trains_like_eager_steps(data, optimizer, scheduler):
    """Same weights, same batches, no randomness inside the step: the graph must give the eager result."""
    # 300 training images, batch 30: no ragged last batch, which eager steps keep and a graph drops.
    config = TrainConfig(epochs=3, batch_size=30, optimizer=optimizer, lr=0.03 if optimizer == "sgd" else 0.003,
                         momentum=0.9, weight_decay=1e-4, scheduler=scheduler, step_size=1, seed=3)
    eager = fit(build_seeded(SMALL, 3), config, data.train, data.val, runtime=Runtime(device="cuda", cuda_graph=False,
                                                                                      compile=False))
    assert len(data.train) % config.batch_size == 0
    graphed = fit(build_seeded(SMALL, 3), config, data.train, data.val, runtime=Runtime(device="cuda", cuda_graph=True))
    for e, g in zip(history_without_time(eager), history_without_time(graphed)):
        assert g.lr == pytest.approx(e.lr)
        assert g.train_loss == pytest.approx(e.train_loss, rel=2e-3)
        assert g.eval_acc == pytest.approx(e.eval_acc, abs=2.0)


@needs_cuda
def test_the_weight_average_updates_inside_the_graph_like_eager_steps(data):
    """The average's update is captured with the step; the capture's warm-up must not leak into it."""
    config = TrainConfig(epochs=3, batch_size=30, optimizer="adamw", lr=0.003, scheduler="cosine", ema_epochs=0.5,
                         seed=3)
    eager = fit(build_seeded(SMALL, 3), config, data.train, data.val, runtime=Runtime(device="cuda", cuda_graph=False))
    graphed = fit(build_seeded(SMALL, 3), config, data.train, data.val, runtime=Runtime(device="cuda", cuda_graph=True))
    for e, g in zip(eager.history, graphed.history):
        assert g.train_loss == pytest.approx(e.train_loss, rel=2e-3)
        assert g.eval_loss == pytest.approx(e.eval_loss, rel=2e-2)
        assert g.raw_eval_acc == pytest.approx(e.raw_eval_acc, abs=2.0)


@needs_cuda
def test_graphed_training_with_augmentation_learns_and_is_seeded(data):
    config = TrainConfig(epochs=8, batch_size=30, lr=0.1, scheduler="onecycle", rotation=8, translate=0.05, seed=0)
    first = fit(build_seeded(DROPOUT, 0), config, data.train, data.val, runtime=Runtime(device="cuda"))
    assert first.history[-1].eval_acc >= 90.0
    second = fit(build_seeded(DROPOUT, 0), config, data.train, data.val, runtime=Runtime(device="cuda"))
    assert [m.train_loss for m in second.history] == pytest.approx([m.train_loss for m in first.history],
                                                                      rel=1e-3)


@needs_cuda
def test_trials_trained_side_by_side_in_threads_train_as_they_would_alone(data):
    """`run --jobs K` trains K trials at once, each on its own CUDA stream and graph; dropout and
    augmentation draw from each run's own generator, so a run does not depend on its neighbours."""
    config = TrainConfig(epochs=4, batch_size=30, lr=0.1, scheduler="onecycle", rotation=5)
    alone = {seed: fit(build_seeded(DROPOUT, seed), config.replace(seed=seed), data.train, data.val,
                       runtime=Runtime(device="cuda"))
             for seed in range(4)}
    together = {}

    def train(seed: int) -> None:
        together[seed] = fit(build_seeded(DROPOUT, seed), config.replace(seed=seed), data.train, data.val,
                             runtime=Runtime(device="cuda"))

    threads = [threading.Thread(target=train, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(together) == [0, 1, 2, 3]
    for seed, result in together.items():
        assert result.status == "completed"
        assert [m.train_loss for m in result.history] == pytest.approx(
            [m.train_loss for m in alone[seed].history], rel=1e-2)  # float atomics in cuDNN
        assert [m.eval_acc for m in result.history] == pytest.approx(
            [m.eval_acc for m in alone[seed].history], abs=2.0)


@needs_cuda
def test_a_training_never_gets_the_stream_of_another_running_one():
    """PyTorch hands out its 32 pooled streams round-robin: the 32nd stream after ours is ours again."""
    device = torch.device("cuda")
    with own_stream(device) as first:
        for _ in range(31):
            torch.cuda.Stream(device)
        with own_stream(device) as second:
            assert second.cuda_stream != first.cuda_stream
