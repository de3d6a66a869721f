"""`mnist-search evaluate`: the MNIST test accuracy of an exported module with its weights
(search/evaluating.py imports the module as a user would and scores its own ``predict``), or of
an exported ONNX model (run by onnxruntime on the raw uint8 test images, as it would be deployed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_search.commands import options
from mnist_search.errors import UserError

HELP = "test accuracy of an exported module with its weights, or of an exported .onnx model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("module", help="module written by `mnist-search export` (it is imported, i.e. run), or an"
                                       " .onnx model written by `export --onnx` or `--int8`")
    parser.add_argument("--weights", help="safetensors weights written by `export --weights` (for a module)")
    options.add_device(parser)
    options.add_data_dir(parser)
    options.add_verbosity(parser, quiet=False)


def run(args: argparse.Namespace) -> int:
    from mnist_search.search.evaluating import evaluate

    if Path(args.module).suffix.lower() == ".onnx":
        return run_onnx(args)
    if args.weights is None:
        raise UserError(f"evaluating the module {args.module} needs its weights: pass --weights FILE.safetensors")
    print(evaluate(args.module, args.weights, device=args.device, data_dir=args.data_dir))
    return 0


def run_onnx(args: argparse.Namespace) -> int:
    from mnist_search.models.onnx_export import evaluate_file, require_onnx
    from mnist_search.search.data_dir import data_dir_for
    from mnist_search.trainer import load_mnist

    path = Path(args.module)
    if args.weights is not None:
        raise UserError(f"{path.name} carries its weights; drop --weights")
    if not path.is_file():
        raise UserError(f"ONNX model {path} " + ("is not a file" if path.exists() else "does not exist"))
    require_onnx()  # before the test set is read
    test = load_mnist(data_dir_for(args.data_dir), val_size=0).test
    accuracy = evaluate_file(path, test.images, test.labels)
    print(f"{path.name}: test accuracy {accuracy:.2f}% on {len(test):,} images (onnxruntime, CPU, uint8 input)")
    return 0
