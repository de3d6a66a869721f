"""The search space: an Optuna trial -> (ArchSpec, TrainConfig), always within the parameter budget.

Structure is sampled directly (convs per block, padding, where the 1x1 squeeze goes,
BatchNorm/ReLU order, head variant, dropout, full or depthwise-separable 3x3 convs, and at
small budgets the kind of norm and a weight-shared conv repeated at the end);
channel widths are sampled as *relative* widths and then scaled by the largest width unit
that keeps the analytic parameter count within the budget. So every sample fits the budget
by construction, and a sample is infeasible only when even the narrowest version of its
structure does not fit or its feature map collapses; those are rejected before anything is
built.

``spec_from_choices`` is the deterministic half: given the structural choices and
absolute widths it emits the flat spec. Tests use it to show every preset lies in the space.
Every parameter sampled here belongs to a lever declared in ``mnist_search/levers.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import optuna

from mnist_search.errors import SpecError
from mnist_search.models import GAP, ArchSpec, Conv, MaxPool, analyse, count_params
from mnist_search.trainer import TrainConfig

MIN_WIDTH = 4
MAX_UNIT = 64
# Budgets at which the sampler also picks the norm and a repeated shared conv: the levers of
# the best public networks under 2,000 parameters. Above it they stay at BatchNorm and no
# repeats, so larger studies keep the space they were run with.
SMALL_BUDGET = 5000


@dataclass(frozen=True)
class Choices:
    """Structural choices plus absolute widths: everything ``spec_from_choices`` needs."""

    block1: tuple[int, ...]  # widths of the 3x3 convs before the max-pool
    block2: tuple[int, ...]  # widths of the 3x3 convs after it
    pad1: int = 0
    pad2: int = 0
    squeeze: str = "none"  # none | before_pool | after_pool: a 1x1 conv to `squeeze_width`
    squeeze_width: int = 0
    squeeze_post: tuple[str, ...] = ("bn", "relu")
    order: tuple[str, ...] = ("bn", "relu")  # BatchNorm/ReLU order after every 3x3 conv
    last_relu: bool = True  # ReLU after the last conv of each block (seed003 leaves it out)
    dropout: float = 0.0
    head: str = "conv_gap"  # conv_gap: 1x1 to 10 then GAP; gap_conv: GAP then 1x1 to 10
    head_post: tuple[str, ...] = ()
    # Every 3x3 conv but the first as depthwise 3x3 + pointwise 1x1: about a ninth of a full
    # 3x3 conv's weights, so the budget buys wider layers; the DESIGN's lever for 5k and 2k.
    separable: bool = False
    # The norm wherever the network has one but the head: "bn", or the per-sample "in"/"gn".
    # GroupNorm's group count is the largest divisor of each conv's width that divides norm_groups.
    norm: str = "bn"
    norm_groups: int = 1
    # Applications, after block 2, of ONE extra square 3x3 conv (separable if `separable`) at
    # block 2's last width and padding (0: none): the first owns the weights, the others
    # share them, each with its own norm. Depth and receptive field for a norm's parameters.
    shared_repeats: int = 0


class Infeasible(Exception):
    """A sampled structure that cannot fit the budget or collapses the feature map."""


def spec_from_choices(c: Choices) -> ArchSpec:
    channels = 1  # input channels of the next conv
    layers: list = []

    def conv(width: int, k: int, post: tuple[str, ...], **fields) -> Conv:
        """A conv with the chosen norm in place of "bn" in ``post``."""
        post = tuple(c.norm if op == "bn" else op for op in post)
        if c.norm == "gn" and "gn" in post:
            fields["norm_groups"] = math.gcd(width, c.norm_groups)
        return Conv(width, k=k, post=post, **fields)

    def conv3x3(width: int, pad: int, post: tuple[str, ...], share: int | None = None) -> list[Conv]:
        """A 3x3 conv (or its separable pair); ``share``: the index of the earlier one it repeats."""
        nonlocal channels
        if c.separable and channels > 1:
            # A norm but no ReLU between the two halves (Xception found a ReLU there hurts).
            convs = [conv(channels, 3, ("bn",), pad=pad, groups=channels, share=share),
                     conv(width, 1, post, dropout=c.dropout, share=None if share is None else share + 1)]
        else:
            convs = [conv(width, 3, post, pad=pad, dropout=c.dropout, share=share)]
        channels = width
        return convs

    def block(widths: tuple[int, ...], pad: int) -> list[Conv]:
        convs = []
        for i, width in enumerate(widths):
            post = c.order if (c.last_relu or i < len(widths) - 1) else tuple(op for op in c.order if op != "relu")
            convs += conv3x3(width, pad, post)
        return convs

    def squeeze() -> list[Conv]:
        nonlocal channels
        if c.squeeze == "none":
            return []
        channels = c.squeeze_width
        return [conv(c.squeeze_width, 1, c.squeeze_post, dropout=c.dropout)]

    def repeats() -> list[Conv]:
        convs: list[Conv] = []
        owner = len(layers)
        for i in range(c.shared_repeats):
            convs += conv3x3(channels, c.pad2, c.order, share=None if i == 0 else owner)
        return convs

    layers += block(c.block1, c.pad1)
    layers += (squeeze() + [MaxPool(2)]) if c.squeeze == "before_pool" else ([MaxPool(2)] + squeeze())
    layers += block(c.block2, c.pad2)
    layers += repeats()
    head_conv = Conv(10, k=1, post=c.head_post)
    layers += [head_conv, GAP()] if c.head == "conv_gap" else [GAP(), head_conv]
    return ArchSpec(tuple(layers))


def sample_choices(trial: optuna.Trial, max_params: int) -> Choices:
    """Sample a structure and relative widths, then scale widths to the budget."""
    n1 = trial.suggest_int("block1_convs", 1, 4)
    n2 = trial.suggest_int("block2_convs", 1, 4)
    rel1 = [trial.suggest_float(f"block1_width{i}", 0.5, 2.0) for i in range(n1)]
    rel2 = [trial.suggest_float(f"block2_width{i}", 0.5, 3.0) for i in range(n2)]
    squeeze = trial.suggest_categorical("squeeze", ["none", "before_pool", "after_pool"])
    rel_squeeze = trial.suggest_float("squeeze_width", 0.5, 1.5) if squeeze != "none" else 0.0
    order = trial.suggest_categorical("order", ["bn_relu", "relu_bn"])
    base = Choices(
        block1=(), block2=(),
        pad1=trial.suggest_int("pad1", 0, 1),
        pad2=trial.suggest_int("pad2", 0, 1),
        squeeze=squeeze,
        squeeze_post=_post(order, relu=squeeze != "none" and trial.suggest_categorical("squeeze_relu", [True, False])),
        order=_post(order, relu=True),
        last_relu=trial.suggest_categorical("last_relu", [True, False]),
        dropout=trial.suggest_float("dropout", 0.0, 0.1),
        head=trial.suggest_categorical("head", ["conv_gap", "gap_conv"]),
        head_post=("bn",) if trial.suggest_categorical("head_bn", [False, True]) else (),
        separable=trial.suggest_categorical("separable", [False, True]),
    )
    if max_params <= SMALL_BUDGET:
        norm = trial.suggest_categorical("norm", ["bn", "in", "gn"])
        base = replace(base, norm=norm, norm_groups=trial.suggest_categorical("norm_groups", [2, 4]) if norm == "gn" else 1,
                       shared_repeats=trial.suggest_int("shared_repeats", 0, 3))

    def at(unit: int) -> Choices:
        def width(relative: float) -> int:
            return max(MIN_WIDTH, round(relative * unit))

        return replace(base, block1=tuple(map(width, rel1)), block2=tuple(map(width, rel2)),
                       squeeze_width=width(rel_squeeze) if squeeze != "none" else 0)

    return fit_to_budget(at, max_params)


def _post(order: str, relu: bool) -> tuple[str, ...]:
    ops = ("bn", "relu") if order == "bn_relu" else ("relu", "bn")
    return ops if relu else ("bn",)


def fit_to_budget(at, max_params: int) -> Choices:
    """The widest ``at(unit)`` whose parameter count is within ``max_params`` (binary search on unit)."""
    if count_params(spec_from_choices(at(1))) > max_params:
        raise Infeasible(f"even the narrowest version of this structure has more than {max_params} parameters")
    low, high = 1, MAX_UNIT
    while low < high:
        mid = (low + high + 1) // 2
        if count_params(spec_from_choices(at(mid))) <= max_params:
            low = mid
        else:
            high = mid - 1
    choices = at(low)
    try:
        analyse(spec_from_choices(choices))
    except SpecError as exc:
        raise Infeasible(str(exc)) from None
    return choices


def sample_config(trial: optuna.Trial, epochs: int, seed: int, distil: bool = False) -> TrainConfig:
    """The recipe; with ``distil`` (a search with a teacher) also how much of the loss is the
    teacher's soft targets and at what temperature."""
    optimizer = trial.suggest_categorical("optimizer", ["sgd", "adamw"])
    if optimizer == "sgd":
        lr = trial.suggest_float("sgd_lr", 0.005, 0.2, log=True)
        momentum = trial.suggest_float("momentum", 0.8, 0.95)
        nesterov = trial.suggest_categorical("nesterov", [False, True])
    else:
        lr = trial.suggest_float("adam_lr", 5e-4, 2e-2, log=True)
        momentum, nesterov = 0.9, False
    scheduler = trial.suggest_categorical("scheduler", ["step", "onecycle", "cosine"])
    step_size = trial.suggest_int("step_size", 3, 8) if scheduler == "step" else 6
    gamma = trial.suggest_float("gamma", 0.1, 0.5) if scheduler == "step" else 0.1
    # An average of the weights over the last ~epoch smooths the epoch-to-epoch dips (trainer/averaging.py).
    averaged = trial.suggest_categorical("ema", [False, True])
    # Clipped to the run: a study of fewer epochs than the horizon averages over all of them.
    ema_epochs = min(trial.suggest_float("ema_epochs", 0.25, 2.0, log=True), epochs) if averaged else 0.0
    return TrainConfig(
        epochs=epochs, seed=seed, optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov,
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        scheduler=scheduler, step_size=step_size, gamma=gamma,
        batch_size=trial.suggest_categorical("batch_size", [64, 128, 256]),
        rotation=trial.suggest_float("rotation", 0.0, 15.0),
        translate=trial.suggest_float("translate", 0.0, 0.1),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.1), ema_epochs=ema_epochs,
        distill_weight=trial.suggest_float("distill_weight", 0.1, 0.9) if distil else 0.0,
        distill_temperature=trial.suggest_float("distill_temperature", 1.0, 8.0, log=True) if distil else 4.0,
    )
