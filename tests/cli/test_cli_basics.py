"""The CLI as a user runs it: a real subprocess, real exit codes, real stdout/stderr."""

import json

import pytest
import torch

from mnist_search.models import ArchSpec, build
from mnist_search.models.weights import load_weights
from tests.helpers import assert_user_error, cli, cli_in_process


@pytest.mark.parametrize("name, params", [("seed001-exp4", 7288), ("seed001-exp5", 7753), ("seed002", 7684), ("seed003", 7884)])
def test_summary_json_reports_params_and_receptive_field(name, params):
    result = cli("summary", "--preset", name, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["params"] == params and report["receptive_field"] == 28
    assert sum(layer["params"] for layer in report["layers"]) == params
    assert report["layers"][-1]["out_shape"] == [10, 1, 1]


def test_summary_table_and_presets_list():
    table = cli("summary", "--preset", "seed002")
    assert table.returncode == 0 and "total parameters: 7,684" in table.stdout and "10x1x1" in table.stdout
    listing = cli("presets")
    assert listing.returncode == 0
    for name in ("seed001-exp4", "seed001-exp5", "seed002", "seed003"):
        assert name in listing.stdout


def test_summary_of_a_spec_file(tmp_path):
    spec = tmp_path / "net.json"
    spec.write_text(json.dumps({"layers": [{"op": "conv", "out": 8}, {"op": "maxpool", "k": 2},
                                           {"op": "conv", "out": 10, "k": 1, "post": []}, {"op": "gap"}]}))
    report = json.loads(cli("summary", "--spec", str(spec), "--json").stdout)
    assert report["params"] == 8 * 9 + 16 + 80 and report["receptive_field"] == 4 + 12 * 2


def test_bad_summary_inputs_are_one_line_exit_2(tmp_path):
    assert_user_error(cli("summary", "--preset", "seed999"), "unknown preset", "seed001-exp4")
    assert_user_error(cli("summary", "--spec", str(tmp_path / "missing.json")), "cannot read spec file")
    (tmp_path / "broken.json").write_text("{not json")
    assert_user_error(cli("summary", "--spec", str(tmp_path / "broken.json")), "not valid JSON")
    (tmp_path / "invalid.json").write_text(json.dumps({"layers": [{"op": "conv", "out": 16}, {"op": "gap"}]}))
    assert_user_error(cli("summary", "--spec", str(tmp_path / "invalid.json")), "must end in 10x1x1")
    assert_user_error(cli("summary"), "--preset", "--help")


def test_train_writes_metrics_and_weights(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--preset", "seed001-exp4", "--epochs", "2", "--batch-size", "64", "--data-dir",
                 str(tiny_mnist), "--val-size", "100", "--out", str(out), "--device", "cpu", "-q")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.strip().split(" ")[0] in ("1", "2")]
    assert len(rows) == 2  # one table row per epoch
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["params"] == 7288 and len(metrics["history"]) == 2
    assert metrics["config"]["scheduler"] == "step" and metrics["config"]["batch_size"] == 64  # recipe + override
    model = load_weights(build(ArchSpec.from_dict(metrics["spec"])), out / "weights.safetensors")
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_train_evaluates_on_test_with_all_training_images(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    result = cli_in_process("train", "--preset", "seed002", "--epochs", "1", "--eval", "test", "--data-dir",
                            str(tiny_mnist), "--val-size", "100", "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["eval_images"], metrics["evaluated_on"]) == (400, 100, "test")


def test_bad_train_inputs_are_one_line_exit_2(tiny_mnist, tmp_path):
    data = ("--data-dir", str(tiny_mnist), "--val-size", "100")
    # One check in a real process; the rest run the same entry point in this one (cli_in_process says why).
    assert_user_error(cli("train", "--preset", "nope", *data), "unknown preset")
    assert_user_error(cli_in_process("train", "--preset", "seed002", "--epochs", "0", *data, "--out",
                                     str(tmp_path / "a")), "--epochs must be at least 1")
    (tmp_path / "bad.json").write_text('{"layers": [{"op": "pool"}]}')
    assert_user_error(cli_in_process("train", "--spec", str(tmp_path / "bad.json"), *data), "unknown op 'pool'")
    if not torch.cuda.is_available():
        assert_user_error(cli_in_process("train", "--preset", "seed002", "--device", "cuda", *data), "no CUDA GPU")
    empty = tmp_path / "nodata"
    empty.mkdir()
    result = cli_in_process("train", "--preset", "seed002", "--data-dir", str(empty), "--out", str(tmp_path / "b"))
    assert_user_error(result, "--data-dir", "MNIST_SEARCH_DATA_DIR")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_user_error(cli_in_process("train", "--preset", "seed002", *data, "--out", str(blocker / "sub")),
                      "cannot write to output directory")
    assert_user_error(cli_in_process("train", "--preset", "seed002", "--eval", "train", *data), "invalid choice")
    assert_user_error(cli_in_process("train", "--preset", "seed002", "--data-dir", str(tiny_mnist), "--val-size", "0"),
                      "--val-size must be at least 1 with --eval val")
    assert_user_error(cli_in_process("train", "--preset", "seed002", "--seed", "-1", *data), "--seed must be 0 or more")
    # A failed run leaves no empty output directory behind (bad data is found before it is made).
    assert not (tmp_path / "b").exists()


def test_train_distils_from_a_teacher_given_by_spec_and_weights(tiny_mnist, tmp_path):
    teacher_dir = tmp_path / "teacher"
    data = ("--data-dir", str(tiny_mnist), "--val-size", "100", "--device", "cpu", "-q")
    assert cli_in_process("train", "--preset", "seed002", "--epochs", "1", "--out", str(teacher_dir), *data).returncode == 0
    spec = tmp_path / "teacher.json"
    spec.write_text(json.dumps(json.loads((teacher_dir / "metrics.json").read_text())["spec"]))
    weights = str(teacher_dir / "weights.safetensors")
    out = tmp_path / "student"
    result = cli_in_process("train", "--preset", "seed001-exp4", "--epochs", "1", "--teacher", str(spec),
                            "--teacher-weights", weights, "--distill-temperature", "3", "--out", str(out), *data)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["distill_weight"] == 0.5 and config["distill_temperature"] == 3
    assert_user_error(cli_in_process("train", "--preset", "seed002", "--teacher", str(spec), *data), "both --teacher")
    assert_user_error(cli_in_process("train", "--preset", "seed002", "--distill-weight", "0.3", *data),
                      "--distill-weight needs")
    assert_user_error(cli_in_process("train", "--preset", "seed002", "--teacher", str(spec), "--teacher-weights",
                                     str(tmp_path / "none.safetensors"), *data), "cannot read weights")
