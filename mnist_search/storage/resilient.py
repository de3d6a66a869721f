"""An RDB storage that rides out a database restart, and names a permanent fault in one line.

Optuna's RDBStorage turns any database error into StorageInternalError and the trial
fails. During a PostgreSQL restart (or a network blip) every call fails for a few
seconds; this subclass retries each storage call with backoff for up to
``RETRY_WINDOW_S`` seconds, and ``pool_pre_ping`` (set in ``open_storage``) replaces the
connections the restart killed. A failed call rolls its transaction back, so retrying it
is safe; the one residual risk is a commit that succeeded but whose reply was lost,
which could repeat that single write.

Only faults that heal are retried (storage/faults.py); any other database error, and a
transient one that outlasts the window, becomes a one-line StorageError at once, its
text free of the URL's password.
"""

from __future__ import annotations

import functools
import logging
import time

from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mnist_search.errors import StorageError
from mnist_search.storage.decoding import DECODE_ERRORS, StoredDataError, stored_data_error
from mnist_search.storage.faults import database_error, explain, first_line, is_transient, known_meaning
from mnist_search.storage.names import check_study_name
from mnist_search.storage.sqlite import begin_immediate
from mnist_search.storage.urls import hide_password, mask_password

logger = logging.getLogger(__name__)

RETRY_WINDOW_S = 90.0
FIRST_DELAY_S, MAX_DELAY_S = 0.5, 5.0


def _retrying(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        deadline, delay = time.monotonic() + RETRY_WINDOW_S, FIRST_DELAY_S
        while True:
            try:
                return method(self, *args, **kwargs)
            except StorageError as exc:  # raised inside SQLAlchemy (below), chained to the driver's error
                if isinstance(exc, UndecodedValue):  # its transaction is over now: find where the value is
                    raise stored_data_error(self.engine, mask_password(self.url), exc) or exc from None
                raise exc from None
            except Exception as exc:
                error = database_error(exc)
                shown = mask_password(self.url)
                if error is None or "decode" in str(error).lower():
                    # Optuna failed to decode a stored value (SQLite says "could not decode to
                    # UTF-8", which would otherwise look transient): name it, never retry it.
                    if isinstance(exc, DECODE_ERRORS) or error is not None:
                        bad = stored_data_error(self.engine, shown, exc)
                        if bad is not None:
                            raise bad from None
                    if error is None:
                        raise
                reason = hide_password(explain(error), self.url)
                if not is_transient(error):
                    raise StorageError(f"storage {shown}: {reason}") from None
                if time.monotonic() + delay > deadline:
                    raise StorageError(f"storage {shown} stayed unavailable for {RETRY_WINDOW_S:.0f} s ({reason}); "
                                       "check the database server, or what holds the SQLite file locked, and run "
                                       "again") from None
                logger.warning("storage call %s failed (%s); retrying in %.1f s", method.__name__,
                               type(error).__name__, delay)
                time.sleep(delay)
                delay = min(2 * delay, MAX_DELAY_S)

    return call


class UndecodedValue(StoredDataError):
    """SQLite could not decode a stored value; raised where SQLAlchemy meets it, placed by the caller."""


def _name_known_faults_at_once(engine: Engine, url: str) -> None:
    """Turn a database error with a known meaning (read-only, disk full, ...) into StorageError
    where SQLAlchemy raises it, so that it escapes Optuna's own retry loops (Optuna retries
    creating a trial five times, sleeping up to 2 s between tries) as well as ours."""

    @event.listens_for(engine, "handle_error")
    def _explain(context) -> None:
        error = context.sqlalchemy_exception
        if error is not None and "could not decode" in str(error).lower():
            # Before Optuna sees it: it would log it and fall back to reading row by row.
            raise UndecodedValue(
                f"storage {mask_password(url)}: a stored value cannot be decoded ({first_line(error.orig)}); "
                "repair or delete that value in the store")
        if error is not None and known_meaning(error):
            raise StorageError(f"storage {mask_password(url)}: {hide_password(explain(error), url)}")


class ResilientRDBStorage(RDBStorage):
    """RDBStorage whose every storage operation is retried across transient database outages and
    fails at once on a permanent fault, and whose SQLite transactions begin with the write lock
    (storage/sqlite.py)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._prepare_engine()

    def __setstate__(self, state: dict) -> None:  # unpickling builds a new engine
        super().__setstate__(state)
        self._prepare_engine()

    def _prepare_engine(self) -> None:
        _name_known_faults_at_once(self.engine, self.url)
        if self.engine.dialect.name == "sqlite":  # else two threads or workers can take the same queued trial
            begin_immediate(self.engine)

    @_retrying
    def create_new_study(self, directions, study_name=None):
        if study_name is not None:  # PostgreSQL would refuse a long name only after a traceback
            check_study_name(study_name)
        return super().create_new_study(directions, study_name)

    def record_heartbeat(self, trial_id: int) -> None:
        # Runs in Optuna's heartbeat thread, where an exception prints a traceback and stops the
        # beats. The main thread meets the same fault on its next storage call and reports it.
        try:
            _retrying(RDBStorage.record_heartbeat)(self, trial_id)
        except StorageError as exc:
            logger.warning("heartbeat of trial %d not recorded: %s", trial_id, exc)


# Every public storage operation, plus the private ones Optuna's _CachedStorage (the wrapper
# every Study puts around an RDBStorage) calls on its backend: creating trials, setting
# parameters and reading trials go through these.
_PRIVATE_OPERATIONS = {"_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
                       "_get_stale_trial_ids"}
_OPERATIONS = {name for name in dir(BaseStorage) if not name.startswith("_")} | _PRIVATE_OPERATIONS
for _name in sorted(_OPERATIONS - {"remove_session"} - set(vars(ResilientRDBStorage))):
    if callable(getattr(RDBStorage, _name, None)):
        setattr(ResilientRDBStorage, _name, _retrying(getattr(RDBStorage, _name)))
