"""`mnist-search train`: train one architecture with its recipe; metrics JSON and weights to --out."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mnist_search.commands import options
from mnist_search.commands.common import architecture
from mnist_search.defaults import DEFAULT_VAL_SIZE
from mnist_search.errors import ConfigError, UserError

HELP = "train one architecture with its recipe and save metrics and weights"
WEIGHTS, METRICS = "weights.safetensors", "metrics.json"
OUTPUTS = (WEIGHTS, "spec.json", METRICS)
COLUMNS = ("epoch", "train_loss", "train_acc", "eval_loss", "eval_acc", "lr", "seconds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_architecture(parser)
    parser.add_argument("--epochs", type=int, help="epochs to train (default: the recipe's, 15)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--lr", type=float, help="override the recipe's (peak) learning rate")
    parser.add_argument("--ema-epochs", type=float,
                        help="evaluate and keep an average of the weights over this many epochs (default: the "
                             "recipe's, off)")
    parser.add_argument("--teacher", metavar="SPEC", help="distil from this network (a spec JSON file, as --spec "
                                                          "reads), with --teacher-weights")
    parser.add_argument("--teacher-weights", metavar="FILE", help="the teacher's weights (safetensors)")
    parser.add_argument("--distill-weight", type=float,
                        help="weight of the teacher's soft targets in the loss (default 0.5 with --teacher)")
    parser.add_argument("--distill-temperature", type=float, help="softmax temperature of the soft targets (default 4)")
    options.add_device(parser)
    parser.add_argument("--eval", choices=("val", "test"), default="val",
                        help="val: train on 50k, score the held-out 10k (default); test: train on 60k, score the "
                             "test set")
    options.add_compile(parser)
    parser.add_argument("--output", "--out", dest="output", help="output directory (default runs/NAME-TIMESTAMP)")
    options.add_data_dir(parser)
    parser.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE,
                        help=f"images held out of training for validation (default {DEFAULT_VAL_SIZE:,})")
    options.add_verbosity(parser)


def _teacher(args: argparse.Namespace):
    """The network to distil from, built from its spec file and loaded from its weights; None without one."""
    if args.teacher is None and args.teacher_weights is None:
        if args.distill_weight:
            raise ConfigError("--distill-weight needs a network to distil from: give --teacher and --teacher-weights")
        return None
    if args.teacher is None or args.teacher_weights is None:
        raise ConfigError("distillation needs both --teacher SPEC and --teacher-weights FILE")
    from mnist_search.models.weights import load_network

    return load_network(args.teacher, args.teacher_weights)


def run(args: argparse.Namespace) -> int:
    from mnist_search.models import analyse, flops_per_image, is_separable
    from mnist_search.models.weights import weights_bytes
    from mnist_search.search.meter import BatchMeter, plural
    from mnist_search.storage.files import remove_if_empty, write_files
    from mnist_search.trainer import (
        EpochMetrics,
        Runtime,
        TrainConfig,
        build_seeded,
        cpu_threads_for_one_process,
        fit,
        load_mnist,
        resolve_device,
        splits_for,
    )
    from mnist_search.trainer.data import mnist_dir

    name, spec, preset = architecture(args)
    analysis = analyse(spec)
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {args.seed}")
    if args.eval == "val" and args.val_size < 1:
        raise ConfigError(f"--val-size must be at least 1 with --eval val (it is what is scored), got {args.val_size}")
    recipe = TrainConfig.from_dict(preset.recipe) if preset else TrainConfig()
    teacher = _teacher(args)
    config = recipe.replace(epochs=args.epochs, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                           ema_epochs=args.ema_epochs, distill_temperature=args.distill_temperature,
                           distill_weight=args.distill_weight if args.distill_weight is not None
                           else 0.5 if teacher is not None else None)
    device = resolve_device(args.device)
    from mnist_search.search.data_dir import data_dir_for

    data_dir = data_dir_for(args.data_dir)
    data = load_mnist(data_dir, val_size=args.val_size)  # before the output dir: bad data leaves none
    out, created = _prepare_out_dir(args.output or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}", mnist_dir(data_dir))
    train, evaluate_on = splits_for(data, args.eval)
    runtime = Runtime.chosen(device, args.compile, config, len(train))
    if device.type == "cpu":
        import torch

        threads, note = cpu_threads_for_one_process()
        torch.set_num_threads(threads)
        if note:
            print(note)

    kind = "depthwise-separable" if is_separable(spec) else "full convolutions"
    print(
        f"training {name} ({analysis.params:,} params, {flops_per_image(spec) / 1e6:.2f} MFLOPs/image, {kind}, RF "
        f"{analysis.receptive_field}) on {device} for {plural(config.epochs, 'epoch')}, {config.optimizer} lr {config.lr:.3g}, "
        f"batch {config.batch_size}; {len(train):,} training images, evaluating on {args.eval} "
        f"({len(evaluate_on):,}){'; compiled' if runtime.compile else ''}", flush=True
    )
    print("  ".join(f"{c:>10}" for c in COLUMNS), flush=True)
    meter = BatchMeter(quiet=getattr(args, "quiet", False))
    meter.start(config.epochs, config.batch_size)

    def on_epoch(epoch: int, metrics: EpochMetrics) -> None:
        meter.write(
            f"{epoch:>10}  {metrics.train_loss:>10.4f}  {metrics.train_acc:>10.2f}  {metrics.eval_loss:>10.4f}"
            f"  {metrics.eval_acc:>10.2f}  {metrics.lr:>10.5f}  {metrics.seconds:>10.1f}", epoch=epoch
        )

    model = build_seeded(spec, config.seed)
    started = time.perf_counter()
    try:
        result = fit(model, config, train, evaluate_on, runtime, on_epoch=on_epoch, on_batch=meter.batch,
                     teacher=teacher)
        meter.close()
        wall = time.perf_counter() - started
        metrics = {
            "name": name, "params": analysis.params, "receptive_field": analysis.receptive_field,
            "status": result.status, "message": result.message, "device": str(device), "evaluated_on": args.eval,
            "train_images": len(train), "eval_images": len(evaluate_on), "compiled": runtime.compile,
            "wall_seconds": wall, "config": config.to_dict(), "spec": spec.to_dict(),
            "history": [m.to_dict() for m in result.history],
        }
        write_files([(out / WEIGHTS, weights_bytes(model)), (out / "spec.json",
                                                             (spec.to_json(indent=2) + "\n").encode()),
                     (out / METRICS, (json.dumps(metrics, indent=2) + "\n").encode())])
    except BaseException:  # interrupted, crashed or a full disk: leave no empty output directory behind
        meter.close()
        if created:
            remove_if_empty(out)
        raise
    if result.status != "completed":
        print(f"stopped: {result.message}")
        print(f"partial metrics in {out}")
        return 1
    accs = [m.eval_acc for m in result.history]
    last = accs[-5:]
    print(
        f"done in {wall:.1f} s: final {args.eval} accuracy {accs[-1]:.2f}%, best {max(accs):.2f}%, "
        f"last {plural(len(last), 'epoch')} min {min(last):.2f}% mean {sum(last) / len(last):.2f}%"
    )
    print(f"wrote {out / METRICS} and {out / WEIGHTS}")
    return 0


def _prepare_out_dir(path: str, data: Path) -> tuple[Path, bool]:
    """The output directory, created, once every file the run will write there may be written;
    and whether this run created it (a failed run removes it again)."""
    from mnist_search.storage.files import check_output, remove_if_empty

    out = Path(path)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out}: {exc.strerror or exc}; choose another --output") from None
    try:
        for file in OUTPUTS:  # before training: hours of work must not end in a refused write
            check_output(out / file, "the output file", protected_dirs=((data, "the MNIST files"),))
    except UserError:
        if created:
            remove_if_empty(out)
        raise
    return out, created
