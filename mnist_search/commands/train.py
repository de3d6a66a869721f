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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mnist_search.models import analyse
    from mnist_search.models.weights import weights_bytes
    from mnist_search.storage.files import remove_if_empty, write_files
    from mnist_search.trainer import (
        TrainConfig,
        build_seeded,
        fit,
        load_mnist,
        resolve_device,
        should_compile,
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
    config = recipe.replace(epochs=args.epochs, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                           ema_epochs=args.ema_epochs)
    device = resolve_device(args.device)
    data = load_mnist(args.data_dir, val_size=args.val_size)  # before the output directory: bad data leaves none
    out, created = _prepare_out_dir(args.output or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}", mnist_dir(args.data_dir))
    train, evaluate_on = splits_for(data, args.eval)
    compile_model = should_compile(args.compile, config, len(train), str(device))

    print(
        f"training {name} ({analysis.params:,} params, RF {analysis.receptive_field}) on {device} "
        f"for {config.epochs} epochs; {len(train):,} training images, evaluating on {args.eval} "
        f"({len(evaluate_on):,}){'; compiled' if compile_model else ''}"
    )
    print("  ".join(f"{c:>10}" for c in COLUMNS))
    bar = tqdm(total=0, leave=False, unit="batch", dynamic_ncols=True, disable=getattr(args, "quiet", False))

    def on_batch(step: int, total: int) -> None:
        if step == 1:
            bar.reset(total=total)
        bar.update(1)

    def on_epoch(epoch: int, metrics: dict) -> None:
        bar.clear()
        tqdm.write(
            f"{epoch:>10}  {metrics['train_loss']:>10.4f}  {metrics['train_acc']:>10.2f}  {metrics['eval_loss']:>10.4f}"
            f"  {metrics['eval_acc']:>10.2f}  {metrics['lr']:>10.5f}  {metrics['seconds']:>10.1f}"
        )

    model = build_seeded(spec, config.seed)
    started = time.perf_counter()
    try:
        result = fit(model, config, train, evaluate_on, device=device, on_epoch=on_epoch, on_batch=on_batch,
                     compile_model=compile_model)
        bar.close()
        wall = time.perf_counter() - started
        metrics = {
            "name": name, "params": analysis.params, "receptive_field": analysis.receptive_field,
            "status": result.status, "message": result.message, "device": str(device), "evaluated_on": args.eval,
            "train_images": len(train), "eval_images": len(evaluate_on), "compiled": compile_model,
            "wall_seconds": wall, "config": config.to_dict(), "spec": spec.to_dict(), "history": result.history,
        }
        write_files([(out / WEIGHTS, weights_bytes(model)), (out / "spec.json", (spec.to_json(indent=2) + "\n").encode()),
                     (out / METRICS, (json.dumps(metrics, indent=2) + "\n").encode())])
    except BaseException:  # interrupted, crashed or a full disk: leave no empty output directory behind
        bar.close()
        if created:
            remove_if_empty(out)
        raise
    if result.status != "completed":
        print(f"stopped: {result.message}")
        print(f"partial metrics in {out}")
        return 1
    accs = [m["eval_acc"] for m in result.history]
    last = accs[-5:]
    print(
        f"done in {wall:.1f} s: final {args.eval} accuracy {accs[-1]:.2f}%, best {max(accs):.2f}%, "
        f"last {len(last)} epochs min {min(last):.2f}% mean {sum(last) / len(last):.2f}%"
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
