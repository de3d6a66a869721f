"""`mnist-search report`: leaderboard and plots of a study, tied together by index.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_search.errors import UserError
from mnist_search.search import open_study
from mnist_search.storage import open_storage, resolve_storage_url


def run(args: argparse.Namespace) -> int:
    from mnist_search.search.report import write_report  # matplotlib is slow to import

    study = open_study(open_storage(resolve_storage_url(args.storage)), args.study_name, None, None, create=False)
    if not study.get_trials(deepcopy=False):
        raise UserError(f"study {study.study_name!r} has no trials yet; run `mnist-search run` first")
    try:
        written = write_report(study, Path(args.output))
    except OSError as exc:
        raise UserError(f"cannot write the report to {args.output}: {exc.strerror or exc}; choose another --output") from None
    for path in written:
        print(f"wrote {path}")
    return 0
