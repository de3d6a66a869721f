"""One training step captured in a CUDA graph and replayed, for tiny networks on a GPU.

A training step of an 8k-parameter CNN is ~150 kernels of a few microseconds each; launched
one by one from Python, the GPU mostly waits for the CPU. Replaying the captured step costs
one launch. What the graph reads and writes must live at fixed addresses: the batch's
indices (copied into a static buffer before each replay), the LR (a device tensor that the
loop overwrites), the metric accumulators, parameters, gradients and optimizer state.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

POOL_STREAMS = 32  # streams per priority in PyTorch's CUDA stream pool
WARMUP_STEPS = 3  # eager steps before capture: cuDNN/cuBLAS handles, optimizer state, autotuning


def capture_train_step(
    train_step: Callable[[torch.Tensor], None],
    index_shape: tuple[int, ...],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: Sequence[torch.Generator],
    accumulators: Sequence[torch.Tensor],
) -> Callable[[torch.Tensor], None]:
    """Capture ``train_step(index)`` and return a function that runs it for another batch
    (``index`` of ``index_shape``: one row of batch indices per fused copy).

    Capturing needs a few real eager steps first; the model, its buffers, the optimizer's
    state and ``accumulators`` are put back afterwards, so training starts from the same
    weights as an eager run. Zeroed momentum/Adam moments are exactly a fresh optimizer's
    first step (SGD's first momentum is the gradient itself: 0 * m + g). ``generators``
    (the augmentation's, one per copy) advance on every replay, so each batch gets new random warps.
    """
    with _CAPTURE_LOCK:
        return _capture(train_step, index_shape, model, optimizer, generators, accumulators)


# One capture at a time per process: a capture registers the default CUDA generator, and two
# captures overlapping in different threads would switch its capture state under each other.
_CAPTURE_LOCK = threading.Lock()


def _capture(train_step, index_shape, model, optimizer, generators, accumulators):
    device = next(model.parameters()).device
    saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
    static_index = torch.arange(index_shape[-1], device=device).repeat(*index_shape[:-1], 1)
    # Warm up on the run's own stream (never the default one; see own_stream), outside the capture.
    for _ in range(WARMUP_STEPS):
        train_step(static_index)

    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    # thread_local: other threads may train other trials on this GPU while this one captures.
    graph.capture_begin(capture_error_mode="thread_local")
    try:
        train_step(static_index)
    finally:
        graph.capture_end()

    with torch.no_grad():
        for name, value in model.state_dict().items():
            value.copy_(saved[name])
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()
        for accumulator in accumulators:
            accumulator.zero_()

    def replay(index: torch.Tensor) -> None:
        static_index.copy_(index)
        graph.replay()

    return replay


_LIVE_STREAMS: set[int] = set()
_STREAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def own_stream(device: torch.device) -> Iterator[torch.cuda.Stream]:
    """A CUDA stream no other running training uses, current for the duration.

    ``torch.cuda.Stream()`` hands out PyTorch's pool of 32 streams round-robin, so with several
    trainings starting in threads two of them can get the same stream; another thread's work
    then lands inside this one's graph capture (seen on the H100: "capturing stream has
    unjoined work" in `run --jobs 8`). Streams still in use are skipped.
    """
    with _STREAMS_LOCK:
        for _ in range(2 * POOL_STREAMS):
            stream = torch.cuda.Stream(device)
            if stream.cuda_stream not in _LIVE_STREAMS:
                _LIVE_STREAMS.add(stream.cuda_stream)
                break
        else:
            raise RuntimeError(f"all {POOL_STREAMS} pooled CUDA streams are in use; train fewer runs at once")
    try:
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            yield stream
        stream.synchronize()  # callers read the weights on their own stream
    finally:
        with _STREAMS_LOCK:
            _LIVE_STREAMS.discard(stream.cuda_stream)
