"""What this machine can hold, so limits follow it rather than fixed numbers.

Worker processes each import PyTorch and hold the MNIST tensors: about half a gigabyte each
(24 of them were OOM-killed on a 4 GB machine). A confirmation keeps every seed's job and final
weights until they are stored. Both are checked against the memory this process may use
(the smaller of the physical memory and a cgroup's limit) before anything starts.
"""

from __future__ import annotations

import os

from mnist_search.errors import ConfigError

WORKER_BYTES = 512 * 2**20
SEED_OVERHEAD_BYTES = 64 * 2**10  # a seed's job, run record and Python objects, besides its weights
GB = 2**30


def memory_bytes() -> int | None:
    """The memory this process may use: physical memory, or less under a cgroup limit; None if unknown."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = None
    limits = [physical] if physical and physical > 0 else []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 2**60:  # "max" or a huge number: no limit
            limits.append(int(text))
    return min(limits) if limits else None


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_workers(memory: int | None = None) -> int | None:
    memory = memory if memory is not None else memory_bytes()
    return max(1, memory // WORKER_BYTES) if memory else None


def check_workers(workers: int, name: str = "workers") -> None:
    """ConfigError when ``workers`` processes would not fit in this machine's memory."""
    memory = memory_bytes()
    most = max_workers(memory)
    if most is not None and workers > most:
        raise ConfigError(f"{name} {workers} would need about {workers * WORKER_BYTES / GB:.1f} GB (each worker "
                          f"process holds about {WORKER_BYTES / GB:.1f} GB), but this machine has "
                          f"{memory / GB:.1f} GB and {cpu_cores()} CPU cores; use at most {most}")


def check_seeds(seeds: int, params: int, name: str = "seeds") -> None:
    """ConfigError when the results of ``seeds`` confirmation seeds of a ``params``-parameter
    network would not fit in half of this machine's memory."""
    memory = memory_bytes()
    if memory is None:
        return
    each = SEED_OVERHEAD_BYTES + 8 * params  # the weights, as a tensor and as safetensors bytes
    most = max(1, memory // 2 // each)
    if seeds > most:
        raise ConfigError(f"{name} {seeds} would hold about {seeds * each / GB:.1f} GB of results for a "
                          f"{params:,}-parameter network, more than half of this machine's {memory / GB:.1f} GB; "
                          f"use at most {most:,}")
