"""GPU throughput of the trainer and the search. Needs a CUDA GPU and real MNIST.

Parts (``--parts``, comma-separated, default all but ``search``):
  floor       measured device-to-device bandwidth, and the bytes and FLOPs one epoch of
              seed001-exp5 must move and compute: the physical floor per epoch
  profile     where the time of an eager training step goes (torch.profiler): GPU busy
              time and kernel launches per step against the step's wall time
  single      (a) one 15-epoch seed001-exp5 training with its recipe (60k images, test set
              scored every epoch, as the seeds did): wall time per variant
              (eager steps, CUDA graph, +cudnn.benchmark, +channels_last, +bf16, larger batches)
  concurrent  (b) model-epochs per second with 1, 2, 4, 8, 16 trainings at once (threads, one
              CUDA stream and graph each, as `run --jobs K` does)
  search      (c) wall time of `mnist-search run --trials 200 --pruner none --jobs J`
              on real MNIST (15 epochs), the study written to --study-dir

    python bench/search_gpu.py --data-dir DIR [--parts floor,profile,single,concurrent] [--jobs 8]
    python bench/search_gpu.py --data-dir DIR --parts search --study-dir DIR [--trials 200]

Prints one table per part; the last line of each part is its headline figure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from mnist_search.models import analyse, build, get_preset
from mnist_search.trainer import TrainConfig, build_seeded, fit, load_mnist
from mnist_search.trainer.runtime import Runtime

PRESET = "seed001-exp5"
BYTES_PER_FLOAT = 4


def part_floor(data) -> None:
    """Bandwidth floor: every activation written once in the forward pass and read once in the
    backward pass, its gradient written and read once (4 passes of fp32), plus the input read."""
    big = torch.empty(256 * 2**20, device="cuda")  # 1 GiB
    out = torch.empty_like(big)
    for _ in range(3):
        out.copy_(big)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out.copy_(big)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    bandwidth = 2 * big.numel() * BYTES_PER_FLOAT / statistics.median(times)  # read + write
    del big, out

    analysis = analyse(get_preset(PRESET).spec)
    activations = sum(_numel(layer.out_shape) for layer in analysis.layers)
    images = len(data.full_train())
    bytes_per_epoch = images * BYTES_PER_FLOAT * (28 * 28 + 4 * activations)
    macs = _conv_macs(get_preset(PRESET).spec)
    flops_per_epoch = images * 2 * macs * 3  # forward, and twice that backward
    print(f"\n== floor: {PRESET}, {analysis.params:,} params, {images:,} images per epoch ==")
    print(f"device-to-device copy: {bandwidth / 1e12:.2f} TB/s (read + write, median of 10)")
    print(f"activations per image: {activations:,} floats over {len(analysis.layers)} layers")
    print(f"bytes per epoch (4 passes over every activation, fp32): {bytes_per_epoch / 1e9:.1f} GB")
    print(f"FLOPs per epoch (3 x forward): {flops_per_epoch / 1e12:.2f} TFLOP")
    print(f"floor: {bytes_per_epoch / bandwidth * 1e3:.1f} ms per epoch by bandwidth "
          f"({bytes_per_epoch / bandwidth * 15:.2f} s for 15 epochs); arithmetic at 50 TFLOP/s fp32 would be "
          f"{flops_per_epoch / 50e12 * 1e3:.1f} ms")


def _numel(shape) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _conv_macs(spec) -> int:
    """Multiply-accumulates of the model's convolutions and linear layers for one image."""
    model = build(spec).eval()
    macs = 0

    def count(module, inputs, output):
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return macs


def recipe(**changes) -> TrainConfig:
    return TrainConfig.from_dict(get_preset(PRESET).recipe).replace(**changes)


def part_profile(data) -> None:
    from torch.profiler import ProfilerActivity, profile

    train = data.full_train()
    subset = type(train)(train.images[:128 * 40], train.labels[:128 * 40])  # 40 steps
    config = recipe(epochs=1)
    spec = get_preset(PRESET).spec
    fit(build_seeded(spec, 0), config, subset, data.test, runtime=Runtime(device="cuda", cuda_graph=False))  # warm up
    rows = []
    for graphed in (False, True):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            started = time.perf_counter()
            fit(build_seeded(spec, 0), config, subset, data.test, runtime=Runtime(device="cuda", cuda_graph=graphed))
            wall = time.perf_counter() - started
        averages = prof.key_averages()
        kernels = [a for a in averages if a.device_type == torch.autograd.DeviceType.CUDA]
        if not kernels:  # profilers that file kernel time under the launching ops
            kernels = [a for a in averages if a.self_device_time_total > 0]
        busy_us = sum(a.self_device_time_total for a in kernels)
        by_name = {a.key: a.self_device_time_total for a in kernels}
        count = sum(a.count for a in kernels)
        rows.append((graphed, wall, busy_us, count, by_name))
    print(f"\n== profile: one epoch of {PRESET} on 40 batches of 128 (+ scoring 10k test images) ==")
    for graphed, wall, busy_us, count, by_name in rows:
        label = "CUDA graph" if graphed else "eager steps"
        print(f"{label}: wall {wall * 1e3:.0f} ms, GPU busy {busy_us / 1e3:.0f} ms "
              f"({100 * busy_us / 1e6 / wall:.0f}%), {count} kernels ({count / 40:.0f} per step incl. scoring)")
        for name, us in sorted(by_name.items(), key=lambda kv: -kv[1])[:8]:
            print(f"    {us / 1e3:7.1f} ms  {name[:90]}")


def timed_fit(data, config, **options) -> tuple[float, list]:
    train = data.full_train()
    torch.cuda.synchronize()
    started = time.perf_counter()
    result = fit(build_seeded(get_preset(PRESET).spec, config.seed), config, train, data.test,
                 Runtime(device="cuda", **options))
    torch.cuda.synchronize()
    return time.perf_counter() - started, result.history


@contextlib.contextmanager
def cudnn_benchmark():
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def native_batch_norm():
    """BatchNorm through PyTorch's own CUDA kernels instead of cuDNN's (convolutions stay on cuDNN)."""
    batchnorm = torch.nn.modules.batchnorm
    original = batchnorm.F.batch_norm

    def without_cudnn(*args, **kwargs):
        with torch.backends.cudnn.flags(enabled=False):
            return original(*args, **kwargs)

    batchnorm.F.batch_norm = without_cudnn
    try:
        yield
    finally:
        batchnorm.F.batch_norm = original


def part_single(data) -> None:
    base = recipe()
    plain = contextlib.nullcontext
    variants = [
        ("eager steps", base, {"cuda_graph": False}, plain),
        ("CUDA graph", base, {}, plain),
        ("CUDA graph + cudnn.benchmark", base, {}, cudnn_benchmark),
        ("CUDA graph + native BatchNorm", base, {}, native_batch_norm),
        ("CUDA graph + channels_last", base, {"channels_last": True}, plain),
        ("CUDA graph + bf16 autocast", base, {"bf16": True}, plain),
        ("CUDA graph, batch x2, LR x2", base.replace(batch_size=base.batch_size * 2, lr=base.lr * 2), {}, plain),
        ("CUDA graph, batch x4, LR x4", base.replace(batch_size=base.batch_size * 4, lr=base.lr * 4), {}, plain),
    ]
    timed_fit(data, base.replace(epochs=1), cuda_graph=False)  # CUDA context, cuDNN handles
    print(f"\n== (a) one {base.epochs}-epoch {PRESET} training, 60k images, test set scored every epoch ==")
    print(f"{'variant':<34} {'wall s':>7} {'ms/epoch':>9} {'final test %':>13} {'best %':>7}")
    for name, config, options, setting in variants:
        with setting():
            wall, history = timed_fit(data, config, **options)
        per_epoch = statistics.median(m.seconds for m in history) * 1e3
        print(f"{name:<34} {wall:>7.2f} {per_epoch:>9.1f} {history[-1].eval_acc:>13.2f} "
              f"{max(m.eval_acc for m in history):>7.2f}", flush=True)


def part_concurrent(data, epochs: int, counts: list[int]) -> None:
    spec = get_preset(PRESET).spec
    config = recipe(epochs=epochs)
    print(f"\n== (b) trainings at once: {PRESET}, {epochs} epochs on 50k, scoring 10k, threads + own streams ==")
    print(f"{'at once':>8} {'wall s':>7} {'model-epochs/s':>15} {'vs 1':>6}")
    fit(build_seeded(spec, 0), config.replace(epochs=1), data.train, data.val,
        runtime=Runtime(device="cuda"))  # warm up
    base = None
    for count in counts:
        errors: list[BaseException] = []

        def train(seed: int) -> None:
            try:
                fit(build_seeded(spec, seed), config.replace(seed=seed), data.train, data.val,
                    runtime=Runtime(device="cuda"))
            except BaseException as exc:  # reported below: a failed thread must not pass for a fast one
                errors.append(exc)

        threads = [threading.Thread(target=train, args=(seed,)) for seed in range(count)]
        torch.cuda.synchronize()
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        if errors:
            print(f"{count:>8} failed: {errors[0]!r}")
            continue
        rate = count * epochs / wall
        base = base or rate
        print(f"{count:>8} {wall:>7.2f} {rate:>15.2f} {rate / base:>5.2f}x", flush=True)


def part_search(data_dir: str, study_dir: Path, trials: int, jobs: int, pruner: str) -> None:
    study_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{study_dir / 'study.db'}"
    command = [sys.executable, "-m", "mnist_search", "run", "--trials", str(trials), "--pruner", pruner,
               "--jobs", str(jobs), "--storage", url, "--data-dir", data_dir, "--device", "cuda", "--seed", "0"]
    print(f"\n== (c) {' '.join(command[1:])} ==", flush=True)
    started = time.perf_counter()
    code = subprocess.call(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - started
    print(f"(c) {trials}-trial search, pruner {pruner}, {jobs} at once: {wall:.1f} s "
          f"({wall / 60:.2f} min, exit {code})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--parts", default="floor,profile,single,concurrent")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per training in part concurrent")
    parser.add_argument("--counts", default="1,2,4,8,16", help="trainings at once in part concurrent")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--pruner", default="none")
    parser.add_argument("--study-dir", type=Path, default=Path("gpu-study"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/search_gpu.py needs a CUDA GPU")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    data = load_mnist(args.data_dir)
    parts = args.parts.split(",")
    for name in parts:
        started = time.perf_counter()
        try:
            if name == "floor":
                part_floor(data)
            elif name == "profile":
                part_profile(data)
            elif name == "single":
                part_single(data)
            elif name == "concurrent":
                part_concurrent(data, args.epochs, [int(c) for c in args.counts.split(",")])
            elif name == "search":
                part_search(args.data_dir, args.study_dir, args.trials, args.jobs, args.pruner)
            else:
                print(f"unknown part {name!r}")
        except Exception as exc:  # one broken part must not cost the lease the others
            import traceback

            traceback.print_exc()
            print(f"part {name} failed: {exc!r}")
        print(f"[part {name}: {time.perf_counter() - started:.1f} s]", flush=True)


if __name__ == "__main__":
    main()
