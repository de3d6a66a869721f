"""`mnist-search report`: leaderboard and plots of a study, tied together by index.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_search.commands import options

HELP = "leaderboard and PNG plots of a study, with an index page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_storage(parser)
    parser.add_argument("--output", default="report", help="directory to write (default ./report)")
    options.add_artifacts(parser)  # no report file may land among the trials' weights
    options.add_verbosity(parser, quiet=False)


def run(args: argparse.Namespace) -> int:
    from mnist_search.search.report import report  # matplotlib is slow to import
    from mnist_search.search.runner import load_existing
    from mnist_search.storage import default_artifact_dir, open_storage, resolve_storage_url
    from mnist_search.storage.files import store_files
    from mnist_search.trainer.data import mnist_dir

    url = resolve_storage_url(args.storage)
    study = load_existing(open_storage(url, create=False), args.study_name)
    artifacts = Path(args.artifacts) if args.artifacts else default_artifact_dir(url)
    written = report(study, args.output, protected=store_files(url),
                     protected_dirs=((artifacts, "the trials' weights"), (mnist_dir(), "the MNIST files")))
    for path in written:
        print(f"wrote {path}")
    return 0
