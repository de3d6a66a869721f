"""An RDB storage that rides out a database restart instead of failing the running trial.

Optuna's RDBStorage turns any database error into StorageInternalError and the trial
fails. During a PostgreSQL restart (or a network blip) every call fails for a few
seconds; this subclass retries each storage call with backoff for up to
``RETRY_WINDOW_S`` seconds, and ``pool_pre_ping`` (set in ``open_storage``) replaces the
connections the restart killed. A failed call rolls its transaction back, so retrying it
is safe; the one residual risk is a commit that succeeded but whose reply was lost,
which could repeat that single write.
"""

from __future__ import annotations

import functools
import logging
import time

from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy.exc import DBAPIError, OperationalError

from mnist_search.storage.sqlite import begin_immediate

logger = logging.getLogger(__name__)

RETRY_WINDOW_S = 90.0
FIRST_DELAY_S, MAX_DELAY_S = 0.5, 5.0


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    cause = exc.__cause__ or exc.__context__
    return isinstance(exc, StorageInternalError) and cause is not None and _is_transient(cause)


def _retrying(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        deadline, delay = time.monotonic() + RETRY_WINDOW_S, FIRST_DELAY_S
        while True:
            try:
                return method(self, *args, **kwargs)
            except (StorageInternalError, OperationalError, DBAPIError) as exc:
                if not _is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                logger.warning("storage call %s failed (%s); retrying in %.1f s", method.__name__,
                               type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(2 * delay, MAX_DELAY_S)

    return call


class ResilientRDBStorage(RDBStorage):
    """RDBStorage whose every storage operation is retried across transient database outages,
    and whose SQLite transactions begin with the write lock (storage/sqlite.py)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lock_sqlite_transactions()

    def __setstate__(self, state: dict) -> None:  # unpickling builds a new engine
        super().__setstate__(state)
        self._lock_sqlite_transactions()

    def _lock_sqlite_transactions(self) -> None:
        if self.engine.dialect.name == "sqlite":  # else two threads or workers can take the same queued trial
            begin_immediate(self.engine)


# Every public storage operation, plus the private query Optuna runs to find stale trials.
_OPERATIONS = {name for name in dir(BaseStorage) if not name.startswith("_")} | {"_get_stale_trial_ids"}
for _name in sorted(_OPERATIONS - {"remove_session"}):
    if callable(getattr(RDBStorage, _name, None)):
        setattr(ResilientRDBStorage, _name, _retrying(getattr(RDBStorage, _name)))
