"""Which database errors heal by themselves, and what the others mean to the user.

Only faults that heal are worth retrying: a lock another connection holds, a server that
restarts, a connection that breaks. A read-only database, a full disk, a missing privilege
or a value the schema cannot hold fail the same way on every retry, so retrying them only
delays the message by the whole retry window; they are explained in one line instead.
"""

from __future__ import annotations

from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from mnist_search.storage.names import MAX_STUDY_NAME_LENGTH

# SQLite primary result codes (the low byte of the extended code).
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY = 3, 5, 6, 8
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 10, 11, 13, 14, 26

# Another connection holds the lock: it lets go when its transaction ends.
SQLITE_TRANSIENT = frozenset({SQLITE_BUSY, SQLITE_LOCKED})
# PostgreSQL SQLSTATEs that heal: class 08 (the connection broke) and these.
PG_TRANSIENT = frozenset({
    "40001",  # serialization_failure: a concurrent transaction won; running again succeeds
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown: the server is stopping or restarting
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: the server is starting up
    "53300",  # too_many_connections: frees up as other clients leave
})

_WRITABLE = "make the file and its directory writable, or choose another storage"
SQLITE_MEANING = {
    SQLITE_READONLY: ("the store is read-only", _WRITABLE),
    SQLITE_PERM: ("access to the store is denied", _WRITABLE),
    SQLITE_CANTOPEN: ("the database file cannot be opened", "check that the file and its directory exist and are "
                      "readable and writable"),
    SQLITE_FULL: ("the disk is full", "free some space and run again"),
    SQLITE_IOERR: ("the disk reported an I/O error", "check the disk and the file system"),
    SQLITE_CORRUPT: ("the database file is corrupted", "restore it from a copy or choose another file"),
    SQLITE_NOTADB: ("the file is not a SQLite database", "choose another file"),
}
PG_MEANING = {
    "25006": ("the database is read-only (default_transaction_read_only is on, or it is a standby server)",
              "use a writable database"),
    "42501": ("the database user may not do this", "grant the user write access to the database and its tables, "
              "or connect as another user"),
    "53100": ("the database server's disk is full", "free space on it and run again"),
    "22001": ("a value is longer than the store allows",
              f"shorten it (a study name may have at most {MAX_STUDY_NAME_LENGTH} characters)"),
}
# Python 3.10's sqlite3 errors carry no result code: recognise them by SQLite's own message.
_SQLITE_MESSAGES = {
    "database is locked": SQLITE_BUSY,
    "database table is locked": SQLITE_LOCKED,
    "attempt to write a readonly database": SQLITE_READONLY,
    "database or disk is full": SQLITE_FULL,
    "unable to open database file": SQLITE_CANTOPEN,
    "file is not a database": SQLITE_NOTADB,
    "database disk image is malformed": SQLITE_CORRUPT,
    "disk i/o error": SQLITE_IOERR,
}


def database_error(exc: BaseException) -> DBAPIError | PoolTimeoutError | None:
    """The database error behind ``exc`` (Optuna wraps them in StorageInternalError), or None."""
    if isinstance(exc, StorageInternalError):
        exc = exc.__cause__
    return exc if isinstance(exc, (DBAPIError, PoolTimeoutError)) else None


def is_transient(error: DBAPIError | PoolTimeoutError) -> bool:
    """True when running the same operation again later can succeed."""
    if isinstance(error, PoolTimeoutError) or error.connection_invalidated:
        return True
    code = sqlite_code(error.orig)
    if code is not None:
        return code in SQLITE_TRANSIENT
    state = sqlstate(error.orig)
    if state:
        return state.startswith("08") or state in PG_TRANSIENT
    # Without a SQLSTATE the driver could not reach the server at all (refused, reset, timed out).
    return isinstance(error, OperationalError)


def explain(exc: BaseException) -> str:
    """One line: what went wrong and, where known, how to fix it."""
    meaning = known_meaning(exc)
    reason = first_line(getattr(exc, "orig", None) or exc)
    return f"{meaning[0]} ({reason}); {meaning[1]}" if meaning else reason


def known_meaning(exc: BaseException) -> tuple[str, str] | None:
    """(problem, fix) for a database error the user can fix, else None."""
    orig = getattr(exc, "orig", None) or exc
    code = sqlite_code(orig)
    return SQLITE_MEANING.get(code) if code is not None else PG_MEANING.get(sqlstate(orig) or "")


def sqlite_code(orig: object) -> int | None:
    """SQLite's primary result code of a sqlite3 error, else None."""
    if type(orig).__module__ != "sqlite3":
        return None
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    message = str(orig).lower()
    return next((c for text, c in _SQLITE_MESSAGES.items() if text in message), None)


def sqlstate(orig: object) -> str | None:
    """The SQLSTATE of a PostgreSQL driver error (psycopg: ``sqlstate``, psycopg2: ``pgcode``), else None."""
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
