"""Helpers several verbs share: reading the architecture argument, printing tables."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from mnist_search.models import ArchSpec, Preset, get_preset


def architecture(args: argparse.Namespace) -> tuple[str, ArchSpec, Preset | None]:
    """(name, spec, preset or None) from ``--preset NAME`` or ``--spec FILE``."""
    if args.preset:
        preset = get_preset(args.preset)
        return preset.name, preset.spec, preset
    spec = ArchSpec.from_file(args.spec)
    name = Path(args.spec).stem
    return name, spec, None


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in cells[1:]) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True
