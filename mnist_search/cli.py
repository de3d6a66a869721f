"""The `mnist-search` command: parses arguments, calls one function per verb, maps errors to exit codes.

Exit codes: 0 success, 1 the work ran but did not succeed (e.g. training diverged),
2 bad input (one line on stderr, no traceback), 130 interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mnist_search import __version__
from mnist_search.errors import UserError
from mnist_search.trainer.data import DEFAULT_VAL_SIZE

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_architecture(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--preset", help="a preset name (see `mnist-search presets`)")
    group.add_argument("--spec", help="an ArchSpec JSON file")


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        help="directory holding MNIST/raw/* (default: $MNIST_SEARCH_DATA_DIR, else ~/.cache/mnist-search)",
    )
    parser.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE,
                        help=f"images held out of training for validation (default {DEFAULT_VAL_SIZE:,})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnist-search", description="Find tiny convolutional networks for MNIST automatically.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND", parser_class=_Parser)

    verbs.add_parser("presets", help="list the seed networks that ship as presets")

    summary = verbs.add_parser("summary", help="per-layer table: output shape, parameters, receptive field")
    _add_architecture(summary)
    summary.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    train = verbs.add_parser("train", help="train one architecture with its recipe and save metrics and weights")
    _add_architecture(train)
    train.add_argument("--epochs", type=int, help="epochs to train (default: the recipe's, 15)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    train.add_argument("--lr", type=float, help="override the recipe's (peak) learning rate")
    train.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    train.add_argument("--eval", choices=("val", "test"), default="val",
                       help="val: train on 50k, score the held-out 10k (default); test: train on 60k, score the test set")
    train.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                       help="torch.compile the training step (auto: when the run has 2,000+ steps)")
    train.add_argument("--out", help="output directory (default runs/NAME-TIMESTAMP)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_data_dir(train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = importlib.import_module(f"mnist_search.commands.{args.verb}")
    try:
        return command.run(args)
    except UserError as exc:
        print(f"mnist-search {args.verb}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"mnist-search {args.verb}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
