"""`mnist-search presets`: the seed networks that ship with the tool."""

from __future__ import annotations

import argparse

from mnist_search.commands import options
from mnist_search.commands.common import format_table

HELP = "list the seed networks that ship as presets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_verbosity(parser, quiet=False)


def run(args: argparse.Namespace) -> int:
    from mnist_search.models.analysis import analyse
    from mnist_search.models.presets import PRESETS

    rows = []
    for preset in PRESETS.values():
        analysis = analyse(preset.spec)
        recipe = preset.recipe
        rows.append(
            [
                preset.name, f"{analysis.params:,}", analysis.receptive_field,
                f"{max(preset.reported_test_acc):.2f}",
                f"{recipe['optimizer']} lr={recipe['lr']:g} {recipe['scheduler']} bs={recipe['batch_size']}",
                preset.source,
            ]
        )
    print(format_table(["preset", "params", "RF", "reported best %", "recipe", "source"], rows))
    return 0
