"""Opening a study store: refuse one this tool cannot use, create one only when asked to.

Refused with one line, before anything is written: a SQLite file that holds another
program's tables (Optuna would add its own beside them), and a store whose schema another
Optuna version wrote (Optuna checks that only after creating any missing tables).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb.models import BaseModel
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL

from mnist_search.defaults import DEFAULT_HEARTBEAT_GRACE_S
from mnist_search.errors import StorageError, UserError
from mnist_search.storage.faults import database_error, explain
from mnist_search.storage.locks import file_lock, postgres_lock
from mnist_search.storage.resilient import ResilientRDBStorage
from mnist_search.storage.urls import checked_url, hide_password, mask_password

# A worker that stops heart-beating for the grace period is presumed dead: the next worker
# to start a trial fails its trial and enqueues a retry. Beats come 4 times per grace period.
MAX_RETRY = 2
# Every table any Optuna schema has had (older schemas hold a subset of today's).
OPTUNA_TABLES = frozenset(BaseModel.metadata.tables) | {"alembic_version"}
RUN_FIRST = "run `mnist-search run` first"


class NoStore(StorageError):
    """Nothing is stored at the URL yet (no SQLite file, or a database without Optuna's tables)."""


def open_storage(url: str, heartbeat_grace: int = DEFAULT_HEARTBEAT_GRACE_S, create: bool = True) -> RDBStorage:
    """An Optuna RDB storage with heartbeats and retry of failed trials; StorageError if unusable.

    ``create=False`` opens only a store that exists (for commands that read a study): a
    missing SQLite file or an empty database is an error, and nothing is created.
    """
    parsed = checked_url(url)
    shown = mask_password(url)
    try:
        return _open(parsed, shown, heartbeat_grace, create)
    except UserError:
        raise
    except Exception as exc:  # from the driver or Optuna; its text may quote the URL: not chained
        reason = hide_password(explain(database_error(exc) or exc), url)
        raise StorageError(f"cannot open storage {shown}: {reason}") from None


def _open(parsed: URL, shown: str, heartbeat_grace: int, create: bool) -> RDBStorage:
    postgres = parsed.get_backend_name() == "postgresql"
    engine_kwargs = {"pool_pre_ping": True} if postgres else {"connect_args": {"timeout": 60}}
    if postgres:
        tables = table_names(parsed, engine_kwargs)
        foreign = tables - OPTUNA_TABLES
        if create and foreign and "alembic_version" not in tables:
            # Optuna would add its tables beside another application's, in its database.
            raise StorageError(f"database {parsed.database} of {shown} holds the tables "
                               f"{', '.join(sorted(foreign)[:5])}{' ...' if len(foreign) > 5 else ''} of another "
                               "application; give mnist-search a database of its own (CREATE DATABASE ...); "
                               "nothing was added")
    else:
        path = _sqlite_path(parsed, shown)
        if not path.exists() and not create:
            raise NoStore(f"no study store at {path}; {RUN_FIRST}")
        tables = table_names(parsed, engine_kwargs) if path.exists() else set()
        foreign = tables - OPTUNA_TABLES
        if foreign:
            raise StorageError(f"{path} is not an Optuna study store: it holds the tables {', '.join(sorted(foreign))} "
                               "of another program; choose another file")
    if "studies" not in tables and not create:
        raise NoStore(f"no study store in {shown}; {RUN_FIRST}")
    if create and "alembic_version" not in tables:
        # Optuna creates the schema table by table, having looked first: processes creating one
        # store at once collide ("table ... already exists", pg_type_typname_nsp_index). The
        # first to take the lock creates it; the others find it made.
        with creation_lock(parsed, engine_kwargs):
            return _storage(parsed, shown, heartbeat_grace, engine_kwargs, table_names(parsed, engine_kwargs))
    return _storage(parsed, shown, heartbeat_grace, engine_kwargs, tables, create)


def check_location(url: str) -> None:
    """StorageError when ``url`` could not be opened for reasons that need no connection (its
    form, a SQLite file's missing directory): checked before anything else is written."""
    parsed = checked_url(url)
    if parsed.get_backend_name() != "postgresql":
        _sqlite_path(parsed, mask_password(url))


def _sqlite_path(parsed: URL, shown: str) -> Path:
    path = Path(parsed.database).resolve()  # as SQLite opens it: no ~ expansion
    if not path.parent.is_dir():
        tilde = "; SQLite does not expand ~, so write the path out" if parsed.database.startswith("~") else ""
        raise StorageError(f"directory {path.parent} of the SQLite storage {shown} does not exist; create it "
                           f"first{tilde}")
    return path


def creation_lock(parsed: URL, engine_kwargs: dict):
    """A lock every process creating this store takes: the directory of a SQLite file (no lock file
    is left beside the store), an advisory lock in a PostgreSQL database."""
    if parsed.get_backend_name() == "postgresql":
        return postgres_lock(parsed, "create-schema", engine_kwargs=engine_kwargs)
    return file_lock(Path(parsed.database).resolve().parent)


def _storage(parsed: URL, shown: str, heartbeat_grace: int, engine_kwargs: dict, tables: set[str],
             create: bool = True) -> RDBStorage:
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; they are what we want
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = ResilientRDBStorage(
            parsed.render_as_string(hide_password=False),
            engine_kwargs=engine_kwargs,
            # An existing store's schema is checked below, before anything could be added to it.
            skip_table_creation=not create or "alembic_version" in tables,
            skip_compatibility_check=True,
            heartbeat_interval=max(1, heartbeat_grace // 4),
            grace_period=heartbeat_grace,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )
    try:
        check_schema(storage, shown)
    except StorageError:
        storage.engine.dispose()
        raise
    return storage


def table_names(parsed: URL, engine_kwargs: dict) -> set[str]:
    """The tables in the database (PostgreSQL: its default schema)."""
    engine = create_engine(parsed, **engine_kwargs)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def check_schema(storage: RDBStorage, shown: str) -> None:
    """StorageError unless the store's schema is the one this Optuna writes."""
    current, head = storage.get_current_version(), storage.get_head_version()
    if current == head:
        return
    if current in storage.get_all_versions():
        raise StorageError(f"storage {shown} has the schema of an older Optuna ({current}; Optuna "
                           f"{optuna.__version__} needs {head}); upgrade it with "
                           "`optuna storage upgrade --storage URL`, after a backup")
    raise StorageError(f"storage {shown} was written by an Optuna newer than the installed "
                       f"{optuna.__version__} (schema {current}); upgrade Optuna: pip install -U optuna")
