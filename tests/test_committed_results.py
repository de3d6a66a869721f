"""The committed exports still evaluate to the test accuracy RESULTS.md states for them.

Every export under results/ whose `mnist-search evaluate` output was committed beside it
(evaluate.txt, the figure RESULTS.md quotes; the CPU study's budget-2k/5k exports have none)
is evaluated again on the real MNIST test set and must print the same accuracy, so a change
to the export template, the weight format or the data loader cannot silently break a
shipped network.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import cli_in_process

RESULTS = Path(__file__).resolve().parents[1] / "results"
EXPORTS = sorted(p.parent for p in RESULTS.rglob("evaluate.txt"))


@pytest.mark.real_data
@pytest.mark.parametrize("export", EXPORTS, ids=[str(p.relative_to(RESULTS)) for p in EXPORTS])
def test_a_committed_export_evaluates_to_its_stated_accuracy(export: Path, real_mnist: Path):
    stated = re.search(r"test accuracy ([\d.]+)%", (export / "evaluate.txt").read_text())
    assert stated, f"{export}/evaluate.txt states no accuracy"
    # In this process: the export is what is checked here; `evaluate` in a process of its own is
    # checked end to end in test_study.py.
    result = cli_in_process("evaluate", str(export / "best_net.py"), "--weights", str(export / "best_net.safetensors"),
                            "--data-dir", str(real_mnist), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert f"test accuracy {stated[1]}%" in result.stdout


def test_every_export_with_a_stated_accuracy_is_found():
    assert len(EXPORTS) >= 6 and RESULTS / "search-gpu" in EXPORTS
