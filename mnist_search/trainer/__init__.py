"""HOW a network learns: MNIST data, augmentation, the training loop, metrics. Knows nothing of Optuna."""

from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.data import MNISTData, Split, load_mnist, resolve_data_dir
from mnist_search.trainer.fused import SeedFit, fit_seeds, train_seeds, trains_fused
from mnist_search.trainer.loop import FitResult, evaluate, fit, resolve_device, to_device
from mnist_search.trainer.metrics import EpochMetrics
from mnist_search.trainer.runtime import Runtime
from mnist_search.trainer.setup import (
    build_seeded,
    cpu_threads_for_one_process,
    cpu_threads_per_process,
    free_cpu_cores,
    should_compile,
    splits_for,
)

__all__ = [
    "EpochMetrics", "FitResult", "MNISTData", "Runtime", "SeedFit", "Split", "TrainConfig", "build_seeded", "cpu_threads_for_one_process",
    "cpu_threads_per_process", "free_cpu_cores",
    "evaluate", "fit", "fit_seeds", "load_mnist", "resolve_data_dir", "resolve_device", "should_compile", "splits_for",
    "to_device", "train_seeds", "trains_fused",
]
