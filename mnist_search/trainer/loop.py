"""The training loop: device-resident data, batched on-device augmentation, one sync per epoch.

Speed comes from removing work, not from cleverness: images are normalised once and kept
on the training device, an epoch is a random permutation of indices, augmentation is one
batched affine warp, the LR schedule is precomputed, and loss/accuracy are summed on the
device and read once per epoch (plus one cheap divergence check every
``DIVERGENCE_CHECK_EVERY`` steps). On CUDA the step is a replayed CUDA graph (graphs.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mnist_search.errors import ConfigError
from mnist_search.models.network import SeededDropout
from mnist_search.models.spec import INPUT_SHAPE
from mnist_search.trainer.augment import random_affine
from mnist_search.trainer.averaging import WeightAverage, decay_for
from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.data import MNIST_MEAN, MNIST_STD, Split
from mnist_search.trainer.graphs import capture_train_step, own_stream
from mnist_search.trainer.schedules import lr_per_step, make_optimizer

EVAL_BATCH = 500
DIVERGENCE_CHECK_EVERY = 50
# Cross-entropy of a 10-way guess is ln(10) ~ 2.3; a window averaging far above that has blown up.
DIVERGED_LOSS = 50.0
BLACK = -MNIST_MEAN / MNIST_STD  # a 0-valued pixel after normalisation

EpochCallback = Callable[[int, dict], None]
BatchCallback = Callable[[int, int], None]


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    status: str = "completed"  # completed | diverged
    message: str = ""

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
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
    device: str | torch.device = "auto",
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    compile_model: bool = False,
    cuda_graph: bool | None = None,
    channels_last: bool | None = None,
    bf16: bool = False,
) -> FitResult:
    """Train ``model`` for ``config.epochs`` epochs, evaluating on ``evaluate_on`` after each.

    ``on_epoch(epoch, metrics)`` runs after every epoch's evaluation (epochs count from 1)
    and may raise to stop training (the search raises optuna.TrialPruned); ``on_batch(step,
    steps_per_epoch)`` runs after every batch, for progress bars.

    On CUDA the training step is captured in a CUDA graph (``cuda_graph``, default: on for
    CUDA) and all work runs on a stream of its own, so trials trained from several threads
    share the GPU. ``channels_last`` (default: only for compiled CPU training) and ``bf16``
    autocast are there to be measured (bench/search_gpu.py).
    """
    device = device if isinstance(device, torch.device) else resolve_device(device)
    use_graph = device.type == "cuda" if cuda_graph is None else cuda_graph
    if use_graph and device.type != "cuda":
        raise ConfigError("CUDA graphs need a CUDA device; train on the CPU without them")
    if channels_last is None:
        # Compiled on the CPU, the step runs ~17% faster in channels_last (BENCHMARKS.md);
        # eager oneDNN training is faster contiguous.
        channels_last = compile_model and device.type == "cpu"
    with contextlib.ExitStack() as context:
        if device.type == "cuda":
            context.enter_context(own_stream(device))
        if compile_model:
            # A graph break inside ConvBlock (as dropout's generator draws once caused) makes
            # Dynamo compile ConvBlock.forward once per block, and past its default limit of 8
            # the remaining blocks ran eagerly, silently (session 7's separable networks).
            # Twice the module count: more than the blocks there are, in training and evaluation.
            modules = sum(1 for _ in model.modules())
            context.enter_context(torch._dynamo.config.patch(recompile_limit=max(8, 2 * modules)))
        try:
            return _fit(model, config, train, evaluate_on, device, on_epoch, on_batch, compile_model, use_graph,
                        channels_last, bf16)
        finally:
            for module in model.modules():
                if isinstance(module, SeededDropout):
                    module.noise = None  # the last step's, of no use after training


def _fit(model, config, train, evaluate_on, device, on_epoch, on_batch, compile_model, use_graph, channels_last,
         bf16) -> FitResult:
    model.to(device)
    train_x, train_y = to_device(train, device)
    eval_x, eval_y = to_device(evaluate_on, device)
    order_generator = torch.Generator(device=device).manual_seed(config.seed)
    # Augmentation and dropout draw from this run's own generator, never from the shared default one.
    augment_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    for module in model.modules():
        if isinstance(module, SeededDropout):
            module.generator = augment_generator

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
    dropout_shapes = _dropout_input_shapes(model, (config.batch_size, *INPUT_SHAPE), device, memory_format) \
        if compile_model else {}
    step_model = torch.compile(model) if compile_model else model
    average = WeightAverage(model, decay_for(config.ema_epochs, steps_per_epoch)) if config.ema_epochs else None
    optimizer = make_optimizer(model.parameters(), config, lr_on_device=device if use_graph else None)
    lrs = lr_per_step(config, steps_per_epoch)
    loss_sum = torch.zeros((), device=device)
    window_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)

    def train_step(index: torch.Tensor) -> None:
        """One batch, on the device only: no host synchronisation, so it can be graph-captured."""
        images, labels = train_x[index], train_y[index]
        if config.augments:
            images = random_affine(
                images, augment_generator, config.rotation, config.translate, (config.scale_min, config.scale_max),
                fill=BLACK,
            )
        for dropout, shape in dropout_shapes.items():
            dropout.noise = torch.rand(shape, device=device, generator=augment_generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            logits = step_model(images.contiguous(memory_format=memory_format))
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update()
        batch_loss = loss.detach().float() * len(labels)
        loss_sum.add_(batch_loss)
        window_loss.add_(batch_loss)
        correct.add_((logits.detach().argmax(1) == labels).sum())

    run_step = train_step
    if use_graph:
        run_step = capture_train_step(train_step, config.batch_size, model, optimizer, augment_generator,
                                      (loss_sum, window_loss, correct))
        if average is not None:
            average.restart()  # the capture's warm-up steps moved it; the weights were put back
    set_lr = _lr_setter(optimizer)

    result = FitResult()
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        first_step = (epoch - 1) * steps_per_epoch
        model.train()
        loss_sum.zero_()
        correct.zero_()
        window_loss.zero_()
        seen = 0
        order = torch.randperm(len(train), device=device, generator=order_generator)
        for step in range(steps_per_epoch):
            set_lr(lrs[first_step + step])
            if average is not None:
                average.prepare(first_step + step)
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            run_step(index)
            seen += len(index)
            if (step + 1) % DIVERGENCE_CHECK_EVERY == 0:
                if _diverged(window_loss.item() / (DIVERGENCE_CHECK_EVERY * config.batch_size)):
                    return _stop_diverged(result, epoch, step + 1)
                window_loss.zero_()
            if on_batch is not None:
                on_batch(step + 1, steps_per_epoch)
        train_loss = loss_sum.item() / seen
        if _diverged(train_loss):
            return _stop_diverged(result, epoch, steps_per_epoch)
        eval_loss, eval_acc = evaluate(average.model if average else model, eval_x, eval_y)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": 100.0 * correct.item() / seen,
            "eval_loss": eval_loss,
            "eval_acc": eval_acc,
            "lr": lrs[first_step],
            "seconds": time.perf_counter() - started,
        }
        if average is not None:
            # The raw weights' accuracy too, so every averaged run measures what averaging changed.
            metrics["raw_eval_acc"] = evaluate(model, eval_x, eval_y)[1]
        result.history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    if average is not None:
        average.copy_into_source()
    return result


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


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) of ``model`` in eval mode on device-resident data."""
    model.eval()
    if images.device.type == "cpu":
        # oneDNN runs these small convolutions ~2x faster in channels_last for inference
        # on the CPU (measured on seed001-exp5, 10k images), but training is faster
        # contiguous; converting a copy leaves the training model (and any compiled
        # graph guarding on its strides) untouched.
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for start in range(0, len(labels), EVAL_BATCH):
        logits = model(images[start : start + EVAL_BATCH])
        target = labels[start : start + EVAL_BATCH]
        loss_sum += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    return loss_sum.item() / len(labels), 100.0 * correct.item() / len(labels)


def _diverged(mean_loss: float) -> bool:
    return not math.isfinite(mean_loss) or mean_loss > DIVERGED_LOSS


def _stop_diverged(result: FitResult, epoch: int, step: int) -> FitResult:
    result.status = "diverged"
    result.message = (
        f"training diverged in epoch {epoch} at step {step} (loss not finite or above {DIVERGED_LOSS:g}); "
        "lower the learning rate"
    )
    return result
