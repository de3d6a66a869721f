"""The search space's levers, each declared once: what it samples, how reports name it, what
rebuilds trials that predate it, and what it adds to a network's spec.

``search/space.py`` holds the sampling code; every side table the other parts need is derived
here from the declarations: the labels of report plots (``param_label``), the values warm
start fills in for trials that predate a lever (``REBUILD``), the spec fields a stored spec
writes only when used (``LEVER_CONV_FIELDS``), and what fused training supports
(``FUSABLE_LEVER_FIELDS``, ``FUSABLE_LEVER_POST_OPS``). The exported module writes a lever's
fields when a network uses them. Import-free, so every part may read it.

A new lever is one entry in ``LEVERS`` plus its sampling code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Lever:
    """One choice the space samples.

    ``params``: its Optuna parameter names, each with the label reports give it; a name with
    ``{i}`` is one parameter per index (from 0), its label's ``{n}`` the index from 1.
    ``rebuild``: for a lever the space gained after studies had been run with it, the value of
    each parameter that rebuilds what those older trials trained (None: there from the start).
    ``conv_fields``: the spec's conv fields it adds, each with the default that means "not used"
    (integers or None: the exported module writes them as integer literals).
    ``post_ops``: the spec post ops it adds. ``fusable``: fused training (several seeds as one
    network) supports what it adds to a spec.
    """

    name: str
    params: dict[str, str]
    rebuild: dict[str, object] | None = None
    conv_fields: dict[str, int | None] = field(default_factory=dict)
    post_ops: tuple[str, ...] = ()
    fusable: bool = True


LEVERS: tuple[Lever, ...] = (
    Lever("depth", {"block1_convs": "number of 3x3 convs before the max-pool",
                    "block2_convs": "number of 3x3 convs after the max-pool"}),
    Lever("widths", {"block1_width{i}": "width of conv {n} before the max-pool (relative)",
                     "block2_width{i}": "width of conv {n} after the max-pool (relative)"}),
    Lever("padding", {"pad1": "padding before the max-pool", "pad2": "padding after the max-pool"}),
    Lever("squeeze", {"squeeze": "1x1 squeeze: where", "squeeze_width": "1x1 squeeze: width (relative)",
                      "squeeze_relu": "1x1 squeeze: ReLU"}),
    Lever("order", {"order": "BatchNorm/ReLU order", "last_relu": "ReLU after a block's last conv"}),
    Lever("dropout", {"dropout": "dropout"}),
    Lever("head", {"head": "head: 1x1 conv before or after GAP", "head_bn": "head: BatchNorm"}),
    Lever("separable", {"separable": "depthwise-separable convs"}, rebuild={"separable": False}),
    # Per-sample norms, budgets up to 5,000 (space.SMALL_BUDGET). GroupNorm's groups are a conv
    # field; fused training widens BatchNorm only (a norm over groups of channels fuses differently).
    Lever("norm", {"norm": "norm: BatchNorm, InstanceNorm or GroupNorm", "norm_groups": "GroupNorm: groups"},
          rebuild={"norm": "bn"}, conv_fields={"norm_groups": 1}, post_ops=("in", "gn"), fusable=False),
    # One extra conv applied several times with shared weights, budgets up to 5,000.
    Lever("shared_repeats", {"shared_repeats": "shared conv: applications after block 2"},
          rebuild={"shared_repeats": 0}, conv_fields={"share": None}, fusable=False),
    Lever("optimizer", {"optimizer": "optimizer", "sgd_lr": "SGD learning rate", "momentum": "SGD momentum",
                        "nesterov": "SGD Nesterov", "adam_lr": "AdamW learning rate"}),
    Lever("weight_decay", {"weight_decay": "weight decay"}),
    Lever("schedule", {"scheduler": "learning-rate schedule", "step_size": "StepLR step (epochs)",
                       "gamma": "StepLR decay"}),
    Lever("average", {"ema": "weight average (EMA)", "ema_epochs": "weight average: horizon (epochs)"},
          rebuild={"ema": False}),
    Lever("batch_size", {"batch_size": "batch size"}),
    Lever("augmentation", {"rotation": "augmentation: rotation (degrees)", "translate": "augmentation: translation"}),
    Lever("label_smoothing", {"label_smoothing": "label smoothing"}),
    # Sampled only in a search with a teacher (SearchSettings.teacher).
    Lever("distillation", {"distill_weight": "distillation: weight of the soft targets",
                           "distill_temperature": "distillation: temperature"}),
)

REBUILD: dict[str, object] = {name: value for lever in LEVERS for name, value in (lever.rebuild or {}).items()}
LEVER_CONV_FIELDS: dict[str, int | None] = {name: default for lever in LEVERS
                                            for name, default in lever.conv_fields.items()}
FUSABLE_LEVER_FIELDS = frozenset(name for lever in LEVERS if lever.fusable for name in lever.conv_fields)
FUSABLE_LEVER_POST_OPS = frozenset(op for lever in LEVERS if lever.fusable for op in lever.post_ops)

_LABELS = {name: label for lever in LEVERS for name, label in lever.params.items() if "{i}" not in name}
_INDEXED = [(re.compile(re.escape(name).replace(re.escape("{i}"), r"(\d+)")), label)
            for lever in LEVERS for name, label in lever.params.items() if "{i}" in name]


def param_label(name: str) -> str:
    """A search-space parameter as a reader would name it; an unknown name is shown as it is."""
    if name in _LABELS:
        return _LABELS[name]
    for pattern, label in _INDEXED:
        match = pattern.fullmatch(name)
        if match:
            return label.format(n=int(match[1]) + 1)
    return name


def is_known_param(name: str) -> bool:
    """Whether ``name`` is a parameter some lever declares."""
    return name in _LABELS or any(pattern.fullmatch(name) for pattern, _ in _INDEXED)
