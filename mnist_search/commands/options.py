"""Flags several verbs share, each defined once with one help text (as pip's cmdoptions)."""

from __future__ import annotations

import argparse
import re

from mnist_search.defaults import COMPILE_CHOICES, DEFAULT_STORAGE, STORAGE_ENV


def add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help=f"storage URL (default ${STORAGE_ENV}, else {DEFAULT_STORAGE})")
    parser.add_argument("--study-name", default="mnist-search", help="study name (default mnist-search)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")


def add_compile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", choices=COMPILE_CHOICES, default="auto",
                        help="torch.compile the training step (auto: CPU runs of 2,000+ steps; CUDA replays a "
                             "CUDA graph instead)")


def add_artifacts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", help="directory of trial weights (default: beside the SQLite file, "
                                            "NAME-artifacts)")


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="directory holding MNIST/raw/* (default: $MNIST_SEARCH_DATA_DIR, else "
                                           "the one the study was searched on, else ./data when it holds the files, "
                                           "else ~/.cache/mnist-search)")


def add_architecture(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--preset", help="a preset name (see `mnist-search presets`)")
    group.add_argument("--spec", help="an ArchSpec JSON file")


def add_verbosity(parser: argparse.ArgumentParser, quiet: bool = True) -> None:
    """-v/-q, accepted after the verb as well as before it."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log diagnostics to stderr")
    if quiet:
        parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                            help="no live progress line")


def flag_spelling(message: str, flags: dict[str, str]) -> str:
    """A library message spelled with the command's flags: the setting that starts it, and any
    setting named with an underscore (a name no English word collides with)."""
    name, _, rest = message.partition(" ")
    if name in flags:
        message = f"{flags[name]} {rest}"
    for setting, flag in flags.items():
        if "_" in setting:
            # Not inside a path or a name (.../data_dir/..., my_data_dir): only the setting itself.
            message = re.sub(rf"(?<![\w/.-]){setting}(?![\w/-])", flag, message)
    return message
