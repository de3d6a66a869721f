"""Defaults and choices the CLI shows in --help, kept import-free so the CLI starts fast.

The modules that use them import them from here, so each value is written once.
"""

DEFAULT_VAL_SIZE = 10_000  # training images held out for validation
DEFAULT_LAST_K = 5  # the score is the mean validation accuracy of the last K epochs
DEFAULT_MAX_PARAMS = 8000
DEFAULT_STORAGE = "sqlite:///mnist-search.db"
STORAGE_ENV = "MNIST_SEARCH_STORAGE"
DATA_DIR_ENV = "MNIST_SEARCH_DATA_DIR"
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "none")
COMPILE_CHOICES = ("auto", "on", "off")
DEFAULT_HEARTBEAT_GRACE_S = 120  # seconds without a heartbeat before a trial counts as dead
