"""Export under attack: hostile values stored in a study never become code, and no output ever
replaces the store, an artifact or another output (real SQLite files, real artifact store)."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

import optuna
import pytest
import torch

from mnist_search.errors import OutputExists, UserError
from mnist_search.models import ArchSpec, get_preset
from mnist_search.models.export import GeneratedCodeError, check_source, export_source
from mnist_search.search import records
from mnist_search.search.artifacts import store_weights
from mnist_search.search.exporting import export
from mnist_search.search.settings import ConfirmSettings
from mnist_search.trainer import TrainConfig, build_seeded
from tests.helpers import stored_epochs

PWNED = "PWNED-export-injection"
PAYLOAD = f'x"""+str(__import__("os").system("touch {PWNED}"))+"""'
SPEC = get_preset("seed002").spec


def make_study(tmp_path: Path, name: str = "mnist-search", storage: str | None = None,
               **overrides) -> tuple[optuna.Study, Path]:
    """A study holding one completed trial of seed002 with stored weights, in ``storage`` (by
    default the SQLite file study.db in ``tmp_path``); ``overrides`` replace trial user attributes
    (values as an attacker would store them)."""
    storage = storage or f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    artifacts = tmp_path / "artifacts"
    artifact_id, digest = store_weights(build_seeded(SPEC, 0), artifacts, study, "trial-0")
    attrs = {records.PARAMS: 7684, records.RECEPTIVE_FIELD: 28, records.SPEC: SPEC.to_dict(),
             records.CONFIG: TrainConfig(epochs=2).to_dict(), records.HISTORY: stored_epochs(98.0, 98.5),
             records.LAST_K_MIN: 98.5, records.WEIGHTS_ARTIFACT: artifact_id, records.WEIGHTS_SHA256: digest,
             **overrides}
    study.add_trial(optuna.trial.create_trial(value=98.5, user_attrs=attrs))
    return study, artifacts


def import_module(path: Path):
    loaded = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def test_a_hostile_study_name_is_only_text_in_the_docstring(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = PAYLOAD + "\r\n'''\\\u2028\x00 end"
    study, artifacts = make_study(tmp_path, name=name)
    done = export(study, tmp_path / "net.py", weights=tmp_path / "net.safetensors", artifact_dir=artifacts)
    module = import_module(done.module)
    assert not (tmp_path / PWNED).exists()
    assert repr(name) in module.__doc__
    assert module.predict(torch.zeros(28, 28, dtype=torch.uint8)).shape == (1,)


@pytest.mark.parametrize("overrides", [
    {records.RECEPTIVE_FIELD: PAYLOAD},
    {records.PARAMS: PAYLOAD},
    {records.HISTORY: [{**stored_epochs(98.0)[0], "eval_acc": PAYLOAD}]},
    {records.LAST_K_MIN: PAYLOAD},
    {records.SEED_SCORES: [PAYLOAD]},
    {records.WEIGHTS_ARTIFACT: "../../etc/passwd"},
    {records.SPEC: {"layers": [{"op": PAYLOAD}]}},
    {records.SPEC: {"layers": [{"op": "conv", "out": PAYLOAD}]}},
    {records.SPEC: {"layers": [{"op": "conv", "out": 10, "post": [PAYLOAD]}]}},
    {records.SPEC: {"layers": [{"op": "conv", "out": 10, "dropout": float("nan")}]}},
    {records.CONFIG: {**TrainConfig().to_dict(), "optimizer": PAYLOAD}},
    {records.CONFIG: {**TrainConfig().to_dict(), "lr": PAYLOAD}},
    {records.CONFIG: {**TrainConfig().to_dict(), PAYLOAD: 1}},
], ids=lambda o: next(iter(o)))
def test_a_hostile_trial_value_is_refused_and_nothing_is_written(tmp_path, monkeypatch, overrides):
    monkeypatch.chdir(tmp_path)
    study, artifacts = make_study(tmp_path, **overrides)
    with pytest.raises(UserError):
        export(study, tmp_path / "net.py", weights=tmp_path / "net.safetensors", artifact_dir=artifacts)
    assert not (tmp_path / "net.py").exists() and not (tmp_path / "net.safetensors").exists()
    assert not (tmp_path / PWNED).exists()


@pytest.mark.parametrize("field, value", [("target", PAYLOAD), ("last_k", PAYLOAD), ("runs", PAYLOAD)])
def test_a_hostile_confirmation_is_refused(tmp_path, field, value):
    study, artifacts = make_study(tmp_path)
    stored = {"runs": [{"seed": 0, "status": "completed", "test_acc": [99.0]}], "last_k": 1, "target": 99.4}
    study.set_user_attr(records.confirm_key(0), {**stored, field: value})
    with pytest.raises(records.RecordError):
        export(study, tmp_path / "net.py", artifact_dir=artifacts)
    assert not (tmp_path / "net.py").exists()


@pytest.mark.parametrize("run_field, value", [("seed", PAYLOAD), ("device", PAYLOAD), ("test_acc", [PAYLOAD]),
                                              ("weights_artifact", "/etc/passwd"), ("status", PAYLOAD)])
def test_a_hostile_confirmation_run_is_refused(tmp_path, run_field, value):
    study, artifacts = make_study(tmp_path)
    run = {"seed": 0, "status": "completed", "test_acc": [99.0], run_field: value}
    study.set_user_attr(records.confirm_key(0), {"runs": [run], "last_k": 1, "target": 99.4})
    with pytest.raises(records.RecordError):
        export(study, tmp_path / "net.py", artifact_dir=artifacts)


def test_check_source_refuses_code_outside_the_template():
    spec = ArchSpec.from_dict(SPEC.to_dict())
    source = export_source(spec, "title")
    tree = ast.parse(source)
    doc, net_doc = ast.get_docstring(tree, clean=False), ast.get_docstring(
        next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Net"), clean=False)
    calls = [(ast.unparse(c.func), tuple(ast.literal_eval(a) for a in c.args),
              {k.arg: ast.literal_eval(k.value) for k in c.keywords})
             for c in ast.walk(tree) if isinstance(c, ast.Call) and ast.unparse(c.func) in ("ConvBlock", "nn.MaxPool2d",
                                                                                            "nn.AdaptiveAvgPool2d")]
    check_source(source, doc, net_doc, calls, None)  # the genuine module passes
    for tampered in (source + "\nimport os\n",
                     source.replace("import json", "import json, os"),
                     source.replace("nn.MaxPool2d(2)", "nn.MaxPool2d(__import__('os').getpid())"),
                     source.replace('"""title', '"""title"""+str(1)+"""')):
        with pytest.raises(GeneratedCodeError):
            check_source(tampered, doc, net_doc, calls, None)


def test_outputs_never_replace_the_store_artifacts_or_each_other(tmp_path):
    study, artifacts = make_study(tmp_path)
    store = tmp_path / "study.db"
    before = store.read_bytes()
    artifact = next(artifacts.iterdir())
    artifact_bytes = artifact.read_bytes()
    cases = [
        dict(output=store),  # the SQLite store itself
        dict(output=tmp_path / "net.py", weights=artifact),  # the trial's own weights artifact
        dict(output=tmp_path / "net.py", weights=tmp_path),  # a directory
        dict(output=tmp_path / "same", weights=tmp_path / "same"),  # the module over the weights
        dict(output=tmp_path / "missing-dir" / "net.py"),
    ]
    for case in cases:
        with pytest.raises(UserError):
            export(study, artifact_dir=artifacts, protected=(store,), **case)
    assert store.read_bytes() == before and artifact.read_bytes() == artifact_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "study.db"]


def test_damaged_or_swapped_weights_write_nothing(tmp_path):
    study, artifacts = make_study(tmp_path)
    artifact = next(artifacts.iterdir())
    good = artifact.read_bytes()
    for damaged in (good[:-10], b"\x00" * 64, good[:-1] + bytes([good[-1] ^ 0xFF])):
        artifact.write_bytes(damaged)
        with pytest.raises(UserError):
            export(study, tmp_path / "net.py", weights=tmp_path / "net.safetensors", artifact_dir=artifacts)
        assert not (tmp_path / "net.py").exists() and not (tmp_path / "net.safetensors").exists()


def test_weights_of_another_network_are_refused_even_without_a_checksum(tmp_path):
    study, artifacts = make_study(tmp_path)
    artifact_id, _ = store_weights(build_seeded(get_preset("seed003").spec, 0), artifacts, study, "other")
    (tmp_path / "two").mkdir()
    study2, _ = make_study(tmp_path / "two", **{records.WEIGHTS_ARTIFACT: artifact_id, records.WEIGHTS_SHA256: None})
    with pytest.raises(UserError, match="do not fit"):
        export(study2, tmp_path / "net.py", weights=tmp_path / "net.safetensors", artifact_dir=artifacts)


def test_an_export_replaces_its_own_earlier_output_atomically_only_when_forced(tmp_path):
    study, artifacts = make_study(tmp_path)
    module, weights = tmp_path / "net.py", tmp_path / "net.safetensors"
    export(study, module, weights=weights, artifact_dir=artifacts)
    before = module.read_bytes()
    with pytest.raises(OutputExists, match="net.py exists already"):
        export(study, module, weights=tmp_path / "other.safetensors", artifact_dir=artifacts)
    assert not (tmp_path / "other.safetensors").exists() and module.read_bytes() == before  # nothing written
    export(study, module, weights=weights, artifact_dir=artifacts, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "net.py", "net.safetensors", "study.db"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == study.trials[0].user_attrs[records.WEIGHTS_SHA256]


def test_the_exported_module_takes_images_as_people_have_them(tmp_path):
    study, artifacts = make_study(tmp_path)
    done = export(study, tmp_path / "net_use.py", weights=tmp_path / "net_use.safetensors", artifact_dir=artifacts)
    module = import_module(done.module)
    assert set(vars(module)) >= {"MEAN", "STD", "preprocess", "predict", "load_weights", "Net"}
    pixels = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    batch = module.preprocess(pixels)
    assert batch.shape == (5, 1, 28, 28)
    torch.testing.assert_close(module.preprocess(pixels.float() / 255), batch)
    torch.testing.assert_close(module.preprocess(pixels[:, None]), batch)
    assert module.preprocess(pixels[0]).shape == (1, 1, 28, 28)
    assert module.predict(pixels).shape == (5,) and module.predict(pixels[0]).shape == (1,)
    assert torch.equal(module.predict(pixels), module.predict(pixels.float() / 255))
    for wrong in (pixels.float(), (pixels.float() / 255 - module.MEAN) / module.STD, torch.zeros(3, 28, 27),
                  torch.zeros(2, 3, 28, 28)):
        with pytest.raises(ValueError):
            module.predict(wrong)
    net = module.load_weights(str(tmp_path / "net_use.safetensors"))
    assert torch.equal(module.predict(pixels, model=net), module.predict(pixels))
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(done.module.read_text()))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    imported |= {node.module for node in ast.walk(ast.parse(done.module.read_text()))
                 if isinstance(node, ast.ImportFrom)}
    assert imported <= {"functools", "json", "os", "torch", "nn"}  # the standard library and torch only


def test_a_plain_optuna_study_is_refused_by_every_reading_command(tmp_path):
    from mnist_search.search.confirm import confirm
    from mnist_search.search.report import write_report

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'plain.db'}", study_name="plain", direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    with pytest.raises(records.RecordError, match="was the study made by mnist-search"):
        export(study, tmp_path / "net.py")
    with pytest.raises(records.RecordError, match="was the study made by mnist-search"):
        confirm(study, ConfirmSettings(last_k=1), artifact_dir=tmp_path / "a")
    with pytest.raises(records.RecordError, match="not made by mnist-search"):
        write_report(study, tmp_path / "report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.db"]
