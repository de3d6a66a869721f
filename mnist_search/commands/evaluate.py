"""`mnist-search evaluate`: the MNIST test accuracy of an exported module with its weights
(search/evaluating.py imports the module as a user would and scores its own ``predict``)."""

from __future__ import annotations

import argparse

from mnist_search.commands import options

HELP = "test accuracy of an exported module with its weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("module", help="module written by `mnist-search export` (it is imported, i.e. run)")
    parser.add_argument("--weights", required=True, help="safetensors weights written by `export --weights`")
    options.add_device(parser)
    options.add_data_dir(parser)
    options.add_verbosity(parser, quiet=False)


def run(args: argparse.Namespace) -> int:
    from mnist_search.search.evaluating import evaluate

    print(evaluate(args.module, args.weights, device=args.device, data_dir=args.data_dir))
    return 0
