"""Storage URLs: which store a study lives in, how to open it, and how to show its URL safely."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from mnist_search.defaults import DEFAULT_HEARTBEAT_GRACE_S, DEFAULT_STORAGE, STORAGE_ENV
from mnist_search.errors import UserError
from mnist_search.storage.resilient import ResilientRDBStorage

SCHEMES = ("sqlite", "postgresql")
# A worker that stops heart-beating for the grace period is presumed dead: the next worker
# to start a trial fails its trial and enqueues a retry. Beats come 4 times per grace period.
MAX_RETRY = 2


def resolve_storage_url(url: str | None) -> str:
    """``--storage`` > $MNIST_SEARCH_STORAGE > sqlite:///mnist-search.db (in the working directory)."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def mask_password(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable storage URL>"


def open_storage(url: str, heartbeat_grace: int = DEFAULT_HEARTBEAT_GRACE_S) -> RDBStorage:
    """An Optuna RDB storage with heartbeats and retry of failed trials; UserError if unusable."""
    shown = mask_password(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(
            f"malformed storage URL {shown}; use sqlite:///PATH.db or postgresql://USER@HOST:PORT/DB"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in SCHEMES:
        raise UserError(f"unsupported storage {backend!r} in {shown}; use sqlite:///PATH.db or postgresql://...")
    if backend == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite" and is_in_memory(parsed):
        # Each thread (trials, heartbeats) would get its own empty database, and all of it is lost on exit.
        raise UserError("an in-memory SQLite storage keeps no trials; use sqlite:///PATH.db")
    if backend == "sqlite":
        parent = Path(parsed.database).expanduser().resolve().parent
        if not parent.is_dir():
            raise UserError(f"directory {parent} of the SQLite storage {shown} does not exist; create it first")
    engine_kwargs = {"pool_pre_ping": True} if backend == "postgresql" else {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; they are what we want
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = ResilientRDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=max(1, heartbeat_grace // 4),
                grace_period=heartbeat_grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            )
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UserError(f"cannot open storage {shown}: {reason}") from None
    return storage


def is_in_memory(parsed: URL) -> bool:
    """sqlite://, sqlite:///:memory: and SQLite's URI forms (file::memory:, mode=memory)."""
    database = parsed.database or ""
    return database in ("", ":memory:") or database.startswith("file::memory:") or parsed.query.get("mode") == "memory"


def default_artifact_dir(url: str) -> Path:
    """A directory beside a SQLite file (``NAME-artifacts``), else ./mnist-search-artifacts."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        db = Path(parsed.database).expanduser()
        return db.with_name(db.stem + "-artifacts")
    return Path("mnist-search-artifacts")


__all__ = ["DEFAULT_STORAGE", "STORAGE_ENV", "default_artifact_dir", "mask_password", "open_storage",
           "resolve_storage_url"]
