"""`mnist-search evaluate`: the MNIST test accuracy of an exported module with its weights.

This is how a user checks what an export's docstring claims: the module is imported from
its file, exactly as the user would, and scored on the 10,000 test images with the
trainer's own evaluation.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from mnist_search.errors import UserError
from mnist_search.trainer import evaluate, load_mnist, resolve_device, to_device


def run(args: argparse.Namespace) -> int:
    module_path, weights = Path(args.module), Path(args.weights)
    for path, what in ((module_path, "module"), (weights, "weights file")):
        if not path.is_file():
            raise UserError(f"{what} {path} " + ("is not a file" if path.exists() else "does not exist"))
    device = resolve_device(args.device)
    module = _import(module_path)
    try:
        net = module.load_weights(str(weights))
    except Exception as exc:  # a wrong or damaged weights file fails in many ways; all are the user's to fix
        raise UserError(f"cannot load {weights} into {module_path.name}'s Net: {type(exc).__name__}: {exc}") from None
    data = load_mnist(args.data_dir, val_size=0)  # only the test split is used
    images, labels = to_device(data.test, device)
    loss, accuracy = evaluate(net.to(device), images, labels)
    print(f"{module_path.name} + {weights.name}: test accuracy {accuracy:.2f}% on {len(labels):,} images "
          f"(loss {loss:.4f}, {sum(p.numel() for p in net.parameters()):,} parameters)")
    return 0


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path} is not a Python module (.py); pass the module first, the weights with --weights")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any error in the user's file is theirs to see, in one line
        raise UserError(f"cannot import {path}: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, "load_weights"):
        raise UserError(f"{path} has no load_weights(); is it a module written by `mnist-search export`?")
    return module
