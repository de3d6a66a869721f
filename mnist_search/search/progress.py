"""What a running search shows: each epoch of each running trial, each finished trial, a summary.

On a terminal, one live line (tqdm) carries every running trial's epoch, accuracy, time per
epoch and ETA, with the study's best so far; finished trials print a line above it. In a log
or a pipe (and in worker processes, which share their parent's terminal) every epoch is one
plain line, so a log file tells the same story.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

import optuna

from mnist_search.search.records import RecordError, TrialRecord

S = optuna.trial.TrialState


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


class SearchProgress:
    """Progress of one search run (``total`` trials); thread-safe, as ``jobs`` > 1 trains in threads.

    ``prefix`` labels the lines of a worker process; ``live`` forces the live line on or off
    (default: on when ``stream`` is a terminal); ``silent`` shows nothing.
    """

    def __init__(self, total: int, stream: TextIO | None = None, live: bool | None = None, prefix: str = "",
                 silent: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.total, self.done, self.prefix, self.silent = total, 0, prefix, silent
        self.live = not silent and (self.stream.isatty() if live is None else live)
        self.running: dict[int, str] = {}
        self.best_text = "no completed trial yet"
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._bar = None

    # --- called by the search ---------------------------------------------------------------

    def start(self, header: str) -> None:
        self.line(header)
        if self.live:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, file=self.stream, unit="trial", dynamic_ncols=True, leave=False,
                             bar_format="{n_fmt}/{total_fmt} trials [{elapsed}] {desc}")

    def epoch(self, number: int, seed: int, seeds: int, epoch: int, epochs: int, metrics: dict) -> None:
        """Trial ``number`` finished ``epoch`` of ``epochs`` for its seed ``seed`` (from 0) of ``seeds``."""
        per_epoch = metrics.get("seconds", 0.0)  # the trainer reports each epoch's own seconds
        left = (epochs - epoch) + (seeds - 1 - seed) * epochs
        seed_text = f" seed {seed + 1}/{seeds}" if seeds > 1 else ""
        text = (f"#{number}{seed_text} epoch {epoch}/{epochs} val {metrics['eval_acc']:.2f}% "
                f"({per_epoch:.0f} s/epoch, {_duration(per_epoch * left)} left)")
        with self._lock:
            self.running[number] = text
            if self._bar is not None:
                self._refresh()
            else:
                self._write(f"{self.prefix}trial {text} | {self.best_text}")

    def trial_finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """An Optuna callback: one line per finished trial."""
        best = self.best(study)
        with self._lock:
            self.done += 1
            self.running.pop(trial.number, None)
            self.best_text = best
            self._write(f"{self.prefix}trial {self.done}/{self.total} (#{trial.number}): {outcome(trial)}"
                        f" | {best} | {counts(study)}")
            if self._bar is not None:
                self._bar.update(1)
                self._refresh()

    __call__ = trial_finished

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, study: optuna.Study) -> str:
        minutes = (time.perf_counter() - self.started) / 60
        this_run = f"this run: {plural(self.done, 'trial')} in {minutes:.1f} min"
        study_total = f"study {study.study_name!r}: {counts(study)}"
        return f"{this_run}; {study_total}; {self.best(study)}"

    def line(self, text: str) -> None:
        with self._lock:
            self._write(self.prefix + text)

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def best(study: optuna.Study) -> str:
        done = study.get_trials(deepcopy=False, states=(S.COMPLETE,))
        if not done:
            return "no completed trial yet"
        best = max(done, key=lambda t: t.values[0])
        params = best.user_attrs.get("params")
        size = f" ({params:,} params)" if isinstance(params, int) and not isinstance(params, bool) else ""
        return f"best #{best.number} {best.values[0]:.3f}{size}"

    def _refresh(self) -> None:
        running = "; ".join(self.running[n] for n in sorted(self.running))
        self._bar.set_description_str(f"{running or 'starting'} | {self.best_text}", refresh=True)

    def _write(self, text: str) -> None:
        if self.silent:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


def outcome(trial: optuna.trial.FrozenTrial) -> str:
    """A finished trial in a few words: its score, where it was pruned, or that it failed."""
    try:
        record = TrialRecord.from_trial(trial)
    except RecordError:
        return trial.state.name.lower()
    size = f", {record.params:,} params" if record.params else ""
    if trial.state == S.COMPLETE:
        return (f"score {record.score:.3f}" if record.score is not None else "complete") + size
    if trial.state == S.PRUNED:
        return ("infeasible" if record.infeasible else f"pruned at {record.pruned_at}") + size
    if trial.state == S.FAIL:
        return "failed" + size
    return trial.state.name.lower()


def counts(study: optuna.Study) -> str:
    """The study's trials by outcome."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    infeasible = sum("infeasible" in t.user_attrs for t in trials)
    waiting = states.count(S.WAITING)
    return (f"{plural(len(trials) - waiting, 'trial')}: completed {states.count(S.COMPLETE)}, "
            f"pruned {states.count(S.PRUNED) - infeasible}, infeasible {infeasible}, failed {states.count(S.FAIL)}"
            + (f", queued {waiting}" if waiting else ""))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
