"""`mnist-search confirm`: retrain the study's top trials on 60k images with several seeds, on the test set."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import optuna

from mnist_search.commands.common import format_table
from mnist_search.errors import ConfigError, UserError
from mnist_search.search import open_study, ranked
from mnist_search.search.confirm import CONFIRM_KEY, confirm_trial
from mnist_search.storage import default_artifact_dir, open_storage, resolve_storage_url
from mnist_search.trainer import cpu_threads_per_process, load_mnist, resolve_device


def summary_row(label: str, params: int, stats: dict, verdict: str) -> list[str]:
    return [label, f"{params:,}", f"{stats['final_mean']:.2f} ± {stats['final_std']:.2f}",
            f"{stats['last_k_mean']:.2f} ± {stats['last_k_std']:.2f}", f"{stats['last_k_min']:.2f}", verdict]


def print_progress(seed: int, epoch: int, metrics: dict) -> None:
    """One line per seed and epoch; module-level, as ``confirm --workers`` calls it in the worker processes."""
    raw = f" (raw weights {metrics['raw_eval_acc']:.2f}%)" if "raw_eval_acc" in metrics else ""
    print(f"  seed {seed} epoch {epoch:>2}: test {metrics['eval_acc']:.2f}%{raw}", flush=True)


def run(args: argparse.Namespace) -> int:
    if (not args.trial and args.top < 1) or args.seeds < 1 or args.workers < 1:
        raise ConfigError("--top, --seeds and --workers must be at least 1")
    if args.first_seed < 0:
        raise ConfigError(f"--first-seed must be 0 or more, got {args.first_seed}")
    device = resolve_device(args.device)
    url = resolve_storage_url(args.storage)
    study = open_study(open_storage(url), args.study_name, None, None, create=False)
    artifact_dir = Path(args.artifacts) if args.artifacts else default_artifact_dir(url)
    try:  # before hours of training, not after them
        artifact_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the artifact directory {artifact_dir}: {exc.strerror or exc}; "
                        "pass --artifacts DIR") from None
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise UserError(f"study {study.study_name!r} has no completed trial to confirm; run `mnist-search run` first")
    if args.trial:
        by_number = {t.number: t for t in completed}
        missing = [n for n in args.trial if n not in by_number]
        if missing:
            best = ranked(completed, 5)
            raise UserError(f"trial #{missing[0]} is not a completed trial of study {study.study_name!r}; "
                            f"its best completed trials: {', '.join(f'#{t.number}' for t in best)}")
        top = [by_number[n] for n in dict.fromkeys(args.trial)]
    else:
        top = ranked(completed, args.top)
    data = load_mnist(args.data_dir, val_size=args.val_size)
    workers = min(args.workers, args.seeds)
    at_once = f", {workers} at once" if workers > 1 else ""
    if workers > 1 and device.type != "cuda":
        at_once += f" ({os.environ.get('OMP_NUM_THREADS') or cpu_threads_per_process(workers)} CPU threads each)"
    rows = []
    for trial in top:
        epochs = trial.user_attrs["config"]["epochs"]
        print(f"confirming trial #{trial.number} ({trial.user_attrs['params']:,} params): {args.seeds} seeds "
              f"({args.first_seed}-{args.first_seed + args.seeds - 1}) x "
              f"{epochs} epochs on {len(data.full_train()):,} images{at_once}, scored on the test set", flush=True)
        result = confirm_trial(study, trial, data, args.seeds, args.last_k, args.target, str(device), artifact_dir,
                               args.compile, on_epoch=print_progress, first_seed=args.first_seed, workers=workers)
        study.set_user_attr(CONFIRM_KEY.format(number=trial.number), result)
        rows.append(summary_row(f"#{trial.number}", trial.user_attrs["params"], result,
                                "yes" if result["consistent"] else "no"))
        if "raw" in result:  # the same runs' raw (unaveraged) weights, for comparison
            rows.append(summary_row("  raw", trial.user_attrs["params"], result["raw"], ""))
    print(format_table(["trial", "params", "final test %", f"last-{args.last_k} test %", "min", f">= {args.target}"],
                       rows))
    return 0
