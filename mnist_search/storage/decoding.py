"""Stored values Optuna cannot decode, found and named in one line.

Optuna decodes every stored attribute, parameter and distribution as JSON when it reads a
trial or a study; one bad value (invalid UTF-8, malformed or very deep JSON, a number too long
for Python, an unknown distribution, a categorical index outside its choices, NULL) raises from
deep inside it, and SQLite's "could not decode to UTF-8" even looks like a transient fault. When
a read fails that way, the store is scanned for the first such value, so the message can name
the study, the trial and the field; nothing is retried, since reading again cannot help.
"""

from __future__ import annotations

import json

from optuna.distributions import CategoricalDistribution, json_to_distribution
from sqlalchemy import text
from sqlalchemy.engine import Engine

from mnist_search.errors import StorageError

# What Optuna's decoding raises on a bad value (json's errors are ValueErrors).
DECODE_ERRORS = (UnicodeDecodeError, RecursionError, ValueError, KeyError, IndexError, TypeError, AttributeError)
_TRIAL_FIELDS = (("trial_user_attributes", "key", "value_json", "user attribute"),
                 ("trial_system_attributes", "key", "value_json", "system attribute"))
_STUDY_FIELDS = (("study_user_attributes", "key", "value_json", "user attribute"),
                 ("study_system_attributes", "key", "value_json", "system attribute"))


class StoredDataError(StorageError):
    """A value in the store that Optuna cannot decode; the message names where it is."""


def undecodable(engine: Engine) -> str | None:
    """Where the first value Optuna cannot decode is, and why, in words; None when none is found."""
    raw = "CAST({} AS BLOB)" if engine.dialect.name == "sqlite" else "{}"
    with engine.connect() as db:
        for table, key, column, what in _STUDY_FIELDS:
            rows = db.execute(text(f"SELECT s.study_name, a.{key}, {raw.format('a.' + column)} FROM {table} a "
                                   "JOIN studies s ON a.study_id = s.study_id"))
            for study, name, value in rows:
                problem = _json_problem(value)
                if problem:
                    return f"study {study!r}: its {what} {name!r} {problem}"
        trial = "FROM {} a JOIN trials t ON a.trial_id = t.trial_id JOIN studies s ON t.study_id = s.study_id"
        for table, key, column, what in _TRIAL_FIELDS:
            rows = db.execute(text(f"SELECT s.study_name, t.number, a.{key}, {raw.format('a.' + column)} "
                                   + trial.format(table)))
            for study, number, name, value in rows:
                problem = _json_problem(value)
                if problem:
                    return f"study {study!r} trial #{number}: its {what} {name!r} {problem}"
        rows = db.execute(text(f"SELECT s.study_name, t.number, a.param_name, {raw.format('a.distribution_json')}, "
                               "a.param_value " + trial.format("trial_params")))
        for study, number, name, distribution, value in rows:
            problem = _json_problem(distribution) or _param_problem(distribution, value)
            if problem:
                return f"study {study!r} trial #{number}: its parameter {name!r} {problem}"
    return None


def _json_problem(value: object) -> str | None:
    if value is None:
        return "is NULL"
    try:
        decoded = bytes(value).decode("utf-8") if isinstance(value, bytes | bytearray | memoryview) else value
        json.loads(decoded)
    except UnicodeDecodeError as exc:
        return f"is not valid UTF-8 (byte {exc.start})"
    except RecursionError:
        return "is JSON nested too deeply to read"
    except ValueError as exc:
        return f"is not JSON that can be read ({str(exc).splitlines()[0][:80]})"
    return None


def _param_problem(distribution: object, value: object) -> str | None:
    """A distribution Optuna does not know, or a stored value outside it."""
    try:
        text_ = bytes(distribution).decode() if isinstance(distribution, bytes | memoryview) else distribution
        decoded = json_to_distribution(text_)
    except DECODE_ERRORS as exc:
        reason = str(exc).splitlines()[0][:80] if str(exc) else ""
        return f"has a distribution Optuna cannot read ({type(exc).__name__}: {reason})"
    if value is None:
        return "has a NULL value"
    if isinstance(decoded, CategoricalDistribution):
        if not float(value).is_integer() or not 0 <= int(value) < len(decoded.choices):
            return f"stores choice index {value!r}, outside its {len(decoded.choices)} choices"
    return None


def stored_data_error(engine: Engine, shown: str, exc: BaseException) -> StoredDataError | None:
    """The one-line error for a read that failed on an undecodable value, or None when the store
    holds none (then ``exc`` is something else and is raised as it is)."""
    try:
        where = undecodable(engine)
    except Exception:  # noqa: BLE001 - the scan is a diagnosis; its own failure must not mask the first
        return None
    if where is None:
        return None
    return StoredDataError(f"storage {shown}: {where}; repair or delete that value in the store (reading it "
                           "again cannot help)")
