"""The trainer against the processor: each network family's training rate as a share of the
machine's FP32 matrix rate, in one run.

For each family: the analytic training FLOPs per image (6 x the forward multiply-accumulates),
the trainer's training images/s as `run` trains (its own recipe, augmentation, LR schedule and
the evaluation after every epoch included, with the choices `run` makes for a 15-epoch trial on
50,000 images), the GFLOP/s that is and its share of the FP32 rate of a large matrix product on
the same threads, measured in the same run.

An epoch here is ``--train-images`` training images scored on a fifth as many validation
images (run's 50,000 : 10,000); each family trains ``--epochs`` epochs and the figure is the
median over the epochs after the first (which holds any compilation, reported separately).

``--baseline-src DIR`` also measures the trainer of another checkout (e.g. a ``git worktree``
of an older commit) in the same run, round for round, and prints the ratio: the before/after.
``--beside-busy N`` measures beside N processes that keep a core busy each (someone else's
work), as the trainer meets a shared machine. ``--workers N`` runs N copies of each measurement at once, one thread each, and reports their
sum: the machine's rate when `run` trains one single-threaded trial per core.

    python bench/roofline.py --data-dir DATA [--device cpu] [--families all] [--rounds 2]
    python bench/roofline.py --data-dir DATA --baseline-src /tmp/before
    python bench/roofline.py --data-dir DATA --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mnist_search.trainer.runtime import Runtime

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "results"

# name: (study file under results/, study name, trial number, spec change, what it is)
FAMILIES = {
    "best-8k": ("search-gpu/study.db", "ema-8k-variants", 5, None, "the committed 8k network (separable)"),
    "plain-8k": ("preset", "seed001-exp5", None, None, "seed001-exp5, full 3x3 convs"),
    "plain-5k": ("search-gpu/study.db", "gpu-5k", None, "plain", "best full-conv trial of gpu-5k"),
    "plain-2k": ("search-gpu/study.db", "budget-2k", None, "plain", "best full-conv trial of budget-2k"),
    "separable-8k": ("search-gpu/study.db", "gpu-8k", 5, None, "a separable space sample, 7 depthwise layers"),
    "separable-2k": ("search-gpu/study.db", "gpu-2k", 0, None, "the confirmed separable 2k network"),
    "shared-2k": ("budget-2k/study.db", "levers-2k", 0, None, "results/budget-2k (shared separable pair)"),
    "shared-1k": ("budget-1k/study.db", "levers-1k", 0, None, "results/budget-1k"),
    "instancenorm-2k": ("budget-2k/study.db", "levers-2k", 0, "in", "shared-2k with InstanceNorm"),
    "groupnorm-2k": ("budget-2k/study.db", "levers-2k", 0, "gn", "shared-2k with GroupNorm (2 groups where even)"),
}


def family(name: str):
    """(spec, TrainConfig) of a family, from the committed studies or presets."""
    import optuna

    from mnist_search.models import ArchSpec, get_preset
    from mnist_search.trainer import TrainConfig

    where, study_name, number, change, _ = FAMILIES[name]
    if where == "preset":
        preset = get_preset(study_name)
        return preset.spec, TrainConfig.from_dict({**preset.recipe, "epochs": 15})
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{STUDIES / where}")
    trials = [t for t in study.trials if t.value is not None and "spec" in t.user_attrs]
    if number is not None:
        trials = [t for t in study.trials if t.number == number]
    if change == "plain":
        trials = [t for t in trials if all(layer.get("groups", 1) == 1 for layer in t.user_attrs["spec"]["layers"])]
        trials.sort(key=lambda t: -t.value)
    trial = trials[0]
    spec = trial.user_attrs["spec"]
    if change in ("in", "gn"):
        spec = {"layers": _renormed(spec["layers"], change)}
    return ArchSpec.from_dict(spec), TrainConfig.from_dict(trial.user_attrs["config"])


def _renormed(layers: list[dict], norm: str) -> list[dict]:
    """Every BatchNorm before the global average pool replaced by ``norm``: after it the map is
    1x1, where a per-sample norm would output a constant."""
    renamed, pooled = [], False
    for layer in layers:
        pooled = pooled or layer.get("op") == "gap"
        if layer.get("op") == "conv" and "bn" in layer.get("post", []) and not pooled:
            layer = {**layer, "post": [norm if op == "bn" else op for op in layer["post"]]}
            if norm == "gn":
                layer["norm_groups"] = 2 if layer["out"] % 2 == 0 else 1
        renamed.append(layer)
    return renamed


def matmul_rate(device: str, size: int) -> float:
    """FP32 GFLOP/s of a size x size matrix product on this process's threads (median of 5)."""
    import torch

    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    times = []
    for _ in range(7):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times[2:]) / 1e9


TEACHER = (REPO / "results/search-gpu/best_net.spec.json", REPO / "results/search-gpu/best_net.safetensors")


def measure(name: str, data_dir: str, device: str, train_images: int, epochs: int, compile_choice: str,
            distil: bool = False) -> dict:
    """One family's steady-state training images/s, as `run` trains it."""
    import torch

    from mnist_search.trainer import build_seeded, fit, load_mnist, should_compile
    from mnist_search.trainer.data import Split

    try:  # the thread choice `run` makes for a lone training process (absent in older checkouts)
        from mnist_search.trainer import cpu_threads_for_one_process
    except ImportError:
        pass
    else:
        if device == "cpu":
            torch.set_num_threads(cpu_threads_for_one_process()[0])
    spec, config = family(name)
    data = load_mnist(data_dir, val_size=10_000)
    train = Split(data.train.images[:train_images], data.train.labels[:train_images])
    val_images = train_images // 5
    val = Split(data.val.images[:val_images], data.val.labels[:val_images])
    # the compile choice `run` makes for a 15-epoch trial on 50,000 images, not for this short run
    compiled = should_compile(compile_choice, config, len(data.train), device)
    model = build_seeded(spec, 0)
    teacher = None
    if distil:  # the committed 8k network as the teacher, half the loss from its soft targets
        from mnist_search.models.weights import load_network

        teacher, config = load_network(*TEACHER), config.replace(distill_weight=0.5)
    started = time.perf_counter()
    result = fit(model, config.replace(epochs=epochs), train, val, runtime=Runtime(device=device, compile=compiled),
                 **({"teacher": teacher} if teacher is not None else {}))
    wall = time.perf_counter() - started
    seconds = [m.seconds for m in result.history]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return {
        "family": name, "batch": config.batch_size, "compiled": compiled, "threads": torch.get_num_threads(), "images_per_s": train_images / steady,
        "first_epoch_extra_s": seconds[0] - steady, "wall_s": wall, "status": result.status,
    }


def run_child(args: list[str], src: Path, threads: int | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, __file__, "--child", *args], env=env, stdout=subprocess.PIPE, text=True)


def measure_in_processes(name: str, args: argparse.Namespace, src: Path, distil: bool = False) -> dict:
    """``args.workers`` processes (one thread each when several) measuring at once; rates summed."""
    child_args = [name, args.data_dir, args.device, str(args.train_images), str(args.epochs), args.compile,
                  "distil" if distil else "plain"]
    threads = 1 if args.workers > 1 else None
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.beside_busy)]
    try:
        children = [run_child(child_args, src, threads) for _ in range(args.workers)]
        outputs = [child.communicate()[0] for child in children]
    finally:
        for process in busy:
            process.kill()
            process.wait()
    results = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    total = dict(results[0])
    total["images_per_s"] = sum(r["images_per_s"] for r in results)
    total["workers"] = args.workers
    # counted by this checkout's analysis, so that a baseline checkout without it measures too
    from mnist_search.models import analyse

    analysis = analyse(family(name)[0])
    total.update(params=analysis.params, flops=analysis.training_flops)
    return total


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        name, data_dir, device, train_images, epochs, compile_choice, distil = sys.argv[2:]
        print(json.dumps(measure(name, data_dir, device, int(train_images), int(epochs), compile_choice,
                                 distil == "distil")))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", default="all", help=f"comma-separated, or all: {', '.join(FAMILIES)}")
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the median is reported")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--beside-busy", type=int, default=0, metavar="N",
                        help="measure beside N busy-looping processes (another user's work)")
    parser.add_argument("--distil", action="store_true",
                        help="also measure each family distilling from the committed 8k network (weight 0.5)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="the trainer's compile choice (auto: what `run` picks for a 15-epoch trial)")
    parser.add_argument("--baseline-src", type=Path, help="a checkout whose trainer is measured alongside")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    names = list(FAMILIES) if args.families == "all" else args.families.split(",")

    import torch

    size = 4096 if args.device == "cuda" else 2048
    threads = 1 if args.workers > 1 else torch.get_num_threads()
    torch.set_num_threads(threads)
    peak = args.workers * matmul_rate(args.device, size)
    print(f"device {args.device}, {args.workers} process(es) x {threads} thread(s); torch {torch.__version__}")
    print(f"FP32 matrix rate ({size}x{size} product{', summed over processes' if args.workers > 1 else ''}): "
          f"{peak:.1f} GFLOP/s")
    sides = {"now": (REPO, False)}
    if args.baseline_src:
        sides = {"before": (args.baseline_src.resolve(), False), **sides}
    if args.distil:
        sides["distilled"] = (REPO, True)
    rows = []
    for name in names:
        by_side: dict[str, list[dict]] = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, (src, distil) in sides.items():
                by_side[side].append(measure_in_processes(name, args, src, distil))
        row = {side: _median_run(runs) for side, runs in by_side.items()}
        rows.append(row)
        _print_row(name, row, peak)
    if args.json:
        args.json.write_text(json.dumps({"peak_gflops": peak, "device": args.device, "workers": args.workers,
                                         "rows": rows}, indent=1))


def _median_run(runs: list[dict]) -> dict:
    runs = sorted(runs, key=lambda r: r["images_per_s"])
    return runs[len(runs) // 2]


def _print_row(name: str, row: dict, peak: float) -> None:
    now = row["now"]
    mflop = now["flops"] / 1e6
    gflops = now["images_per_s"] * now["flops"] / 1e9
    parts = [f"{name:16s} {now['params']:6,d} params {mflop:6.2f} MFLOP/img batch {now['batch']:3d}",
             f"{'compiled' if now['compiled'] else 'eager':8s}"]
    if "before" in row:
        before = row["before"]
        before_gflops = before["images_per_s"] * before["flops"] / 1e9
        parts.append(f"before {before['images_per_s']:7.0f} img/s {100 * before_gflops / peak:5.1f}%")
    parts.append(f"now {now['images_per_s']:7.0f} img/s {gflops:6.1f} GFLOP/s {100 * gflops / peak:5.1f}%")
    if "before" in row:
        parts.append(f"x{now['images_per_s'] / row['before']['images_per_s']:.2f}")
    if "distilled" in row:
        parts.append(f"distilled {row['distilled']['images_per_s']:7.0f} img/s "
                     f"(x{row['distilled']['images_per_s'] / now['images_per_s']:.2f})")
    parts.append(f"(first epoch +{now['first_epoch_extra_s']:.1f} s)")
    print(" | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
