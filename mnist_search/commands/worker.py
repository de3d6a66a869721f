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
    from mnist_search.search.runner import SettingsDiffer, join_search

    # Checked as a search's settings would be, before the store is opened; the study's own
    # settings are then taken from the study (join_search), and flags may only restate them.
    settings = run_command.settings_from(args, trials=args.trials if args.trials is not None else 1)
    given = {**run_command.given_settings(args), "trials": settings.trials}
    try:
        join_search(run_command.location_from(args), given, run_command.progress_for(args, settings))
    except SettingsDiffer as exc:
        raise UserError(exc.message(spell=lambda name: run_command.SETTING_FLAGS[name][0])) from None
    except UserError as exc:
        raise run_command.respelled(exc) from None
    return 0
