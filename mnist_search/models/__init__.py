"""WHAT a network is: architecture specs, building them, analysing them (and, later, exporting them)."""

from mnist_search.models.analysis import Analysis, LayerInfo, analyse, count_params, validate
from mnist_search.models.build import SpecNet, build
from mnist_search.models.presets import PRESETS, Preset, get_preset
from mnist_search.models.spec import GAP, INPUT_SHAPE, NUM_CLASSES, ArchSpec, Conv, MaxPool

__all__ = [
    "Analysis", "ArchSpec", "Conv", "GAP", "INPUT_SHAPE", "LayerInfo", "MaxPool", "NUM_CLASSES",
    "PRESETS", "Preset", "SpecNet", "analyse", "build", "count_params", "get_preset", "validate",
]
