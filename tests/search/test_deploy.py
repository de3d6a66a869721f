"""Export for deployment: ONNX with the preprocessing inside, int8, the model card, and evaluate of
.onnx files. onnxruntime really runs; the data are the tests' tiny synthetic MNIST files."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import pytest
import torch

from mnist_search.errors import UserError, WorkFailed
from mnist_search.models import onnx_export as ox
from tests.conftest import make_tiny_mnist
from tests.helpers import cli_in_process
from tests.search.test_export_safety import import_module, make_study

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'mnist-search[onnx]'")
pytest.importorskip("onnx", reason="onnx is not installed: pip install 'mnist-search[onnx]'")


@pytest.fixture
def deploy_setup(tmp_path):
    study, artifacts = make_study(tmp_path)
    data = make_tiny_mnist(tmp_path / "data", n_train=300, n_test=60)
    return study, artifacts, data


def test_an_onnx_export_takes_uint8_images_and_matches_the_module(deploy_setup, tmp_path):
    from mnist_search.search.deploying import export_deployable

    study, artifacts, data = deploy_setup
    out = tmp_path / "out"
    out.mkdir()
    done = export_deployable(study, out / "net.py", weights=out / "net.safetensors", onnx=out / "net.onnx",
                             int8=out / "net.int8.onnx", data_dir=data, artifact_dir=artifacts, command="test",
                             calibration_images=100)
    assert sorted(p.name for p in out.iterdir()) == ["net.card.json", "net.card.md", "net.int8.onnx", "net.onnx",
                                                       "net.py", "net.safetensors"]
    session = ox.session((out / "net.onnx").read_bytes())
    (given,), (returned,) = session.get_inputs(), session.get_outputs()
    assert (given.name, given.type, given.shape[1:]) == ("images", "tensor(uint8)", [1, 28, 28])
    assert (returned.name, returned.type, returned.shape[1:]) == ("logits", "tensor(float)", [10])
    assert isinstance(given.shape[0], str)  # a dynamic batch

    module = import_module(done.module)
    net = module.load_weights(str(out / "net.safetensors"))
    pixels = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8)
    for batch in (pixels[:1], pixels):
        (logits,) = session.run(None, {"images": batch.numpy()})
        assert logits.dtype == np.float32 and logits.shape == (len(batch), 10)
        with torch.no_grad():
            expected = net(module.preprocess(batch)).numpy()
        np.testing.assert_allclose(logits, expected, atol=ox.LOGIT_TOLERANCE, rtol=0)

    card = json.loads((out / "net.card.json").read_text())
    for role, name in (("module", "net.py"), ("weights", "net.safetensors"), ("onnx", "net.onnx"),
                       ("int8", "net.int8.onnx")):
        content = (out / name).read_bytes()
        assert card["files"][role] == {"file": name, "bytes": len(content),
                                       "sha256": hashlib.sha256(content).hexdigest()}
    assert card["parameters"] == 7684 and card["receptive_field"] > 0 and card["flops_per_image"] > 0
    assert card["command"] == "test" and card["recipe"]["epochs"] == 2
    measured = card["measured"]
    assert measured["test_images"] == 60 and measured["onnx"]["agreement"]["images"] == 60
    agreement = measured["onnx"]["agreement"]
    assert agreement["same_argmax"] + agreement["near_ties"] >= 60
    q = measured["int8"]
    assert q["calibration_images"] == 100 and q["selection_images"] == 200
    assert isinstance(q["per_channel"], bool) and ("per-channel" in q["choice"]) and q["bytes"] < measured["onnx"]["bytes"]
    assert abs(q["drop_points"] - (q["test_accuracy"] - measured["onnx"]["test_accuracy"])) < 1e-6
    markdown = (out / "net.card.md").read_text()
    assert "ONNX int8" in markdown and card["files"]["onnx"]["sha256"] in markdown

    int8 = ox.session((out / "net.int8.onnx").read_bytes())
    assert {n.op_type for n in __import__("onnx").load(out / "net.int8.onnx").graph.node} >= {"QLinearConv"}
    assert int8.run(None, {"images": pixels.numpy()})[0].shape == (7, 10)


def test_the_cli_exports_onnx_and_evaluate_reproduces_the_cards_accuracy(deploy_setup, tmp_path):
    study, artifacts, data = deploy_setup
    db = f"sqlite:///{tmp_path / 'study.db'}"
    result = cli_in_process("export", "--storage", db, "--artifacts", str(artifacts), "--output",
                            str(tmp_path / "net.py"), "--onnx", str(tmp_path / "net.onnx"), "--int8",
                            str(tmp_path / "net.int8.onnx"), "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert "ONNX fp32 (onnxruntime): test accuracy" in result.stdout and "ONNX int8" in result.stdout
    card = json.loads((tmp_path / "net.card.json").read_text())
    assert card["command"].startswith("mnist-search export --storage") and "--onnx" in card["command"]
    assert not (tmp_path / "net.safetensors").exists()  # ONNX carries its own weights; none were asked for
    for name, key in (("net.onnx", "onnx"), ("net.int8.onnx", "int8")):
        evaluated = cli_in_process("evaluate", str(tmp_path / name), "--data-dir", str(data))
        assert evaluated.returncode == 0, evaluated.stderr
        assert f"test accuracy {card['measured'][key]['test_accuracy']:.2f}% on 60 images" in evaluated.stdout


def test_without_the_onnx_packages_export_says_what_to_install(deploy_setup, tmp_path, monkeypatch):
    study, artifacts, data = deploy_setup
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it now fails as if absent
    result = cli_in_process("export", "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--artifacts",
                            str(artifacts), "--output", str(tmp_path / "net.py"), "--onnx", str(tmp_path / "net.onnx"),
                            "--data-dir", str(data))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "pip install 'mnist-search[onnx]'" in result.stderr
    assert not (tmp_path / "net.py").exists() and not (tmp_path / "net.onnx").exists()
    evaluated = cli_in_process("evaluate", str(tmp_path / "x.onnx"), "--data-dir", str(data))
    assert evaluated.returncode == 2


@pytest.mark.parametrize("case", ["symlink", "onto weights", "onto module", "into the data", "into artifacts"])
def test_deploy_outputs_never_replace_inputs_or_follow_links(deploy_setup, tmp_path, case):
    from mnist_search.search.deploying import export_deployable

    study, artifacts, data = deploy_setup
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    onnx = {"symlink": tmp_path / "link.onnx", "onto weights": tmp_path / "net.safetensors",
            "onto module": tmp_path / "net.py", "into the data": data / "MNIST" / "raw" / "x.onnx",
            "into artifacts": artifacts / "x.onnx"}[case]
    if case == "symlink":
        os.symlink(victim, onnx)
    with pytest.raises(UserError):
        export_deployable(study, tmp_path / "net.py", weights=tmp_path / "net.safetensors", onnx=onnx, data_dir=data,
                          artifact_dir=artifacts)
    assert victim.read_text() == "keep"
    assert not (tmp_path / "net.py").exists() and not (tmp_path / "net.card.json").exists()


def test_a_graph_that_disagrees_with_pytorch_is_refused():
    reference = np.array([[0.0, 1.0, 0.5], [2.0, 0.0, 0.0]], dtype=np.float32)
    assert ox.check_agreement(reference, reference + 1e-6).same_argmax == 2
    with pytest.raises(WorkFailed, match="disagrees"):
        ox.check_agreement(reference, reference + np.float32(1e-3))
    with pytest.raises(WorkFailed, match="argmax agrees on 1 of 2"):
        ox.check_agreement(reference, reference[:, ::-1].copy())
    tie = np.array([[1.0, 1.0 + 1e-5]], dtype=np.float32)  # within the tolerance: either class is right
    assert ox.check_agreement(tie, tie[:, ::-1].copy()).near_ties == 1


def test_evaluate_refuses_an_onnx_file_that_is_not_one(tmp_path, tiny_mnist):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    result = cli_in_process("evaluate", str(bogus), "--data-dir", str(tiny_mnist))
    assert result.returncode == 2 and "onnxruntime cannot load" in result.stderr
    result = cli_in_process("evaluate", str(tmp_path / "net.py"), "--data-dir", str(tiny_mnist))
    assert result.returncode == 2 and "--weights" in result.stderr


def test_the_python_api_exports_onnx_and_says_what_it_measured(deploy_setup, tmp_path):
    import mnist_search as ms
    from mnist_search.search.deploying import Deployed

    study, artifacts, data = deploy_setup
    done = ms.export(study, tmp_path / "api_net.py", artifacts=artifacts, int8=tmp_path / "api_net.int8.onnx",
                     data_dir=data)
    assert isinstance(done, Deployed) and done.onnx is None and done.int8 == tmp_path / "api_net.int8.onnx"
    images, labels = mnist_test_split(data)
    assert done.measured["int8"]["test_accuracy"] == ox.accuracy(ox.onnx_logits(done.int8.read_bytes(), images), labels)
    card = json.loads(done.card_json.read_text())
    assert card["command"].startswith("mnist_search.export(<study 'mnist-search' in sqlite:///")
    assert "int8=" in card["command"] and "onnx" not in card["files"]  # fp32 was built and checked, not written
    assert not (tmp_path / "api_net.onnx").exists()


def mnist_test_split(data):
    from mnist_search.trainer import load_mnist

    test = load_mnist(data, val_size=0).test
    return test.images, test.labels
