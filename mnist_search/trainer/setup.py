"""Glue shared by every caller of ``fit``: a seeded model and the evaluation protocol's splits."""

from __future__ import annotations

import os
import threading
import time

import torch

from mnist_search.errors import ConfigError
from mnist_search.models import ArchSpec, SpecNet, build
from mnist_search.trainer.config import TrainConfig
from mnist_search.trainer.data import MNISTData, Split

EVAL_CHOICES = ("val", "test")
# Compiling costs 10-30 s on the CPU and saves ~25% per step (BENCHMARKS.md); below this it does not pay.
COMPILE_MIN_STEPS = 2000


_GLOBAL_RNG = threading.Lock()  # `run --jobs K` builds networks from several threads


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads_per_process(processes: int) -> int:
    """This machine's cores split between ``processes`` training processes, at least one each.

    PyTorch starts one CPU thread per core in every process, so K processes on one machine
    would each run as many threads as it has cores and slow each other down (bench/workers.py:
    2 processes on a 2-core CPU train 4-5x faster with one thread each than with two).
    """
    return max(1, cpu_cores() // processes)


def free_cpu_cores(sample_s: float = 0.3) -> int:
    """The cores not busy with other processes' work now, at least one (all of them where the
    system does not say).

    PyTorch's threads spin and wait for each other at every operation, so a two-thread
    training beside one other busy process on two cores ran 2.8x slower than with one thread:
    a process should start only as many threads (or single-threaded workers) as there are
    idle cores. Measured from /proc/stat over ``sample_s`` while this process sleeps.
    """
    cores = cpu_cores()
    try:
        before = _cpu_times()
        time.sleep(sample_s)
        after = _cpu_times()
    except (OSError, ValueError, IndexError):
        return cores
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])  # idle and iowait
    if total <= 0:
        return cores
    machine_cores = os.cpu_count() or cores
    busy = round(machine_cores * (1 - idle / total))
    return max(1, min(cores, machine_cores - busy))


def _cpu_times() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(value) for value in stat.readline().split()[1:8]]


def cpu_threads_for_one_process() -> tuple[int, str | None]:
    """Threads for a training process that has the machine to itself, and why when it gets
    fewer than the cores: every free core, unless OMP_NUM_THREADS says otherwise."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), None
    cores, free = cpu_cores(), free_cpu_cores()
    if free >= cores:
        return cores, None
    return free, (f"{cores - free} of {cores} CPU cores are busy with other work: training with {free} "
                  f"thread{'s' if free > 1 else ''} so as not to fight them (set OMP_NUM_THREADS to choose)")


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
