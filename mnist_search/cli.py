"""The `mnist-search` command: a registry of verbs and the mapping of outcomes to exit codes.

Each verb is a module in ``mnist_search.commands`` with ``HELP``, ``add_arguments(parser)`` and
``run(args)``; their top-level imports are light (argparse and the shared flags), so `--help`,
`presets` and `summary` start without importing torch or Optuna.

Exit codes: 0 success, 1 the work ran but did not succeed (training diverged, a worker process
died), 2 bad input (one line on stderr, no traceback), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM, or SIGHUP when the terminal closes).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from mnist_search import __version__
from mnist_search.commands.options import flag_spelling
from mnist_search.errors import UserError, WorkFailed

EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

VERBS = ("run", "worker", "dashboard", "confirm", "export", "evaluate", "report", "train", "summary", "presets")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(verb_parsers: dict[str, argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """The parser of every verb; ``verb_parsers``, when given, is filled with each verb's own."""
    parser = _Parser(prog="mnist-search", description="Find tiny convolutional networks for MNIST automatically.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="no live progress line")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND", parser_class=_Parser)
    for verb in VERBS:
        command = importlib.import_module(f"mnist_search.commands.{verb}")
        sub = verbs.add_parser(verb, help=command.HELP, description=getattr(command, "DESCRIPTION", command.HELP))
        command.add_arguments(sub)
        if verb_parsers is not None:
            verb_parsers[verb] = sub
    return parser


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Setting name -> flag for the options of ``parser`` whose name has an underscore (data_dir ->
    --data-dir): the library names settings, and a user of the command knows only its flags."""
    return {action.dest: max(action.option_strings, key=len) for action in parser._actions
            if action.option_strings and "_" in action.dest}


def main(argv: Sequence[str] | None = None) -> int:
    verb_parsers: dict[str, argparse.ArgumentParser] = {}
    args = build_parser(verb_parsers).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:  # Optuna's own log too: its INFO lines repeat our progress, so only -v shows them
        import optuna

        optuna.logging.set_verbosity(optuna.logging.DEBUG)
    else:  # torch.compile warns on every CPU-only machine that it found no CUDA toolkit
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    command = importlib.import_module(f"mnist_search.commands.{args.verb}")
    # `docker stop`, systemd and `kill` send SIGTERM, closing the terminal SIGHUP: end as cleanly
    # as on Ctrl-C. And honour Ctrl-C even where the shell started us with SIGINT ignored (nohup).
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGHUP, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    prefix = f"mnist-search {args.verb}"
    try:
        return command.run(args)
    except UserError as exc:
        print(f"{prefix}: error: {flag_spelling(str(exc), flags_of(verb_parsers[args.verb]))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except WorkFailed as exc:
        print(f"{prefix}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Terminated:
        print(f"{_fresh_line()}{prefix}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{_fresh_line()}{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C (Optuna marks the running trial failed on both)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def _fresh_line() -> str:
    """A newline on a terminal, where ^C or a progress bar left the cursor mid-line."""
    return "\n" if sys.stderr.isatty() else ""
