"""Glue shared by every caller of ``fit``: a seeded model and the evaluation protocol's splits."""

from __future__ import annotations

import os
import threading

import torch

from mnist_search.errors import ConfigError
from mnist_search.models import ArchSpec, SpecNet, build
from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.data import MNISTData, Split

EVAL_CHOICES = ("val", "test")
# Compiling costs 10-30 s on the CPU and saves ~25% per step (BENCHMARKS.md); below this it does not pay.
COMPILE_MIN_STEPS = 2000


_GLOBAL_RNG = threading.Lock()  # `run --jobs K` builds networks from several threads


def cpu_threads_per_process(processes: int) -> int:
    """This machine's cores split between ``processes`` training processes, at least one each.

    PyTorch starts one CPU thread per core in every process, so K processes on one machine
    would each run as many threads as it has cores and slow each other down (bench/workers.py:
    2 processes on a 2-core CPU train 4-5x faster with one thread each than with two).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // processes)


def build_seeded(spec: ArchSpec, seed: int) -> SpecNet:
    """Build ``spec`` with weights initialised from ``seed`` (so seeded runs are reproducible)."""
    with _GLOBAL_RNG:  # seeding and drawing the weights must not interleave with another thread's
        # The CPU generator only: weights are drawn on the CPU, and reseeding the default CUDA
        # generator from one thread while another captures a CUDA graph is not safe.
        # The caller's generator is put back as it was: a library must not reseed it.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return build(spec)


def splits_for(data: MNISTData, evaluate_on: str) -> tuple[Split, Split]:
    """(train, eval) splits: 'val' trains on 50k and scores on the held-out 10k;
    'test' trains on all 60k training images and scores on the test set, as the seeds did."""
    if evaluate_on == "val":
        return data.train, data.val
    if evaluate_on == "test":
        return data.full_train(), data.test
    raise ConfigError(f"unknown evaluation split {evaluate_on!r}; choose {' or '.join(EVAL_CHOICES)}")


def should_compile(choice: str, config: TrainConfig, train_images: int, device: str = "cpu") -> bool:
    """'auto' compiles CPU runs long enough to repay the compile; 'on'/'off' force it.

    On CUDA 'auto' never compiles: the step is replayed from a CUDA graph instead, and a
    compile (tens of seconds per architecture) would cost more than a whole GPU trial.
    """
    if choice == "auto":
        steps = config.epochs * (train_images // config.batch_size)
        return not str(device).startswith("cuda") and steps >= COMPILE_MIN_STEPS
    return choice == "on"
