"""Never trust a stored number that can be computed: budgets are checked against the network
that is built, an export must compute what the library's network computes, and a confirmation
target outside 0-100 is refused before training. Real SQLite studies and artifacts."""

from __future__ import annotations

import pytest

from mnist_search.errors import UserError
from mnist_search.models import ArchSpec, count_params
from mnist_search.search import exporting, records
from mnist_search.search.exporting import export
from tests.helpers import assert_user_error, cli_in_process
from tests.search.test_export_safety import SPEC, make_study

BUILT = count_params(SPEC)


@pytest.mark.parametrize("stored", [-5, 0, 300, BUILT - 1])
def test_a_budget_is_checked_against_the_network_that_is_built(tmp_path, stored):
    study, artifacts = make_study(tmp_path, **{records.PARAMS: stored})
    with pytest.raises(UserError, match=f"no completed trial has at most {BUILT - 1:,} parameters "
                                        f"\\(the smallest has {BUILT:,}\\)"):
        export(study, tmp_path / "net.py", max_params=BUILT - 1, artifact_dir=artifacts)
    assert not (tmp_path / "net.py").exists()
    done = export(study, tmp_path / "net.py", max_params=BUILT, artifact_dir=artifacts)
    assert done.trial.params == BUILT and f"Parameters: {BUILT:,}" in (tmp_path / "net.py").read_text()


def test_an_export_that_computes_something_else_is_not_written(tmp_path, monkeypatch):
    study, artifacts = make_study(tmp_path)
    real = exporting.export_source
    # The same tensors in another order of operations: the weights load, the outputs differ.
    swapped = ArchSpec.from_dict({"layers": [
        {**layer, "post": list(reversed(layer["post"]))} if layer.get("post") else layer
        for layer in SPEC.to_dict()["layers"]]})
    assert count_params(swapped) == BUILT
    monkeypatch.setattr(exporting, "export_source", lambda spec, *args, **kwargs: real(swapped, *args, **kwargs))
    with pytest.raises(UserError, match="computes something other than its network"):
        export(study, tmp_path / "net.py", weights=tmp_path / "net.safetensors", artifact_dir=artifacts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "study.db"]


def test_a_confirmation_target_outside_0_to_100_is_refused_before_training(tmp_path, tiny_mnist):
    _, artifacts = make_study(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    for target in ("nan", "inf", "-inf", "-1", "100.5", "1e308"):
        assert_user_error(cli_in_process("confirm", "--storage", url, "--trial", "0", "--seeds", "1", "--last-k", "1",
                                         f"--target={target}", "--data-dir", str(tiny_mnist), "--artifacts",
                                         str(artifacts)), "--target must be a percentage between 0 and 100")
    import optuna

    assert not any(k.startswith("confirm:") for k in optuna.load_study(study_name="mnist-search", storage=url).user_attrs)
