"""`mnist-search summary`: a per-layer table (output shape, parameters, receptive field)."""

from __future__ import annotations

import argparse
import json

from mnist_search.commands import options
from mnist_search.commands.common import architecture, format_table

HELP = "per-layer table: output shape, parameters, receptive field"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_architecture(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    options.add_verbosity(parser, quiet=False)


def run(args: argparse.Namespace) -> int:
    from mnist_search.models.analysis import analyse

    name, spec, preset = architecture(args)
    analysis = analyse(spec)
    if args.json:
        print(json.dumps({"name": name, **analysis.to_dict(), "spec": spec.to_dict()}))
        return 0
    rows = [
        [info.index, info.description, "x".join(map(str, info.out_shape)), f"{info.params:,}", info.receptive_field]
        for info in analysis.layers
    ]
    print(f"{name}: 1x28x28 -> {'x'.join(map(str, analysis.out_shape))}")
    print(format_table(["#", "layer", "output", "params", "RF"], rows))
    print(f"total parameters: {analysis.params:,}; receptive field at the output: {analysis.receptive_field}")
    return 0
