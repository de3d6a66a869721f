import functools

import pytest
import torch
import torch.nn.functional as F

from mnist_search.errors import ConfigError
from mnist_search.models import GAP, ArchSpec, Conv, MaxPool, build
from mnist_search.models.weights import load_weights, save_weights
from mnist_search.trainer import TrainConfig, build_seeded, fit, load_mnist, resolve_device, to_device
from mnist_search.trainer.loop import evaluate
from mnist_search.trainer.runtime import Runtime

CPU = Runtime("cpu")

SMALL = ArchSpec((Conv(6), MaxPool(2), Conv(8), MaxPool(2), Conv(10, k=1, post=()), GAP()))


@pytest.fixture
def data(tiny_mnist):
    return load_mnist(tiny_mnist, val_size=100, download=False)


def test_callback_runs_once_per_epoch_and_history_has_every_metric(data):
    calls = []
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, rotation=10, seed=1)
    result = fit(build_seeded(SMALL, 1), config, data.train, data.val, CPU,
                 on_epoch=lambda epoch, metrics: calls.append((epoch, metrics.eval_acc)))
    assert [epoch for epoch, _ in calls] == [1, 2, 3]
    assert result.status == "completed" and len(result.history) == 3
    assert set(result.history[0].to_dict()) == {"epoch", "train_loss", "train_acc", "eval_loss", "eval_acc", "lr",
                                                "seconds"}
    assert [acc for _, acc in calls] == [m.eval_acc for m in result.history]


def test_it_learns_the_synthetic_digits(data):
    config = TrainConfig(epochs=8, batch_size=32, lr=0.1, scheduler="onecycle", seed=0)
    result = fit(build_seeded(SMALL, 0), config, data.train, data.val, CPU)
    assert result.history[-1].eval_acc >= 90.0  # chance is 10%


def test_a_raising_callback_stops_training(data):
    class Stop(Exception):
        pass

    def stop_after_two(epoch, metrics):
        if epoch == 2:
            raise Stop

    seen = []
    with pytest.raises(Stop):
        fit(build_seeded(SMALL, 0), TrainConfig(epochs=5, batch_size=50), data.train, data.val, CPU,
            on_epoch=lambda e, m: (seen.append(e), stop_after_two(e, m)))
    assert seen == [1, 2]


def test_divergence_stops_the_run_with_a_clear_status(data):
    config = TrainConfig(epochs=5, batch_size=16, optimizer="sgd", lr=1e6, momentum=0.0)
    spec = ArchSpec((Conv(6, post=("relu",)), MaxPool(2), Conv(10, k=1, post=()), GAP()))
    calls = []
    result = fit(build_seeded(spec, 0), config, data.train, data.val, CPU, on_epoch=lambda e, m: calls.append(e))
    assert result.status == "diverged"
    assert "diverged in epoch 1" in result.message and "learning rate" in result.message
    assert calls == []  # stopped inside the first epoch, before wasting more


def test_seeded_cpu_runs_are_reproducible(data):
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, rotation=8, translate=0.05, seed=5)
    first = fit(build_seeded(SMALL, 5), config, data.train, data.val, CPU).history
    second = fit(build_seeded(SMALL, 5), config, data.train, data.val, CPU).history
    def drop_time(h):
        return [{k: v for k, v in m.to_dict().items() if k != "seconds"} for m in h]
    assert drop_time(first) == drop_time(second)
    other = fit(build_seeded(SMALL, 6), config.replace(seed=6), data.train, data.val, CPU).history
    assert drop_time(other) != drop_time(first)


def test_saved_weights_reload_to_identical_outputs(data, tmp_path):
    model = build_seeded(SMALL, 0)
    fit(model, TrainConfig(epochs=1, batch_size=32), data.train, data.val, CPU)
    save_weights(model, tmp_path / "w.safetensors")
    again = load_weights(build(SMALL), tmp_path / "w.safetensors")
    images, labels = to_device(data.test, torch.device("cpu"))
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(images), again(images))
    assert evaluate(model, images, labels) == evaluate(again, images, labels)


def test_evaluation_leaves_the_training_model_untouched(data):
    model = build_seeded(SMALL, 0)
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    images, labels = to_device(data.val, torch.device("cpu"))
    evaluate(model, images, labels)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key][0]) and value.stride() == before[key][1]


def test_cuda_without_a_gpu_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.fixture
def dynamo_without_inductor(monkeypatch):
    """For tests of what Dynamo does (graphs, breaks, recompiles), which does not depend on the
    backend: AOTAutograd without Inductor's C++ builds compiles in seconds, not half a minute.
    test_fused's compiled test trains through Inductor."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


def test_one_process_can_compile_more_architectures_than_dynamos_recompile_limit(data, dynamo_without_inductor):
    """A search worker compiles a new network per trial; with a limit of 1, the second would fall back to eager."""
    other = ArchSpec((Conv(4), MaxPool(2), Conv(6), Conv(8), MaxPool(2), Conv(10, k=1, post=()), GAP()))
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, seed=0)
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        for spec in (SMALL, other, SMALL):
            assert fit(build_seeded(spec, 0), config, data.train, data.val, runtime=Runtime("cpu",
                                                                                            compile=True)).status == "completed"


def test_compiled_dropout_is_one_graph_drawn_from_the_runs_own_generator(data, dynamo_without_inductor):
    """Dropout's generator draw split the compiled graph at every block (12 blocks: past Dynamo's
    limit of 8, and slower than eager even within it); its noise is now drawn outside the graph."""
    layers = [Conv(4, dropout=0.05), *(Conv(4 + i, k=1, dropout=0.05) for i in range(10)), Conv(10, k=1, post=()),
              GAP()]
    spec = ArchSpec(tuple(layers))
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, seed=0)
    noise_seen = []

    def train(model):
        dropout = model.blocks[0].dropout
        return fit(model, config, data.train, data.val, runtime=Runtime("cpu", compile=True),
                   on_batch=lambda step, steps: noise_seen.append(dropout.noise))

    first_model = build_seeded(spec, 0)
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        first = train(first_model).history
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch.equal(torch.rand(3), expected)  # training drew nothing from the default generator
    assert len(noise_seen) == len(data.train) // 64 and not torch.equal(noise_seen[0], noise_seen[1])  # fresh each step
    assert all(module.noise is None for module in first_model.modules() if hasattr(module, "noise"))
    def drop_time(h):
        return [{k: v for k, v in m.to_dict().items() if k != "seconds"} for m in h]
    assert drop_time(train(build_seeded(spec, 0)).history) == drop_time(first)  # seeded compiled runs repeat
    half = len(noise_seen) // 2
    assert all(torch.equal(a, b) for a, b in zip(noise_seen[:half], noise_seen[half:], strict=True))


def test_dropout_draws_from_the_runs_own_generator(data):
    """Dropout masks come from the run's generator: the shared default one is left alone, and
    seeded runs repeat exactly."""
    spec = ArchSpec((Conv(6, dropout=0.2), MaxPool(2), Conv(8, dropout=0.2), MaxPool(2), Conv(10, k=1, post=()),
                     GAP()))
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, rotation=5, seed=4)
    first_model = build_seeded(spec, 4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = fit(first_model, config, data.train, data.val, CPU).history
    assert torch.equal(torch.rand(3), expected)  # training drew nothing from the default generator
    second = fit(build_seeded(spec, 4), config, data.train, data.val, CPU).history
    def drop_time(h):
        return [{k: v for k, v in m.to_dict().items() if k != "seconds"} for m in h]
    assert drop_time(first) == drop_time(second)
    model = build_seeded(spec, 4)
    dropout = model.blocks[0].dropout
    dropout.generator = torch.Generator().manual_seed(0)
    x = torch.ones(1000, 6, 4, 4)
    masked = dropout(x)
    assert set(masked.unique().tolist()) <= {0.0, 1 / 0.8}
    assert 0.15 < (masked == 0).float().mean().item() < 0.25
    dropout.generator = torch.Generator().manual_seed(0)
    assert torch.equal(dropout(x), masked)  # the same generator state gives the same mask
    model.eval()
    assert torch.equal(model.blocks[0].dropout(x), x)


def test_cpu_dropout_masks_come_from_a_numpy_generator_at_rate_p():
    """On the CPU the run's dropout generator is NumPy's: its 16-bit tickets keep each element
    with probability 1 - p (to 1/131072), the same generator state gives the same mask, and
    the layer's output is the plain reference x * mask / (1 - p)."""
    import numpy as np

    from mnist_search.models.network import SeededDropout, keep_mask

    x = torch.randn(400, 6, 10, 10)
    for p in (0.02, 0.2, 0.5):
        mask = keep_mask(x, p, np.random.Generator(np.random.SFC64(7)))
        assert mask.shape == x.shape and mask.dtype == torch.bool
        assert abs((~mask).float().mean().item() - p) < 0.01
        assert torch.equal(mask, keep_mask(x, p, np.random.Generator(np.random.SFC64(7))))
        assert not torch.equal(mask, keep_mask(x, p, np.random.Generator(np.random.SFC64(8))))
        dropout = SeededDropout(p)
        dropout.generator = np.random.Generator(np.random.SFC64(7))
        assert torch.equal(dropout(x), x * mask * (1 / (1 - p)))
    channels_last = x.contiguous(memory_format=torch.channels_last)
    mask = keep_mask(channels_last, 0.2, np.random.Generator(np.random.SFC64(7)))
    # drawn in memory order: the channels-last mask's bytes are the contiguous mask's draws
    flat = keep_mask(torch.empty(x.numel()), 0.2, np.random.Generator(np.random.SFC64(7)))
    assert torch.equal(mask.permute(0, 2, 3, 1).reshape(-1), flat)


def test_distillation_mixes_the_teachers_soft_targets_into_the_loss(data):
    """distill_weight w: the loss is (1 - w) CE + w T^2 KL(teacher || student) on the batch the
    student sees. w = 1 with a teacher that is the student's own frozen copy starts at zero
    soft loss; a teacher is required; fused seeds distil each copy like its own fit."""
    from mnist_search.trainer.loop import _distilled

    spec = ArchSpec((Conv(6), MaxPool(2), Conv(8), MaxPool(2), Conv(10, k=1, post=()), GAP()))
    student = build_seeded(spec, 0)
    teacher = build_seeded(spec, 1).eval()
    config = TrainConfig(distill_weight=0.3, distill_temperature=2.0)
    images = torch.randn(16, 1, 28, 28)
    hard = torch.full((1,), 2.0)
    logits = student(images).reshape(16, 1, 10)
    mixed = _distilled(hard, logits, teacher, [images], config)
    t = teacher(images) / 2.0
    expected_soft = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(logits[:, 0] / 2.0, 1))).sum(1).mean() * 4
    assert torch.allclose(mixed, 0.7 * hard + 0.3 * expected_soft, atol=1e-5)
    student.eval()
    own = student(images).reshape(16, 1, 10)
    same = _distilled(torch.zeros(1), own, student, [images], config.replace(distill_weight=1.0))
    assert abs(same.item()) < 1e-5
    with pytest.raises(ConfigError, match="needs a teacher"):
        fit(build_seeded(spec, 0), TrainConfig(epochs=1, distill_weight=0.5), data.train, data.val, CPU)
    with pytest.raises(ConfigError, match="distill_weight must be in"):
        TrainConfig(distill_weight=1.5)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, rotation=5, distill_weight=0.5, seed=3)
    before = [p.clone() for p in teacher.parameters()]
    result = fit(build_seeded(spec, 3), config, data.train, data.val, CPU, teacher=teacher)
    assert result.status == "completed" and len(result.history) == 2
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # the teacher is not trained
    from mnist_search.trainer import fit_seeds

    together = fit_seeds(spec, config, (3, 4), data.train, data.val, runtime=Runtime("cpu", channels_last=False),
                         teacher=teacher)
    alone = fit(build_seeded(spec, 3), config, data.train, data.val, CPU, teacher=teacher)
    assert together[0].result.history[-1].train_loss == pytest.approx(alone.history[-1].train_loss, rel=1e-3)
