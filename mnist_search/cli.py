"""The `mnist-search` command: parses arguments, calls one function per verb, maps errors to exit codes.

Exit codes: 0 success, 1 the work ran but did not succeed (e.g. training diverged),
2 bad input (one line on stderr, no traceback), 130 interrupted with Ctrl-C, 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from mnist_search import __version__
from mnist_search.defaults import (
    COMPILE_CHOICES,
    DEFAULT_HEARTBEAT_GRACE_S,
    DEFAULT_LAST_K,
    DEFAULT_MAX_PARAMS,
    DEFAULT_STORAGE,
    DEFAULT_VAL_SIZE,
    PRUNERS,
    SAMPLERS,
    STORAGE_ENV,
)
from mnist_search.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_architecture(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--preset", help="a preset name (see `mnist-search presets`)")
    group.add_argument("--spec", help="an ArchSpec JSON file")


def _add_data_dir(parser: argparse.ArgumentParser, val_size: bool = True) -> None:
    parser.add_argument(
        "--data-dir",
        help="directory holding MNIST/raw/* (default: $MNIST_SEARCH_DATA_DIR, else ~/.cache/mnist-search)",
    )
    if val_size:
        parser.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE,
                            help=f"images held out of training for validation (default {DEFAULT_VAL_SIZE:,})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnist-search", description="Find tiny convolutional networks for MNIST automatically.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND", parser_class=_Parser)

    verbs.add_parser("presets", help="list the seed networks that ship as presets")

    summary = verbs.add_parser("summary", help="per-layer table: output shape, parameters, receptive field")
    _add_architecture(summary)
    summary.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    train = verbs.add_parser("train", help="train one architecture with its recipe and save metrics and weights")
    _add_architecture(train)
    train.add_argument("--epochs", type=int, help="epochs to train (default: the recipe's, 15)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    train.add_argument("--lr", type=float, help="override the recipe's (peak) learning rate")
    train.add_argument("--ema-epochs", type=float,
                       help="evaluate and keep an average of the weights over this many epochs "
                            "(default: the recipe's, off)")
    train.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    train.add_argument("--eval", choices=("val", "test"), default="val",
                       help="val: train on 50k, score the held-out 10k (default); test: train on 60k, score the test set")
    train.add_argument("--compile", choices=COMPILE_CHOICES, default="auto",
                       help="torch.compile the training step (auto: CPU runs of 2,000+ steps; "
                            "CUDA replays a CUDA graph instead)")
    train.add_argument("--out", help="output directory (default runs/NAME-TIMESTAMP)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_data_dir(train)

    for verb, text in (("run", "run trials of the budget-aware search (creates or resumes the study)"),
                       ("worker", "join an existing study from this machine and run trials on it")):
        search = verbs.add_parser(verb, help=text)
        search.add_argument("--trials", type=int, default=1 if verb == "worker" else 20,
                            help="trials to add to the study (default %(default)s)")
        search.add_argument("--timeout", type=float, default=None,
                            help="start no new trial after this many minutes; the running ones finish "
                                 "(default: no limit)")
        _add_storage(search)
        search.add_argument("--max-params", type=int, default=DEFAULT_MAX_PARAMS,
                            help=f"parameter budget (default {DEFAULT_MAX_PARAMS})")
        search.add_argument("--epochs", type=int, default=15, help="epochs per trial (default 15)")
        search.add_argument("--last-k", type=int, default=DEFAULT_LAST_K,
                            help=f"score = mean validation accuracy of the last K epochs (default {DEFAULT_LAST_K})")
        search.add_argument("--seeds-per-trial", type=int, default=1,
                            help="train each trial with N seeds and score it by their mean: slower by N, but "
                                 "one seed's validation score is too noisy to rank the top trials (default 1)")
        search.add_argument("--objective", choices=("score", "pareto"), default="score",
                            help="score: maximise the consistency score (default); pareto: also minimise "
                                 "parameters, to cover every budget in one study (no pruning)")
        search.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="default tpe (multivariate)")
        search.add_argument("--pruner", choices=PRUNERS, default="median", help="default median")
        search.add_argument("--seed", type=int, default=None, help="sampler seed (default: random)")
        search.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
        search.add_argument("--compile", choices=COMPILE_CHOICES, default="auto",
                            help="torch.compile each trial's training step (auto: CPU trials of 2,000+ "
                                 "steps; CUDA replays a CUDA graph instead)")
        search.add_argument("--artifacts", help="directory for trial weights (default: beside the SQLite file)")
        search.add_argument("--heartbeat-grace", type=int, default=DEFAULT_HEARTBEAT_GRACE_S,
                            help="seconds without a heartbeat before a worker's trial is failed and retried "
                                 f"(default {DEFAULT_HEARTBEAT_GRACE_S})")
        if verb == "run":  # queued once, by `run`; workers take the queued trials like any other
            search.add_argument("--warm-start", metavar="STUDY",
                                help="first run the best trials of STUDY (same storage), narrowed or widened to "
                                     "this budget")
            search.add_argument("--warm-start-top", type=int, default=3,
                                help="how many of STUDY's best trials to queue (default 3)")
        search.add_argument("--workers", type=int, default=1,
                            help="local worker processes sharing the study (default 1)")
        search.add_argument("--jobs", type=int, default=1,
                            help="trials trained at once in each process, each on its own CUDA stream: fills a "
                                 "GPU that one tiny network leaves idle; no gain on the CPU (default 1)")
        _add_data_dir(search)

    export = verbs.add_parser("export", help="write the best trial as a standalone Python module (+ weights)")
    _add_storage(export)
    export.add_argument("--output", default="best_net.py", help="module to write (default best_net.py)")
    export.add_argument("--weights", help="also write the trial's weights here (safetensors)")
    export.add_argument("--max-params", type=int, help="pick the best trial with at most this many parameters")
    export.add_argument("--artifacts", help="directory of trial weights (default: beside the SQLite file)")

    confirm = verbs.add_parser("confirm", help="retrain the top trials on 60k images with several seeds, on the test set")
    _add_storage(confirm)
    which = confirm.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, default=3, help="architectures to confirm (default 3)")
    which.add_argument("--trial", type=int, action="append", metavar="N",
                       help="confirm trial N instead of the top ones (repeatable)")
    confirm.add_argument("--seeds", type=int, default=3, help="training seeds per architecture (default 3)")
    confirm.add_argument("--first-seed", type=int, default=0,
                         help="seeds run from this one up (default 0); fresh seeds re-check a confirmed trial "
                              "(the new confirmation replaces the stored one)")
    confirm.add_argument("--workers", type=int, default=1,
                         help="seeds trained at once, each in its own process with its share of the CPU cores "
                              "(default 1); on a GPU they share it")
    confirm.add_argument("--last-k", type=int, default=DEFAULT_LAST_K, help=f"epochs judged (default {DEFAULT_LAST_K})")
    confirm.add_argument("--target", type=float, default=99.4, help="test accuracy every last-K epoch must reach (default 99.4)")
    confirm.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    confirm.add_argument("--compile", choices=COMPILE_CHOICES, default="auto", help="torch.compile the training step")
    confirm.add_argument("--artifacts", help="directory for each seed's weights (default: beside the SQLite file)")
    _add_data_dir(confirm)

    evaluate = verbs.add_parser("evaluate", help="test accuracy of an exported module with its weights")
    evaluate.add_argument("module", help="module written by `mnist-search export` (it is imported, i.e. run)")
    evaluate.add_argument("--weights", required=True, help="safetensors weights written by `export --weights`")
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    _add_data_dir(evaluate, val_size=False)

    report = verbs.add_parser("report", help="leaderboard and PNG plots of a study, with an index page")
    _add_storage(report)
    report.add_argument("--output", default="report", help="directory to write (default ./report)")

    dashboard = verbs.add_parser("dashboard", help="browse the study in optuna-dashboard")
    _add_storage(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    dashboard.add_argument("--artifacts", help="directory of trial weights (default: beside the SQLite file)")
    dashboard.add_argument("--allow-writes", action="store_true",
                           help="let the dashboard edit the store (delete studies, edit notes and attributes); "
                                "default: read-only")
    dashboard.add_argument("--allow-remote-writes", action="store_true",
                           help="with --allow-writes on a non-loopback --host: accept unauthenticated writes from "
                                "the network")
    return parser


def _add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help=f"storage URL (default ${STORAGE_ENV}, else {DEFAULT_STORAGE})")
    parser.add_argument("--study-name", default="mnist-search", help="study name (default mnist-search)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # torch.compile warns on every CPU-only machine that it found no CUDA toolkit
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    command = importlib.import_module(f"mnist_search.commands.{args.verb}")
    # `docker stop`, systemd and `kill` send SIGTERM: end as cleanly as on Ctrl-C. And honour
    # Ctrl-C even where the shell started us with SIGINT ignored (background jobs, nohup).
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return command.run(args)
    except UserError as exc:
        print(f"mnist-search {args.verb}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Terminated:
        print(f"mnist-search {args.verb}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"mnist-search {args.verb}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (Optuna marks the running trial failed on both)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated
