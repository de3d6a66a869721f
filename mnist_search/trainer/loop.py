"""The training loop: device-resident data, batched on-device augmentation, one sync per epoch.

Speed comes from removing work, not from cleverness: images are normalised once and kept
on the training device, an epoch is a random permutation of indices, augmentation is one
batched affine warp, the LR schedule is precomputed, and loss/accuracy are summed on the
device and read once per epoch (plus one cheap divergence check every
``DIVERGENCE_CHECK_EVERY`` steps). On CUDA the step is a replayed CUDA graph (graphs.py).
The loop trains K copies of a network stacked on the channel axis (``fit_copies``, used by
fused.py to train several seeds at once); ``fit`` is its one-copy case.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_search.errors import ConfigError
from mnist_search.models.network import SeededDropout, draw_noise
from mnist_search.models.spec import INPUT_SHAPE
from mnist_search.trainer.augment import random_affine
from mnist_search.trainer.averaging import WeightAverage, decay_for
from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.data import MNIST_MEAN, MNIST_STD, Split
from mnist_search.trainer.fusion import FusedDropout
from mnist_search.trainer.graphs import capture_train_step, own_stream
from mnist_search.trainer.metrics import EpochMetrics
from mnist_search.trainer.runtime import Runtime
from mnist_search.trainer.schedules import lr_per_step, make_optimizer

EVAL_BATCH = 500
DIVERGENCE_CHECK_EVERY = 50
# Cross-entropy of a 10-way guess is ln(10) ~ 2.3; a window averaging far above that has blown up.
DIVERGED_LOSS = 50.0
BLACK = -MNIST_MEAN / MNIST_STD  # a 0-valued pixel after normalisation

EpochCallback = Callable[[int, EpochMetrics], None]
CopiesEpochCallback = Callable[[int, list[EpochMetrics | None]], None]  # one dict per copy, None once it diverged
BatchCallback = Callable[[int, int], None]


@dataclass
class FitResult:
    history: list[EpochMetrics] = field(default_factory=list)
    status: str = "completed"  # completed | diverged
    message: str = ""


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for, but no CUDA GPU is available; use device 'cpu' or 'auto'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def to_device(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised N x 1 x 28 x 28 float images and int64 labels on ``device``."""
    images = split.images.to(device).unsqueeze(1).float().div_(255).sub_(MNIST_MEAN).div_(MNIST_STD)
    return images, split.labels.to(device)


def fit(
    model: nn.Module,
    config: TrainConfig,
    train: Split,
    evaluate_on: Split,
    runtime: Runtime | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    teacher: nn.Module | None = None,
) -> FitResult:
    """Train ``model`` for ``config.epochs`` epochs, evaluating on ``evaluate_on`` after each.

    ``on_epoch(epoch, metrics)`` runs after every epoch's evaluation (epochs count from 1)
    and may raise to stop training (the search raises optuna.TrialPruned); ``on_batch(step,
    steps_per_epoch)`` runs after every batch, for progress bars.

    ``runtime`` (default: ``Runtime()``, the best device there is) says where and how: on
    CUDA the training step is captured in a CUDA graph and all work runs on a stream of its
    own, so trials trained from several threads share the GPU.

    With ``config.distill_weight`` w > 0 the loss is (1 - w) x cross-entropy + w x T^2 x the
    KL divergence from ``teacher``'s softened predictions (temperature T =
    ``config.distill_temperature``, Hinton et al. 2015), the teacher scoring the same augmented
    batch the network sees, in eval mode and without gradients.
    """
    report = None if on_epoch is None else lambda epoch, metrics: on_epoch(epoch, metrics[0])
    return fit_copies(model, [config], train, evaluate_on, runtime, on_epoch=report, on_batch=on_batch,
                      teacher=teacher)[0]


def fit_copies(
    model: nn.Module,
    configs: Sequence[TrainConfig],
    train: Split,
    evaluate_on: Split,
    runtime: Runtime | None = None,
    *,
    on_epoch: CopiesEpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    teacher: nn.Module | None = None,
) -> list[FitResult]:
    """``fit`` for a network of K = ``len(configs)`` copies stacked on the channel axis (a
    plain network is one copy): ``model`` maps B x K x 28 x 28 images to B x (K*10) logits.

    The configs may differ in their seed only. Copy i draws its batch order, augmentation
    and dropout masks from generators seeded by ``configs[i].seed``, in the order a run of
    it alone would, and its loss is its own batch mean, so each copy trains as it would
    alone. ``on_epoch(epoch, metrics)`` gets one EpochMetrics per copy, None for a copy that has
    diverged; a diverged copy stops being scored while the others train on (its weights
    may hold NaNs, but no copy reads another's). ``runtime.channels_last`` defaults to on for
    several copies on the CPU, where grouped convolutions train faster in it.
    """
    if not configs or any(c.replace(seed=configs[0].seed) != configs[0] for c in configs):
        raise ValueError("fit_copies needs at least one config, and the configs may differ only in their seed")
    if configs[0].distill_weight > 0 and teacher is None:
        raise ConfigError("distill_weight needs a teacher network to distil from")
    runtime = runtime or Runtime()
    device = runtime.device if isinstance(runtime.device, torch.device) else resolve_device(runtime.device)
    compile_model = runtime.compile
    use_graph = device.type == "cuda" if runtime.cuda_graph is None else runtime.cuda_graph
    if use_graph and device.type != "cuda":
        raise ConfigError("CUDA graphs need a CUDA device; train on the CPU without them")
    channels_last = runtime.channels_last
    if channels_last is None:
        # Compiled on the CPU, the step runs ~17% faster in channels_last (BENCHMARKS.md);
        # eager oneDNN training is faster contiguous, except for grouped convolutions, whose
        # contiguous backward pass is several times slower (bench/fused_seeds.py).
        channels_last = device.type == "cpu" and (compile_model or len(configs) > 1)
    with contextlib.ExitStack() as context:
        if device.type == "cuda":
            context.enter_context(own_stream(device))
        if compile_model:
            # A graph break inside ConvBlock (as dropout's generator draws once caused) makes
            # Dynamo compile ConvBlock.forward once per block, and past its default limit of 8
            # the remaining blocks ran eagerly, silently (separable networks did).
            # Twice the module count: more than the blocks there are, in training and evaluation.
            modules = sum(1 for _ in model.modules())
            context.enter_context(torch._dynamo.config.patch(recompile_limit=max(8, 2 * modules)))
        try:
            return _fit(model, list(configs), train, evaluate_on, device, on_epoch, on_batch, compile_model,
                        use_graph, channels_last, runtime.bf16, teacher if configs[0].distill_weight > 0 else None)
        finally:
            for module in model.modules():
                if isinstance(module, SeededDropout):
                    module.noise = None  # the last step's, of no use after training


def _fit(model, configs, train, evaluate_on, device, on_epoch, on_batch, compile_model, use_graph, channels_last,
         bf16, teacher) -> list[FitResult]:
    config, copies = configs[0], len(configs)
    model.to(device)
    if teacher is not None:
        teacher = teacher.to(device).eval().requires_grad_(False)
    train_x, train_y = to_device(train, device)
    eval_x, eval_y = to_device(evaluate_on, device)
    order_generators = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]
    # Augmentation and dropout draw from each run's own generators, never from the shared default one.
    augment_generators = [torch.Generator(device=device).manual_seed(c.seed + 1) for c in configs]
    dropout_generators = _dropout_generators(configs, device, augment_generators)
    _give_dropout_generators(model, dropout_generators)

    # A compiled step recompiles for every new batch shape and a graph has one fixed shape,
    # so both drop the ragged last batch of each epoch (at most batch_size - 1 random images).
    drop_last = compile_model or use_graph
    steps_per_epoch = len(train) // config.batch_size if drop_last else math.ceil(len(train) / config.batch_size)
    if steps_per_epoch == 0:
        raise ConfigError(f"batch size {config.batch_size} is larger than the {len(train)} training images")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    if compile_model:
        # Dynamo keys its compiled graphs on SpecNet.forward's code, shared by every
        # architecture: a worker that had compiled 8 trials hit the recompile limit and
        # silently trained the rest eagerly (seen in the CPU search's log). Each fit
        # compiles a new network, so the previous fits' graphs are dropped first.
        torch.compiler.reset()
    # Compiled, dropout takes noise drawn outside the graph (SeededDropout says why).
    batch_shape = (config.batch_size, copies * INPUT_SHAPE[0], *INPUT_SHAPE[1:])
    dropout_shapes = _dropout_input_shapes(model, batch_shape, device, memory_format) if compile_model else {}
    step_model = torch.compile(model) if compile_model else model
    average = WeightAverage(model, decay_for(config.ema_epochs, steps_per_epoch)) if config.ema_epochs else None
    optimizer = make_optimizer(model.parameters(), config, lr_on_device=device if use_graph else None)
    lrs = lr_per_step(config, steps_per_epoch)
    loss_sum = torch.zeros(copies, device=device)
    window_loss = torch.zeros(copies, device=device)
    correct = torch.zeros(copies, device=device, dtype=torch.long)

    def train_step(index: torch.Tensor) -> None:
        """One batch per copy (``index`` is copies x batch), on the device only: no host
        synchronisation, so it can be graph-captured."""
        batches = []
        for rows, generator in zip(index, augment_generators, strict=True):
            images = train_x[rows]
            if config.augments:
                images = random_affine(
                    images, generator, config.rotation, config.translate, (config.scale_min, config.scale_max),
                    fill=BLACK,
                )
            batches.append(images)
        images = batches[0] if copies == 1 else torch.cat(batches, dim=1)
        labels = train_y[index].T  # batch x copies
        for dropout, shape in dropout_shapes.items():
            dropout.noise = _draw_noise(shape, dropout_generators, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            logits = step_model(images.contiguous(memory_format=memory_format)).reshape(len(labels), copies, -1)
            # Each copy's own batch mean, summed: each copy's gradient is the one it would get alone.
            losses = F.cross_entropy(logits.transpose(1, 2), labels, label_smoothing=config.label_smoothing,
                                     reduction="none").mean(0)
            if teacher is not None:
                losses = _distilled(losses, logits, teacher, batches, config)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        if average is not None:
            average.update()
        batch_loss = losses.detach().float() * len(labels)
        loss_sum.add_(batch_loss)
        window_loss.add_(batch_loss)
        correct.add_((logits.detach().argmax(2) == labels).sum(0))

    run_step = train_step
    if use_graph:
        run_step = capture_train_step(train_step, (copies, config.batch_size), model, optimizer, augment_generators,
                                      (loss_sum, window_loss, correct))
        if average is not None:
            average.restart()  # the capture's warm-up steps moved it; the weights were put back
    set_lr = _lr_setter(optimizer)

    results = [FitResult() for _ in configs]
    training = list(range(copies))  # the copies that have not diverged

    def stop_diverged(losses: list[float], epoch: int, step: int) -> None:
        for i in [i for i in training if _diverged(losses[i])]:
            _stop_diverged(results[i], epoch, step)
            training.remove(i)

    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        first_step = (epoch - 1) * steps_per_epoch
        model.train()
        loss_sum.zero_()
        correct.zero_()
        window_loss.zero_()
        seen = 0
        orders = torch.stack([torch.randperm(len(train), device=device, generator=g) for g in order_generators])
        for step in range(steps_per_epoch):
            set_lr(lrs[first_step + step])
            if average is not None:
                average.prepare(first_step + step)
            index = orders[:, step * config.batch_size : (step + 1) * config.batch_size]
            run_step(index)
            seen += index.shape[1]
            if (step + 1) % DIVERGENCE_CHECK_EVERY == 0:
                stop_diverged([w / (DIVERGENCE_CHECK_EVERY * config.batch_size) for w in window_loss.tolist()],
                              epoch, step + 1)
                if not training:
                    return results
                window_loss.zero_()
            if on_batch is not None:
                on_batch(step + 1, steps_per_epoch)
        train_losses = [total / seen for total in loss_sum.tolist()]
        stop_diverged(train_losses, epoch, steps_per_epoch)
        if not training:
            return results
        scores = evaluate_copies(average.model if average else model, eval_x, eval_y, copies)
        # The raw weights' accuracy too, so every averaged run measures what averaging changed.
        raw_scores = evaluate_copies(model, eval_x, eval_y, copies) if average is not None else None
        corrects = correct.tolist()
        seconds = time.perf_counter() - started
        epoch_metrics: list[EpochMetrics | None] = [None] * copies
        for i in training:
            metrics = EpochMetrics(
                epoch=epoch, train_loss=train_losses[i], train_acc=100.0 * corrects[i] / seen,
                eval_loss=scores[i][0], eval_acc=scores[i][1], lr=lrs[first_step], seconds=seconds,
                raw_eval_acc=raw_scores[i][1] if raw_scores is not None else None,
            )
            results[i].history.append(metrics)
            epoch_metrics[i] = metrics
        if on_epoch is not None:
            on_epoch(epoch, epoch_metrics)
    if average is not None:
        average.copy_into_source()
    return results


def _distilled(losses: torch.Tensor, logits: torch.Tensor, teacher: nn.Module, batches: list[torch.Tensor],
               config: TrainConfig) -> torch.Tensor:
    """Each copy's loss mixed with the KL divergence from the teacher's softened predictions on
    that copy's own augmented batch; T^2 keeps the soft term's gradients on the hard term's scale."""
    with torch.no_grad():
        targets = torch.stack([teacher(images).float() for images in batches], dim=1)  # batch x copies x 10
    temperature, weight = config.distill_temperature, config.distill_weight
    soft = F.kl_div(F.log_softmax(logits.float() / temperature, dim=2), F.log_softmax(targets / temperature, dim=2),
                    reduction="none", log_target=True).sum(2).mean(0) * temperature**2
    return (1 - weight) * losses + weight * soft


def _give_dropout_generators(model: nn.Module, generators: list) -> None:
    for module in model.modules():
        if isinstance(module, FusedDropout):
            module.generators = generators
        elif isinstance(module, SeededDropout):
            if len(generators) != 1:
                raise RuntimeError("a network of several copies needs FusedDropout, one generator per copy")
            module.generator = generators[0]


def _dropout_generators(configs: Sequence[TrainConfig], device: torch.device,
                        augment_generators: list[torch.Generator]) -> list:
    """Each run's dropout generator: on the CPU a NumPy SFC64 one of its own (SeededDropout says
    why); on CUDA the run's augmentation generator, which a CUDA graph can replay."""
    if device.type == "cpu":
        return [np.random.Generator(np.random.SFC64(c.seed + 1)) for c in configs]
    return augment_generators


def _draw_noise(shape: torch.Size, generators: list, device: torch.device) -> torch.Tensor:
    """Dropout noise for a layer of input ``shape`` in compiled training: each copy's channels
    from its own generator, as uniform floats."""
    if len(generators) == 1:
        return draw_noise(shape, generators[0], device, tickets=False)
    copy_shape = (shape[0], shape[1] // len(generators), *shape[2:])
    return torch.cat([draw_noise(copy_shape, g, device, tickets=False) for g in generators], dim=1)


@torch.no_grad()
def _dropout_input_shapes(model: nn.Module, batch_shape: tuple[int, ...], device: torch.device,
                          memory_format: torch.memory_format) -> dict[SeededDropout, torch.Size]:
    """The input shape of each dropout layer for a training batch, from one eval-mode pass
    (so BatchNorm's running statistics are left alone)."""
    shapes = {}
    hooks = [module.register_forward_pre_hook(lambda layer, args: shapes.__setitem__(layer, args[0].shape))
             for module in model.modules() if isinstance(module, SeededDropout)]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(batch_shape, device=device).contiguous(memory_format=memory_format))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return shapes


def _lr_setter(optimizer: torch.optim.Optimizer) -> Callable[[float], None]:
    """Writes the step's LR: in place into a device tensor (what a CUDA graph reads), else as a number."""
    group = optimizer.param_groups[0]
    if torch.is_tensor(group["lr"]):
        return group["lr"].fill_

    def set_number(lr: float) -> None:
        group["lr"] = lr

    return set_number


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) of ``model`` in eval mode on device-resident data."""
    return evaluate_copies(model, images, labels, 1)[0]


@torch.no_grad()
def evaluate_copies(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    copies: int) -> list[tuple[float, float]]:
    """Mean cross-entropy and accuracy (%) of each of ``model``'s ``copies`` stacked copies
    (see ``fit_copies``) in eval mode on device-resident data; every copy sees every image."""
    model.eval()
    if images.device.type == "cpu":
        # oneDNN runs these small convolutions ~2x faster in channels_last for inference
        # on the CPU (measured on seed001-exp5, 10k images), but training is faster
        # contiguous; converting a copy leaves the training model (and any compiled
        # graph guarding on its strides) untouched.
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    loss_sum = torch.zeros(copies, device=images.device)
    correct = torch.zeros(copies, device=images.device, dtype=torch.long)
    for start in range(0, len(labels), EVAL_BATCH):
        target = labels[start : start + EVAL_BATCH]
        logits = model(images[start : start + EVAL_BATCH].expand(-1, copies, -1, -1))
        logits = logits.reshape(len(target), copies, -1)
        targets = target[:, None].expand(-1, copies)
        loss_sum += F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(0)
        correct += (logits.argmax(2) == targets).sum(0)
    return [(total / len(labels), 100.0 * right / len(labels))
            for total, right in zip(loss_sum.tolist(), correct.tolist(), strict=True)]


def _diverged(mean_loss: float) -> bool:
    return not math.isfinite(mean_loss) or mean_loss > DIVERGED_LOSS


def _stop_diverged(result: FitResult, epoch: int, step: int) -> FitResult:
    result.status = "diverged"
    result.message = (
        f"training diverged in epoch {epoch} at step {step} (loss not finite or above {DIVERGED_LOSS:g}); "
        "lower the learning rate"
    )
    return result
