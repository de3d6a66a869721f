"""`mnist-search worker`: join an existing study from this machine and run trials on it."""

from __future__ import annotations

import argparse

from mnist_search.commands import run as run_command
from mnist_search.errors import UserError

HELP = "join an existing study from this machine and run trials on it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The study's creator queues warm starts and decides the process count of its own machine.
    run_command.add_arguments(parser, exclude=("warm_start", "warm_start_top", "workers"))


def run(args: argparse.Namespace) -> int:
    from mnist_search.search.runner import join_search

    settings = run_command.settings_from(args, trials=args.trials if args.trials is not None else 1)
    progress = run_command.progress_for(args, settings)
    try:
        join_search(settings, run_command.location_from(args), progress)
    except UserError as exc:
        raise run_command.respelled(exc) from None
    return 0
