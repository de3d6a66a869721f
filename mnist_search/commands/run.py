"""`mnist-search run`: add trials to a budget-aware search (creates or resumes the study)."""

from __future__ import annotations

import argparse
import sys

from mnist_search.commands import options
from mnist_search.defaults import PRUNERS, SAMPLERS
from mnist_search.errors import ConfigError, UserError

HELP = "run trials of the budget-aware search (creates or resumes the study)"

def _jobs(text: str) -> int | None:
    """--jobs auto (None: the device's measured best) or a number."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {text!r}") from None


# One line per search setting that is a flag: SearchSettings field -> (flag, argparse options).
# Defaults live in SearchSettings; a flag left out keeps them.
SETTING_FLAGS: dict[str, tuple[str, dict]] = {
    "trials": ("--trials", {"type": int, "help": "trials to add to the study (default 20)"}),
    "timeout_minutes": ("--timeout", {"type": float, "metavar": "MINUTES",
                                      "help": "start no new trial after this many minutes; the running ones finish"}),
    "max_params": ("--max-params", {"type": int, "help": "parameter budget (default 8000)"}),
    "epochs": ("--epochs", {"type": int, "help": "epochs per trial (default 15)"}),
    "last_k": ("--last-k", {"type": int, "help": "score = mean validation accuracy of the last K epochs "
                                                 "(default min(5, epochs))"}),
    "seeds_per_trial": ("--seeds-per-trial", {"type": int, "help": "train each trial with N seeds and score it by "
                                                                   "their mean: N times the cost, a steadier ranking"}),
    "objective": ("--objective", {"choices": ("score", "pareto"),
                                  "help": "score: maximise the consistency score (default); pareto: also minimise "
                                          "parameters, to cover every budget in one study (no pruning)"}),
    "sampler": ("--sampler", {"choices": SAMPLERS, "help": "default tpe (multivariate)"}),
    "pruner": ("--pruner", {"choices": PRUNERS, "help": "default median"}),
    "seed": ("--seed", {"type": int, "help": "sampler and first training seed (default: random sampler, seed 0)"}),
    "device": ("--device", {"help": "auto (CUDA when present), cpu or cuda (default auto)"}),
    "compile": ("--compile", {"choices": ("auto", "on", "off"),
                              "help": "torch.compile each trial's training step (auto: CPU trials of 2,000+ steps)"}),
    "val_size": ("--val-size", {"type": int, "help": "training images held out for validation (default 10,000)"}),
    "teacher": ("--teacher", {"metavar": "SPEC", "help": "distil from this network (a spec JSON file; with "
                                                         "--teacher-weights): the space also samples the soft "
                                                         "targets' weight and temperature"}),
    "teacher_weights": ("--teacher-weights", {"metavar": "FILE", "help": "the teacher's weights (safetensors)"}),
    "train_images": ("--train-images", {"type": int, "metavar": "N",
                                        "help": "train each trial on N of the training images (default: all 50,000 "
                                                "not held out); quicker trials, lower scores, for a first look"}),
    "heartbeat_grace_s": ("--heartbeat-grace", {"type": int, "metavar": "SECONDS",
                                                "help": "seconds without a heartbeat before a worker's trial is "
                                                        "failed and retried (default 120)"}),
    "workers": ("--workers", {"type": int, "help": "local worker processes sharing the study (default: on the CPU "
                                                   "one single-threaded worker per idle core, at most one per trial; "
                                                   "on a GPU 1)"}),
    "jobs": ("--jobs", {"type": _jobs, "help": "auto or N: trials trained at once in each process, each on its own "
                                               "CUDA stream (default auto: 8 on a CUDA GPU, the measured best on an "
                                               "H100; 1 on the CPU, where trials at once only share the cores)"}),
    "warm_start": ("--warm-start", {"metavar": "STUDY", "help": "first run the best trials of STUDY (same storage), "
                                                                "narrowed or widened to this budget"}),
    "warm_start_top": ("--warm-start-top", {"type": int, "help": "how many of STUDY's best trials to queue (default 3)"}),
    "fuse_seeds": ("--fuse-seeds", {"action": argparse.BooleanOptionalAction, "default": None,
                                    "help": "train a trial's seeds as one fused network, pruned on their mean accuracy "
                                            "per epoch (default); --no-fuse-seeds: one after another"}),
    "allow_mixed": ("--allow-mixed", {"action": "store_true", "default": None,
                                      "help": "resume a study even if epochs, last-K, budget, objective, seeds per "
                                              "trial or validation size differ from its own"}),
}


def add_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    for name, (flag, kwargs) in SETTING_FLAGS.items():
        if name not in exclude:
            parser.add_argument(flag, dest=name, **kwargs)
    options.add_storage(parser)
    options.add_artifacts(parser)
    options.add_data_dir(parser)
    options.add_verbosity(parser)


def given_settings(args: argparse.Namespace) -> dict:
    """The search settings named by the flags given (a flag left out is absent, not its default)."""
    return {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name, None) is not None}


def settings_from(args: argparse.Namespace, **overrides):
    """SearchSettings from the flags given; its messages spelled with this command's flags."""
    from mnist_search.search.settings import SearchSettings

    values = given_settings(args)
    try:
        return SearchSettings(**{**values, **overrides})
    except ConfigError as exc:
        raise respelled(exc) from None


def location_from(args: argparse.Namespace):
    from mnist_search.search.runner import Location
    from mnist_search.storage import resolve_storage_url

    return Location(storage_url=resolve_storage_url(args.storage), study_name=args.study_name,
                    data_dir=args.data_dir, artifact_dir=args.artifacts)


def progress_for(args: argparse.Namespace, settings):
    from mnist_search.search.progress import SearchProgress

    return SearchProgress(settings.trials, live=False if getattr(args, "quiet", False) else None)


def respelled(error: UserError) -> UserError:
    """``error`` with the settings it names spelled as this command's flags."""
    flags = {name: flag for name, (flag, _) in SETTING_FLAGS.items()}
    return type(error)(options.flag_spelling(str(error), flags))


def run(args: argparse.Namespace) -> int:
    from mnist_search.search.runner import run_search
    from mnist_search.storage import mask_password

    settings = settings_from(args)
    where = location_from(args)
    progress = progress_for(args, settings)
    try:
        study = run_search(settings, where, progress)
    except UserError as exc:
        raise respelled(exc) from None
    where_flags = (f" --storage {mask_password(where.storage_url)}" if args.storage else "") + \
        (f" --study-name {study.study_name}" if study.study_name != "mnist-search" else "")
    print(f"next: mnist-search confirm{where_flags} --top 3 --seeds 3 (the test set), then mnist-search export"
          f"{where_flags} --output best_net.py --weights best_net.safetensors", file=sys.stdout)
    return 0
