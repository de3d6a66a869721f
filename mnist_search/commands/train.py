"""`mnist-search train`: train one architecture with its recipe; metrics JSON and weights to --out."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from mnist_search.commands.common import architecture
from mnist_search.errors import ConfigError, UserError
from mnist_search.models import analyse
from mnist_search.models.weights import save_weights
from mnist_search.trainer import (
    TrainConfig,
    build_seeded,
    fit,
    load_mnist,
    resolve_device,
    should_compile,
    splits_for,
)

COLUMNS = ("epoch", "train_loss", "train_acc", "eval_loss", "eval_acc", "lr", "seconds")


def run(args: argparse.Namespace) -> int:
    name, spec, preset = architecture(args)
    analysis = analyse(spec)
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    recipe = TrainConfig.from_dict(preset.recipe) if preset else TrainConfig()
    config = recipe.replace(epochs=args.epochs, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                           ema_epochs=args.ema_epochs)
    device = resolve_device(args.device)
    out = _prepare_out_dir(args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    data = load_mnist(args.data_dir, val_size=args.val_size)
    train, evaluate_on = splits_for(data, args.eval)
    compile_model = should_compile(args.compile, config, len(train), str(device))

    print(
        f"training {name} ({analysis.params:,} params, RF {analysis.receptive_field}) on {device} "
        f"for {config.epochs} epochs; {len(train):,} training images, evaluating on {args.eval} "
        f"({len(evaluate_on):,}){'; compiled' if compile_model else ''}"
    )
    print("  ".join(f"{c:>10}" for c in COLUMNS))
    bar = tqdm(total=0, leave=False, unit="batch", dynamic_ncols=True, disable=args.quiet)

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
    result = fit(model, config, train, evaluate_on, device=device, on_epoch=on_epoch, on_batch=on_batch,
                 compile_model=compile_model)
    bar.close()
    wall = time.perf_counter() - started

    save_weights(model, out / "weights.safetensors")
    (out / "spec.json").write_text(spec.to_json(indent=2) + "\n")
    metrics = {
        "name": name, "params": analysis.params, "receptive_field": analysis.receptive_field,
        "status": result.status, "message": result.message, "device": str(device), "evaluated_on": args.eval,
        "train_images": len(train), "eval_images": len(evaluate_on), "compiled": compile_model,
        "wall_seconds": wall, "config": config.to_dict(), "spec": spec.to_dict(), "history": result.history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
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
    print(f"wrote {out / 'metrics.json'} and {out / 'weights.safetensors'}")
    return 0


def _prepare_out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out}: {exc.strerror or exc}; choose another --out") from None
    return out
