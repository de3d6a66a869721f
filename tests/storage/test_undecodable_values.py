"""A stored value Optuna cannot decode is one line naming the study, the trial and the field, at
once (no retry), in every reading command. Values planted with raw SQL in a real SQLite file and
a real PostgreSQL database."""

from __future__ import annotations

import time

import optuna
import pytest

from mnist_search.search import records
from tests import stores
from tests.helpers import assert_user_error, cli_in_process, stored_epochs
from tests.search.test_export_safety import make_study

HISTORY = {records.HISTORY: stored_epochs(98.0, 98.5)}
TRIAL_ATTR = ("UPDATE trial_user_attributes SET value_json = {} WHERE key = 'history'", "trial #0: its user "
              "attribute 'history'")
STUDY_ATTR = ("UPDATE study_user_attributes SET value_json = {} WHERE key = 'planted'", "its user attribute 'planted'")
PARAM = "trial #0: its parameter 'optimizer'"
CASES = {
    "malformed JSON": (TRIAL_ATTR, "'{\"a\": '", "is not JSON that can be read"),
    "invalid UTF-8": (TRIAL_ATTR, "CAST(x'22ff22' AS TEXT)", "is not valid UTF-8"),
    "very deep JSON": (TRIAL_ATTR, "'" + "[" * 100_000 + "]" * 100_000 + "'", "nested too deeply"),
    "a number too long": (TRIAL_ATTR, "'" + "9" * 5000 + "'", "is not JSON that can be read"),
    "NULL": (TRIAL_ATTR, "NULL", "is NULL"),
    "a study attribute": (STUDY_ATTR, "'nope'", "is not JSON that can be read"),
    "an unknown distribution": (("UPDATE trial_params SET distribution_json = {}", PARAM),
                                "'{\"name\": \"Nope\", \"attributes\": {}}'", "has a distribution Optuna cannot read"),
    "a categorical index outside its choices": (("UPDATE trial_params SET param_value = {}", PARAM), "7",
                                                "outside its 2 choices"),
}


# PostgreSQL stores text as valid UTF-8 only: invalid bytes cannot be planted there (SQLite's
# reading of them is what looked like a transient fault).
SQLITE_ONLY = {"invalid UTF-8"}


@pytest.mark.parametrize("storage_url, case", [("sqlite", case) for case in sorted(CASES)]
                         + [("postgresql", case) for case in sorted(CASES) if case not in SQLITE_ONLY],
                         indirect=["storage_url"])
def test_an_undecodable_value_is_one_line_at_once(tmp_path, storage_url, case):
    (sql, field), value, problem = CASES[case]
    url = storage_url
    study, artifacts = make_study(tmp_path, storage=url, **HISTORY)
    study.set_user_attr("planted", 1)
    distribution = optuna.distributions.CategoricalDistribution(["sgd", "adamw"])
    study.add_trial(optuna.trial.create_trial(value=90.0, params={"optimizer": "sgd"},
                                              distributions={"optimizer": distribution}))
    stores.execute(url, "UPDATE trial_params SET trial_id = (SELECT min(trial_id) FROM trials)",  # onto trial #0
                   # and the trial that held it goes
                   *(f"DELETE FROM {table} WHERE trial_id = (SELECT max(trial_id) FROM trials)"
                     for table in ("trial_values", "trials")),
                   sql.format(value))
    commands = [("export", "--output", str(tmp_path / "net.py")), ("report", "--output", str(tmp_path / "r"))]
    if sql is not STUDY_ATTR[0]:  # confirm reads the study's own attributes only once it has trained
        commands.append(("confirm", "--trial", "0", "--artifacts", str(artifacts)))
    for command in commands:
        started = time.monotonic()
        result = cli_in_process(command[0], "--storage", url, *command[1:])
        assert_user_error(result, "study 'mnist-search'", field, problem, "repair or delete that value")
        assert time.monotonic() - started < 30  # not retried as a transient fault
    assert not (tmp_path / "net.py").exists() and not (tmp_path / "r").exists()
