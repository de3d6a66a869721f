"""Print the Markdown table of RESULTS.md: each preset's per-epoch test accuracy beside its write-up's.

    python scripts/presets_table.py results/presets
"""

import json
import sys
from pathlib import Path

from mnist_search.models import PRESETS
from mnist_search.trainer.metrics import EpochMetrics


def load_run(path: Path) -> dict:
    """A `train` run's metrics.json, its history as EpochMetrics."""
    run = json.loads(path.read_text())
    return {**run, "history": [EpochMetrics.from_dict(m) for m in run["history"]]}


def main(root: str) -> None:
    runs = {name: load_run(Path(root) / name / "metrics.json") for name in PRESETS
            if (Path(root) / name / "metrics.json").is_file()}
    header = ["epoch"] + [f"{name} ours / write-up" for name in runs]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for epoch in range(15):
        cells = [str(epoch + 1)]
        for name, run in runs.items():
            ours = run["history"][epoch].eval_acc if epoch < len(run["history"]) else float("nan")
            cells.append(f"{ours:.2f} / {PRESETS[name].reported_test_acc[epoch]:.2f}")
        print("| " + " | ".join(cells) + " |")
    print()
    print("| preset | params | ours: best / final / min of last 5 | write-up: best / final / min of last 5 | gap in best | seconds |")
    print("|---|---|---|---|---|---|")
    for name, run in runs.items():
        ours = [m.eval_acc for m in run["history"]]
        theirs = list(PRESETS[name].reported_test_acc)
        print(f"| {name} | {run['params']:,} | {max(ours):.2f} / {ours[-1]:.2f} / {min(ours[-5:]):.2f} | "
              f"{max(theirs):.2f} / {theirs[-1]:.2f} / {min(theirs[-5:]):.2f} | {max(ours) - max(theirs):+.2f} | "
              f"{run['wall_seconds']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/presets")
