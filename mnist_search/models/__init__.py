"""WHAT a network is: architecture specs, building them, analysing them, exporting them.

``build`` and ``SpecNet`` need torch and are imported on first use, so the verbs that only
read specs (presets, summary) start without it.
"""

from mnist_search.models.analysis import (
    Analysis,
    LayerInfo,
    analyse,
    count_params,
    flops_per_image,
    is_separable,
    validate,
)
from mnist_search.models.presets import PRESETS, Preset, get_preset
from mnist_search.models.spec import GAP, INPUT_SHAPE, NUM_CLASSES, ArchSpec, Conv, MaxPool

__all__ = [
    "GAP",
    "INPUT_SHAPE",
    "NUM_CLASSES",
    "PRESETS",
    "Analysis",
    "ArchSpec",
    "Conv",
    "LayerInfo",
    "MaxPool",
    "Preset",
    "SpecNet",
    "analyse",
    "build",
    "count_params",
    "flops_per_image",
    "get_preset",
    "is_separable",
    "validate",
]


def __getattr__(name: str):
    if name in ("build", "SpecNet"):
        from mnist_search.models import network

        return getattr(network, name)
    raise AttributeError(f"module 'mnist_search.models' has no attribute {name!r}")
