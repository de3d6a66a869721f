"""`mnist-search confirm`: retrain the study's top trials on 60k images with several seeds, on the test set."""

from __future__ import annotations

import argparse

from mnist_search.commands import options
from mnist_search.commands.common import format_table
from mnist_search.defaults import DEFAULT_LAST_K

HELP = "retrain the top trials on 60k images with several seeds, scored on the test set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_storage(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, default=3, help="architectures to confirm (default 3)")
    which.add_argument("--trial", type=int, action="append", metavar="N",
                       help="confirm trial N instead of the top ones (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per architecture (default 3)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run from this one up (default 0); fresh seeds re-check a confirmed trial "
                             "(the new confirmation replaces the stored one)")
    parser.add_argument("--workers", type=int, default=1,
                        help="seeds trained at once, each in its own process with its share of the CPU cores "
                             "(default 1); on a GPU they share it")
    parser.add_argument("--last-k", type=int,
                        help=f"final epochs judged (default: the search's last-K, {DEFAULT_LAST_K} unless it set "
                             "another, at most the trial's epochs)")
    parser.add_argument("--target", type=float, default=99.4,
                        help="test accuracy every last-K epoch must reach (default 99.4)")
    options.add_device(parser)
    options.add_compile(parser)
    options.add_artifacts(parser)
    options.add_data_dir(parser)
    options.add_verbosity(parser, quiet=False)


FLAGS = {"top": "--top", "seeds": "--seeds", "workers": "--workers", "first_seed": "--first-seed",
         "last_k": "--last-k", "target": "--target", "trials": "--trial", "device": "--device", "compile": "--compile"}


def run(args: argparse.Namespace) -> int:
    from mnist_search.errors import ConfigError
    from mnist_search.search.confirm import ConfirmProgress, confirm
    from mnist_search.search.runner import load_existing
    from mnist_search.search.settings import ConfirmSettings
    from mnist_search.storage import default_artifact_dir, open_storage, resolve_storage_url

    try:
        settings = ConfirmSettings(top=args.top, trials=args.trial, seeds=args.seeds, first_seed=args.first_seed,
                                   last_k=args.last_k, target=args.target, workers=args.workers, device=args.device,
                                   compile=args.compile)
    except ConfigError as exc:
        raise ConfigError(options.flag_spelling(str(exc), FLAGS)) from None
    url = resolve_storage_url(args.storage)
    study = load_existing(open_storage(url, create=False), args.study_name)

    shown = ConfirmProgress(settings)
    try:
        confirmed = confirm(study, settings, data_dir=args.data_dir,
                            artifact_dir=args.artifacts or default_artifact_dir(url), on_epoch=shown.epoch,
                            on_trial=shown.trial, on_batch=shown.batch)
    except ConfigError as exc:
        raise ConfigError(options.flag_spelling(str(exc), FLAGS)) from None
    finally:
        shown.close()
    rows = []
    for record, result in confirmed:
        rows.append(summary_row(f"#{record.number}", record.params, result.stats, "yes" if result.consistent else "no"))
        if result.raw is not None:  # the same runs' raw (unaveraged) weights, for comparison
            rows.append(summary_row("  raw", record.params, result.raw, ""))
    judged = sorted({result.last_k for _, result in confirmed})
    last = f"last-{judged[0]}" if len(judged) == 1 else "last-K"
    print(format_table(["trial", "params", "final test %", f"{last} test %", "min", f">= {args.target}"], rows))
    return 0


def summary_row(label: str, params: int, stats, verdict: str) -> list[str]:
    return [label, f"{params:,}", f"{stats.final_mean:.2f} ± {stats.final_std:.2f}",
            f"{stats.last_k_mean:.2f} ± {stats.last_k_std:.2f}", f"{stats.last_k_min:.2f}", verdict]
