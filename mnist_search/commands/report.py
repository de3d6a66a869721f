"""`mnist-search report`: leaderboard and plots of a study, tied together by index.md."""

from __future__ import annotations

import argparse

from mnist_search.commands import options

HELP = "leaderboard and PNG plots of a study, with an index page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_storage(parser)
    parser.add_argument("--output", default="report", help="directory to write (default ./report)")
    options.add_verbosity(parser, quiet=False)


def run(args: argparse.Namespace) -> int:
    from mnist_search.search.report import report  # matplotlib is slow to import
    from mnist_search.search.runner import load_existing
    from mnist_search.storage import open_storage, resolve_storage_url

    study = load_existing(open_storage(resolve_storage_url(args.storage), create=False), args.study_name)
    for path in report(study, args.output):
        print(f"wrote {path}")
    return 0
