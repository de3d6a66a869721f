"""The hand-made networks of the seed write-ups as presets, with the recipe each write-up states.

The write-ups are public course assignments (their notebooks are linked in each ``source``);
copies of their text sit outside this repository, beside its checkout, in ../shared/seeds/.

``recipe`` holds TrainConfig fields as a plain dict (``models`` imports nothing of the
project; the trainer turns it into a TrainConfig). ``reported_test_acc`` is the per-epoch
test accuracy the write-up (or its notebook) printed, for comparison in RESULTS.md.
``assumptions`` names every recipe value the write-up does not state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mnist_search.errors import UserError
from mnist_search.models.spec import GAP, ArchSpec, Conv, MaxPool


@dataclass(frozen=True)
class Preset:
    name: str
    spec: ArchSpec
    recipe: dict
    source: str
    reported_params: int
    reported_test_acc: tuple[float, ...]
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def description(self) -> str:
        return f"{self.source}: {self.reported_params:,} params, best reported test acc {max(self.reported_test_acc):.2f}%"


def _seed001(first: int) -> ArchSpec:
    """seed001 experiments 4/5: conv -> ReLU -> BN everywhere, 1x1 head to 10, then average pool."""

    def conv(out: int, k: int = 3, post: tuple[str, ...] = ("relu", "bn")) -> Conv:
        return Conv(out=out, k=k, post=post)

    return ArchSpec(
        (
            conv(first), conv(first), conv(first),
            MaxPool(2),
            conv(16), conv(16), conv(16),
            conv(10, k=1, post=()),
            GAP(),
        )
    )


_SEED001_RECIPE = {
    "batch_size": 128,  # 469 steps per epoch in the write-up's log
    "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
    "scheduler": "step", "step_size": 6, "gamma": 0.1,
    "rotation": 7.0,
}
_SEED001_ASSUMPTIONS = (
    "optimizer SGD lr 0.01 momentum 0.9: the write-up does not state them",
    "StepLR step 6 gamma 0.1: the write-up names StepLR; the drop in train loss after epoch 6 in its log shows the step",
    "rotation 7 degrees: the write-up says 'reduced augmentation' without a figure",
)


def _seed002() -> ArchSpec:
    """seed002 (EVA8 course, lesson 4, 3rd attempt): conv -> BN -> dropout 2.9% -> ReLU, 1x1 squeeze, GAP then 1x1."""

    def conv(out: int, k: int = 3) -> Conv:
        return Conv(out=out, k=k, post=("bn", "relu"), dropout=0.029)

    return ArchSpec(
        (
            conv(10), conv(10), conv(15),
            MaxPool(2),
            conv(10, k=1),
            conv(10), conv(10), conv(32),
            GAP(),
            Conv(out=10, k=1, post=()),
        )
    )


def _seed003() -> ArchSpec:
    """seed003 Code-7/8 (ERA course, lesson 7, F8.ipynb): BN everywhere, ReLU only where the notebook applies it."""
    bn_relu, bn_only = ("bn", "relu"), ("bn",)
    return ArchSpec(
        (
            Conv(10, post=bn_relu), Conv(10, post=bn_relu), Conv(10, post=bn_relu), Conv(10, post=bn_only),
            Conv(10, k=1, post=bn_only),
            MaxPool(2),
            Conv(14, post=bn_relu), Conv(14, post=bn_relu), Conv(13, post=bn_only),
            GAP(),
            Conv(10, k=1, post=bn_only),
        )
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="seed001-exp4",
            spec=_seed001(8),
            recipe=_SEED001_RECIPE,
            source="seed001 write-up (../shared/seeds/001_ad5a048c307ce6ee.txt) Experiment 4",
            reported_params=7288,
            reported_test_acc=(97.78, 98.52, 99.03, 98.62, 99.04, 99.13, 99.40, 99.37, 99.43, 99.42,
                               99.38, 99.41, 99.42, 99.42, 99.41),
            assumptions=_SEED001_ASSUMPTIONS,
        ),
        Preset(
            name="seed001-exp5",
            spec=_seed001(9),
            recipe=_SEED001_RECIPE,
            source="seed001 write-up (../shared/seeds/001_ad5a048c307ce6ee.txt) Experiment 5",
            reported_params=7753,
            reported_test_acc=(98.18, 98.43, 99.12, 99.00, 99.23, 99.22, 99.43, 99.48, 99.45, 99.45,
                               99.50, 99.49, 99.49, 99.50, 99.52),
            assumptions=_SEED001_ASSUMPTIONS,
        ),
        Preset(
            name="seed002",
            spec=_seed002(),
            recipe={
                "batch_size": 128,
                "optimizer": "sgd", "lr": 0.07, "momentum": 0.9,
                # StepLR every epoch, lowering the LR by 0.1/15 after the first epoch.
                "scheduler": "step", "step_size": 1, "gamma": (0.07 - 0.1 / 15) / 0.07,
                "rotation": 7.0,
            },
            source="seed002: github.com/ojhajayant/EVA8 session_4/EVA8_session4_assignment_3rd_attempt.ipynb",
            reported_params=7684,
            # Per-epoch figures from the attempt's notebook (EVA8 course notebook for lesson 4, 3rd attempt).
            reported_test_acc=(97.92, 98.80, 98.96, 99.07, 99.09, 99.30, 99.07, 99.18, 99.22, 99.48,
                               99.33, 99.36, 99.34, 99.40, 99.42),
        ),
        Preset(
            name="seed003",
            spec=_seed003(),
            recipe={
                "batch_size": 64,
                "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
                "scheduler": "onecycle",
                # RandomResizedCrop(area 0.85-1.0) + RandomRotation(7) approximated by
                # rotation, zoom up to 1/sqrt(0.85) and the shift such a crop allows.
                "rotation": 7.0, "scale_min": 1.0, "scale_max": 1.085, "translate": 0.04,
            },
            source="seed003: github.com/Shilpaj1994/ERA Session7/F8.ipynb (Code-8)",
            reported_params=7884,
            # Per-epoch figures from the Code-8 notebook (ERA course notebook for lesson 7, F8.ipynb).
            reported_test_acc=(97.78, 98.59, 98.92, 98.81, 98.91, 99.06, 99.19, 99.22, 99.16, 99.44,
                               99.38, 99.36, 99.43, 99.43, 99.44),
            assumptions=(
                "RandomResizedCrop is approximated by zoom 1.0-1.085 and shifts up to 4%; aspect-ratio jitter is not reproduced",
            ),
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(
            f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)} (see `mnist-search presets`)"
        ) from None
