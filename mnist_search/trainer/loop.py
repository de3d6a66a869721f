"""The training loop: device-resident data, batched on-device augmentation, one sync per epoch.

Speed comes from removing work, not from cleverness: images are normalised once and kept
on the training device, an epoch is a random permutation of indices, augmentation is one
batched affine warp, and loss/accuracy are summed on the device and read once per epoch
(plus one cheap divergence check every ``DIVERGENCE_CHECK_EVERY`` steps).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mnist_search.errors import ConfigError
from mnist_search.trainer.augment import random_affine
from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.data import MNIST_MEAN, MNIST_STD, Split
from mnist_search.trainer.schedules import make_optimizer, make_scheduler

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
) -> FitResult:
    """Train ``model`` for ``config.epochs`` epochs, evaluating on ``evaluate_on`` after each.

    ``on_epoch(epoch, metrics)`` runs after every epoch's evaluation (epochs count from 1)
    and may raise to stop training (the search raises optuna.TrialPruned); ``on_batch(step,
    steps_per_epoch)`` runs after every batch, for progress bars.
    """
    device = device if isinstance(device, torch.device) else resolve_device(device)
    model.to(device)
    train_x, train_y = to_device(train, device)
    eval_x, eval_y = to_device(evaluate_on, device)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    # A compiled step recompiles for every new batch shape, so compiled training drops the
    # ragged last batch of each epoch (at most batch_size - 1 random images per epoch).
    drop_last = compile_model
    steps_per_epoch = len(train) // config.batch_size if drop_last else math.ceil(len(train) / config.batch_size)
    if steps_per_epoch == 0:
        raise ConfigError(f"batch size {config.batch_size} is larger than the {len(train)} training images")
    # Compiled on the CPU, the step runs ~17% faster in channels_last (BENCHMARKS.md); eager
    # oneDNN training is faster contiguous, and on CUDA it is unmeasured, so both stay contiguous.
    memory_format = torch.channels_last if compile_model and device.type == "cpu" else torch.contiguous_format
    model.to(memory_format=memory_format)
    if compile_model:
        # Dynamo keys its compiled graphs on SpecNet.forward's code, shared by every
        # architecture: a worker that had compiled 8 trials hit the recompile limit and
        # silently trained the rest eagerly (seen in the CPU search's log). Each fit
        # compiles a new network, so the previous fits' graphs are dropped first.
        torch.compiler.reset()
    step_model = torch.compile(model) if compile_model else model
    optimizer = make_optimizer(model.parameters(), config)
    scheduler, per_batch = make_scheduler(optimizer, config, steps_per_epoch)

    result = FitResult()
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        window_loss = torch.zeros((), device=device)
        seen = 0
        order = torch.randperm(len(train), device=device, generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            images, labels = train_x[index], train_y[index]
            if config.augments:
                images = random_affine(
                    images, generator, config.rotation, config.translate,
                    (config.scale_min, config.scale_max), fill=BLACK,
                )
            logits = step_model(images.contiguous(memory_format=memory_format))
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_batch:
                scheduler.step()
            batch_loss = loss.detach() * len(labels)
            loss_sum += batch_loss
            window_loss += batch_loss
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            if (step + 1) % DIVERGENCE_CHECK_EVERY == 0:
                if _diverged(window_loss.item() / (DIVERGENCE_CHECK_EVERY * config.batch_size)):
                    return _stop_diverged(result, epoch, step + 1)
                window_loss.zero_()
            if on_batch is not None:
                on_batch(step + 1, steps_per_epoch)
        if scheduler is not None and not per_batch:
            scheduler.step()
        train_loss = loss_sum.item() / seen
        if _diverged(train_loss):
            return _stop_diverged(result, epoch, steps_per_epoch)
        eval_loss, eval_acc = evaluate(model, eval_x, eval_y)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": 100.0 * correct.item() / seen,
            "eval_loss": eval_loss,
            "eval_acc": eval_acc,
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }
        result.history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return result


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
