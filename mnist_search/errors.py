"""The project's exception types.

``UserError`` and its subclasses mean "the input was wrong and the user can fix it":
the CLI prints their message as one line and exits with code 2. Anything else that
escapes is an internal error (a bug) and keeps its traceback.
"""


class UserError(Exception):
    """Bad input the user can fix; the message says what is wrong and how to fix it."""


class SpecError(UserError):
    """An architecture spec is malformed or describes an impossible network."""


class DataError(UserError):
    """MNIST files are missing, unreadable, truncated or corrupted."""


class ConfigError(UserError):
    """A training configuration or command-line option is out of range."""


class StorageError(UserError):
    """The study store cannot be used: missing, read-only, full, another program's, or of another Optuna version."""


class OutputExists(UserError):
    """An output would replace a file already there, which was not asked for."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class WorkFailed(Exception):
    """The work ran but did not succeed (a worker process died, training diverged): exit code 1."""
