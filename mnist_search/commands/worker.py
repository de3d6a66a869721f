"""`mnist-search worker`: the same trial loop as `run`, but it only joins an existing study."""

from mnist_search.commands.run import run

__all__ = ["run"]
