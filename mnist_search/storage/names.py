"""What a study store accepts as a study name.

Optuna stores the name in an indexed VARCHAR column; PostgreSQL refuses a longer value
mid-command (SQLite would keep it, so a study could not move to PostgreSQL later), and
PostgreSQL text cannot hold a NUL character.
"""

from __future__ import annotations

from optuna.storages._rdb.models import MAX_INDEXED_STRING_LENGTH

from mnist_search.errors import StorageError

MAX_STUDY_NAME_LENGTH = MAX_INDEXED_STRING_LENGTH


def check_study_name(name: str) -> str:
    """``name`` if every supported store can hold it, else StorageError."""
    if not name.strip():
        raise StorageError("the study name is empty; give the study a name")
    if len(name) > MAX_STUDY_NAME_LENGTH:
        raise StorageError(f"the study name is {len(name)} characters long; a study store allows at most "
                           f"{MAX_STUDY_NAME_LENGTH}")
    if "\x00" in name:
        raise StorageError("the study name contains a NUL character, which PostgreSQL cannot store; remove it")
    return name
