"""What a running search shows: a line per trial before it trains (its network and recipe),
progress within each epoch, each epoch of each running trial, each finished trial, and a summary
that says why the run stopped and how long each trial took.

On a terminal or in a notebook, one live line (tqdm) carries every running trial's epoch,
batch, images per second and time left, with the study's best so far; the other lines print
above it. In a log or a pipe (and in worker processes, which share their parent's terminal)
every epoch is one plain line, and a plain progress line comes at least every 30 s of
training, so a log file tells the same story and never goes quiet for a whole epoch.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import TextIO

import optuna

from mnist_search.search import records
from mnist_search.search.meter import (
    LIVE_EVERY_S,
    PLAIN_EVERY_S,
    EpochClock,
    duration,
    plural,
    shows_live,
    tqdm_class,
)
from mnist_search.search.records import RecordError, TrialRecord
from mnist_search.trainer.metrics import EpochMetrics

S = optuna.trial.TrialState
# Up to this many finished trials, the summary lists each one's time; beyond it, their spread.
LISTED_TRIALS = 12


def network_line(spec, config) -> str:
    """A network and its recipe in one line: what a trial is about to train."""
    from mnist_search.models import analyse, flops_per_image, is_separable

    analysis = analyse(spec)
    flops = flops_per_image(spec)
    kind = "depthwise-separable" if is_separable(spec) else "full convolutions"
    recipe = (f"{config.optimizer}{' (Nesterov)' if config.optimizer == 'sgd' and config.nesterov else ''} "
              f"lr {config.lr:.3g}, batch {config.batch_size}, {plural(config.epochs, 'epoch')}"
              f"{'' if config.scheduler == 'none' else f', {config.scheduler} schedule'}"
              f"{', weight average' if config.ema_epochs else ''}")
    return (f"{analysis.params:,} params, {flops / 1e6:.2f} MFLOPs/image, {kind}, receptive field "
            f"{analysis.receptive_field} | {recipe}")


class SearchProgress:
    """Progress of one search run (``total`` trials); thread-safe, as ``jobs`` > 1 trains in threads.

    ``prefix`` labels the lines of a worker process; ``live`` forces the live line on or off
    (default: on when ``stream`` is a terminal or a notebook's output); ``silent`` shows nothing.
    """

    def __init__(self, total: int, stream: TextIO | None = None, live: bool | None = None, prefix: str = "",
                 silent: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.total, self.done, self.prefix, self.silent = total, 0, prefix, silent
        self.live = not silent and (shows_live(self.stream) if live is None else live)
        self.running: dict[int, str] = {}
        self.clocks: dict[int, EpochClock] = {}
        self.finished: list[int] = []  # numbers of the trials this run finished, in order
        self.timeout_s: float | None = None
        self.best_text = "no completed trial yet"
        self.started = time.perf_counter()
        self.last_plain = self.last_live = self.started
        self._lock = threading.Lock()
        self._bar = None

    # --- called by the search ---------------------------------------------------------------

    def start(self, header: str, timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self.line(header)
        if self.live:
            self._bar = tqdm_class()(total=self.total, file=self.stream, unit="trial", dynamic_ncols=True,
                                     leave=False, bar_format="{n_fmt}/{total_fmt} trials [{elapsed}] {desc}")

    def trial_started(self, number: int, spec, config, seeds: int = 1, fused: bool = False) -> None:
        """Trial ``number`` is about to train ``spec`` with ``config``: one line saying what it is."""
        text = network_line(spec, config)
        copies = seeds if fused else 1
        with self._lock:
            self.clocks[number] = EpochClock(config.epochs, config.batch_size * copies, runs=1 if fused else seeds)
            self.running[number] = f"#{number} starting"
            self._write(f"{self.prefix}trial #{number}: {text}")

    def batch(self, number: int, seed: int | None, step: int, steps: int) -> None:
        """A batch of trial ``number`` trained (seed index ``seed``, None: all its seeds at once)."""
        now = time.perf_counter()
        with self._lock:
            clock = self.clocks.get(number)
            if clock is None:
                return
            clock.batch(step, steps)  # the text is made only when shown: this runs after every batch
            if self._bar is not None:
                if now - self.last_live >= LIVE_EVERY_S:
                    self.last_live = now
                    self._refresh()
            elif now - self.last_plain >= PLAIN_EVERY_S:
                self._write(f"{self.prefix}trial {self._running_text()}")

    def epoch(self, number: int, seed: int, seeds: int, epoch: int, epochs: int, metrics: EpochMetrics) -> None:
        """Trial ``number`` finished ``epoch`` of ``epochs`` for its seed ``seed`` (from 0) of ``seeds``."""
        per_epoch = metrics.seconds  # the trainer reports each epoch's own seconds
        with self._lock:
            clock = self.clocks.get(number)
            if clock is not None and (clock.runs > 1 or seed == 0):  # fused seeds end an epoch together
                clock.epoch_done(seed if clock.runs > 1 else 0, epoch)
            left = (epochs - epoch) + (seeds - 1 - seed) * epochs if clock is None or clock.runs > 1 else epochs - epoch
            seed_text = f" seed {seed + 1}/{seeds}" if seeds > 1 else ""
            text = (f"#{number}{seed_text} epoch {epoch}/{epochs} val {metrics.eval_acc:.2f}% "
                    f"({per_epoch:.0f} s/epoch, {duration(per_epoch * left)} left)")
            self.running[number] = text
            if self._bar is not None:
                self._refresh()
            else:
                self._write(f"{self.prefix}trial {text} | {self.best_text}")

    def trial_finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """An Optuna callback: one line per finished trial."""
        best = self.best(study)
        took = f" in {duration(trial.duration.total_seconds())}" if trial.duration is not None else ""
        with self._lock:
            self.done += 1
            self.finished.append(trial.number)
            self.running.pop(trial.number, None)
            self.clocks.pop(trial.number, None)
            self.best_text = best
            self._write(f"{self.prefix}trial {self.done}/{self.total} (#{trial.number}): {outcome(trial)}{took}"
                        f" | {best} | {counts(study)}")
            if self._bar is not None:
                self._bar.update(1)
                self._refresh()

    __call__ = trial_finished

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, study: optuna.Study, stopped: BaseException | None = None) -> str:
        """Why the run stopped, what each trial it finished took, and the study as it now stands."""
        elapsed = time.perf_counter() - self.started
        lines = [f"this run: {plural(self.done, 'trial')} in {elapsed / 60:.1f} min: {self.reason(elapsed, stopped)}"]
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        mine = [trials[n] for n in self.finished if n in trials]
        failed = sum(t.state == S.FAIL for t in mine)
        if failed:
            lines[0] += f"; {plural(failed, 'trial')} failed"
        seconds = [(t, t.duration.total_seconds()) for t in mine if t.duration is not None]
        if seconds and len(seconds) <= LISTED_TRIALS:
            lines.append("  each trial: " + ", ".join(f"#{t.number} {duration(s)} ({outcome(t)})" for t, s in seconds))
        elif seconds:
            spread = sorted(s for _, s in seconds)
            lines.append(f"  trial times: shortest {duration(spread[0])}, median {duration(statistics.median(spread))}"
                         f", longest {duration(spread[-1])}")
        lines.append(f"study {study.study_name!r}: {counts(study)}; {self.best(study)}")
        return "\n".join(lines)

    def reason(self, elapsed: float, stopped: BaseException | None) -> str:
        """Why the run ended, in a few words."""
        if isinstance(stopped, KeyboardInterrupt):
            how = "Ctrl-C" if type(stopped) is KeyboardInterrupt else "a signal to stop"
            return f"interrupted by {how} after {self.done} of {self.total}; the running trial was marked failed"
        if stopped is not None:
            return f"stopped after {self.done} of {self.total}: {stopped}"
        if self.done >= self.total:
            return f"all {plural(self.total, 'trial')} done"
        if self.timeout_s is not None and elapsed >= self.timeout_s:
            return (f"the {duration(self.timeout_s)} timeout stopped it after {self.done} of {self.total} "
                    "(no trial starts after it; a running one finishes)")
        return f"stopped after {self.done} of {self.total}"

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
        try:
            params = TrialRecord.from_trial(best).params
        except RecordError:
            params = None
        size = f" ({params:,} params)" if params is not None else ""
        return f"best #{best.number} score {best.values[0]:.3f}{size}"

    def _running_text(self) -> str:
        """Each running trial: where it is within its epoch, else its last epoch's line."""
        shown = []
        for number in sorted(self.running):
            clock = self.clocks.get(number)
            shown.append(f"#{number} {clock.text()}" if clock is not None and clock.step else self.running[number])
        return "; ".join(shown)

    def _refresh(self) -> None:
        self._bar.set_description_str(f"{self._running_text() or 'between trials'} | {self.best_text}", refresh=True)

    def _write(self, text: str) -> None:
        if self.silent:
            return
        self.last_plain = time.perf_counter()
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
    infeasible = sum(records.is_infeasible(t) for t in trials)
    waiting = states.count(S.WAITING)
    return (f"{plural(len(trials) - waiting, 'trial')}: completed {states.count(S.COMPLETE)}, "
            f"pruned {states.count(S.PRUNED) - infeasible}, infeasible {infeasible}, failed {states.count(S.FAIL)}"
            + (f", queued {waiting}" if waiting else ""))
