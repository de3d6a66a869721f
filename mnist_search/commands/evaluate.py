"""`mnist-search evaluate`: the MNIST test accuracy of an exported module with its weights, or of
an exported ONNX model (run by onnxruntime on the raw uint8 test images, as it would be deployed).

This is how a user checks what an export's docstring claims: the module is imported from
its file, exactly as the user would, and its own ``predict`` classifies the 10,000 raw
(uint8) test images, so its preprocessing is checked too.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from mnist_search.commands import options
from mnist_search.errors import UserError

HELP = "test accuracy of an exported module with its weights, or of an exported .onnx model"
BATCH = 1000  # images per predict call: bounded memory for any network the spec allows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("module", help="module written by `mnist-search export` (it is imported, i.e. run), or an"
                                       " .onnx model written by `export --onnx` or `--int8`")
    parser.add_argument("--weights", help="safetensors weights written by `export --weights` (for a module)")
    options.add_device(parser)
    options.add_data_dir(parser)
    options.add_verbosity(parser, quiet=False)


def run(args: argparse.Namespace) -> int:
    from mnist_search.trainer import load_mnist, resolve_device

    if Path(args.module).suffix.lower() == ".onnx":
        return run_onnx(args)
    if args.weights is None:
        raise UserError(f"evaluating the module {args.module} needs its weights: pass --weights FILE.safetensors")
    module_path, weights = Path(args.module), Path(args.weights)
    for path, what in ((module_path, "module"), (weights, "weights file")):
        if not path.is_file():
            raise UserError(f"{what} {path} " + ("is not a file" if path.exists() else "does not exist"))
    device = resolve_device(args.device)
    module = _import(module_path)
    try:
        net = module.load_weights(str(weights)).to(device)
    except Exception as exc:  # a wrong or damaged weights file fails in many ways; all are the user's to fix
        raise UserError(f"cannot load {weights} into {module_path.name}'s Net: {type(exc).__name__}: {exc}") from None
    test = load_mnist(args.data_dir, val_size=0).test  # only the test split is used
    correct = sum(int((module.predict(test.images[i : i + BATCH], model=net).cpu() == test.labels[i : i + BATCH]).sum())
                  for i in range(0, len(test), BATCH))
    print(f"{module_path.name} + {weights.name}: test accuracy {100.0 * correct / len(test):.2f}% on {len(test):,} "
          f"images ({sum(p.numel() for p in net.parameters()):,} parameters)")
    return 0


def run_onnx(args: argparse.Namespace) -> int:
    from mnist_search.models.onnx_export import evaluate_file, require_onnx
    from mnist_search.trainer import load_mnist

    path = Path(args.module)
    if args.weights is not None:
        raise UserError(f"{path.name} carries its weights; drop --weights")
    if not path.is_file():
        raise UserError(f"ONNX model {path} " + ("is not a file" if path.exists() else "does not exist"))
    require_onnx()  # before the test set is read
    test = load_mnist(args.data_dir, val_size=0).test
    accuracy = evaluate_file(path, test.images, test.labels)
    print(f"{path.name}: test accuracy {accuracy:.2f}% on {len(test):,} images (onnxruntime, CPU, uint8 input)")
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
    if not hasattr(module, "load_weights") or not hasattr(module, "predict"):
        raise UserError(f"{path} has no load_weights() and predict(); export it again with `mnist-search export`")
    return module
