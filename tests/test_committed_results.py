"""The committed exports still evaluate to the test accuracy RESULTS.md states for them.

Every export under results/ whose `mnist-search evaluate` output was committed beside it
(evaluate.txt, the figure RESULTS.md quotes; the CPU study's budget-2k/5k exports have none)
is evaluated again on the real MNIST test set and must print the same accuracy, so a change
to the export template, the weight format or the data loader cannot silently break a
shipped network. Likewise every committed ONNX model evaluates to the accuracy its model card
states, the card's sizes and SHA-256 are those of the files beside it, and every committed
module is the current template with only its own values in it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import pytest

from mnist_search.models.export import _variable_parts, check_source
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


ONNX_EXPORTS = sorted(p.parent for p in RESULTS.rglob("best_net.onnx"))


@pytest.mark.real_data
@pytest.mark.parametrize("export", ONNX_EXPORTS, ids=[str(p.relative_to(RESULTS)) for p in ONNX_EXPORTS])
def test_a_committed_onnx_export_evaluates_to_its_cards_accuracy(export: Path, real_mnist: Path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'mnist-search[onnx]'")
    card = json.loads((export / "best_net.card.json").read_text())
    for entry in card["files"].values():  # the card describes exactly the committed files
        content = (export / entry["file"]).read_bytes()
        assert (len(content), hashlib.sha256(content).hexdigest()) == (entry["bytes"], entry["sha256"]), entry["file"]
    for name, key in (("best_net.onnx", "onnx"), ("best_net.int8.onnx", "int8")):
        result = cli_in_process("evaluate", str(export / name), "--data-dir", str(real_mnist))
        assert result.returncode == 0, result.stderr
        assert f"test accuracy {card['measured'][key]['test_accuracy']:.2f}%" in result.stdout


def test_the_committed_int8_models_were_chosen_and_measured_as_stated():
    """The 8k int8 model is within 0.10 points of fp32 on the test set and about a third of its
    size (RESULTS.md, "ONNX and int8"); every int8 model was calibrated on training images and
    is smaller than its fp32 model by the ratio its card states."""
    for export in ONNX_EXPORTS:
        measured = json.loads((export / "best_net.card.json").read_text())["measured"]
        q = measured["int8"]
        assert q["calibration_source"].startswith("training images") and q["selection_images"] == 10_000
        sizes = [(export / name).stat().st_size for name in ("best_net.int8.onnx", "best_net.onnx")]
        assert sizes == [q["bytes"], measured["onnx"]["bytes"]] and q["size_ratio"] == round(sizes[0] / sizes[1], 4)
        assert abs(q["drop_points"] - (q["test_accuracy"] - measured["onnx"]["test_accuracy"])) < 1e-6
    eight_k = json.loads((RESULTS / "search-gpu" / "best_net.card.json").read_text())["measured"]["int8"]
    assert eight_k["drop_points"] >= -0.10 and eight_k["size_ratio"] < 0.34


def test_the_committed_networks_have_their_onnx_files():
    assert {p.relative_to(RESULTS).as_posix() for p in ONNX_EXPORTS} >= {
        "search-gpu", "search-gpu/gpu-5k", "search-gpu/separable-5k", "search-gpu/gpu-2k", "search-gpu/separable-2k",
        "budget-2k", "budget-1k"}


@pytest.mark.parametrize("module", sorted(RESULTS.rglob("best_net.py")), ids=lambda p: str(p.relative_to(RESULTS)))
def test_a_committed_module_is_the_current_template_with_only_its_values_in_it(module: Path):
    source = module.read_text()
    parts = _variable_parts(ast.parse(source))
    check_source(source, parts["doc"], parts["net_doc"], parts["calls"], parts["weights"])
