"""Progress within an epoch: batches, images per second and time left, from the trainer's
``on_batch(step, steps_per_epoch)`` calls; and how a progress display is chosen.

Light to import (no torch, no Optuna, tqdm only when a live display is made): ``train`` and the
search's progress both use it.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

# In a log or a pipe, a plain line at least this often while training, so a log shows the run
# is alive between epochs that can take minutes on a CPU.
PLAIN_EVERY_S = 30.0
# A live display redraws at most this often: the callback runs after every batch.
LIVE_EVERY_S = 0.25


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (Colab's included), whose output is not a terminal
    but shows a redrawn line."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def shows_live(stream: TextIO) -> bool:
    """A redrawn line suits a terminal and a notebook; a log or a pipe gets plain lines."""
    try:
        return stream.isatty() or (in_notebook() and stream in (sys.stdout, sys.__stdout__))
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def tqdm_class():
    """tqdm's notebook widget where Jupyter can draw it, else the text bar (which Jupyter redraws too)."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm
    return tqdm


@dataclass
class EpochClock:
    """Where one training is within its epochs, and how fast it goes.

    ``images_per_step`` is the batch size times the copies trained at once (fused seeds);
    ``runs`` is how many trainings of ``epochs`` epochs run one after another (seeds).
    """

    epochs: int
    images_per_step: int
    runs: int = 1
    run: int = 0  # the run (seed) now training, from 0
    epoch: int = 1  # the epoch now training, from 1
    step: int = 0
    steps: int = 0
    epoch_started: float = field(default_factory=time.perf_counter)

    def batch(self, step: int, steps: int) -> None:
        self.step, self.steps = step, steps

    def epoch_done(self, run: int, epoch: int) -> None:
        """``epoch`` of ``run`` is over (evaluation included): the next one starts its clock now."""
        self.run, self.epoch, self.step = run, epoch + 1, 0
        self.epoch_started = time.perf_counter()
        if self.epoch > self.epochs:
            self.run, self.epoch = run + 1, 1

    @property
    def images_per_second(self) -> float:
        elapsed = time.perf_counter() - self.epoch_started
        return self.step * self.images_per_step / elapsed if elapsed > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        """Training time left for every epoch of every run at this epoch's pace (evaluation aside)."""
        elapsed = time.perf_counter() - self.epoch_started
        if not self.step or elapsed <= 0:
            return None
        epochs_after = (self.epochs - self.epoch) + (self.runs - 1 - self.run) * self.epochs
        return elapsed / self.step * ((self.steps - self.step) + epochs_after * self.steps)

    def text(self) -> str:
        """E.g. 'epoch 2/5 batch 120/391, 1,840 img/s, 3.1 min left'."""
        run = f" seed {self.run + 1}/{self.runs}" if self.runs > 1 else ""
        left = self.seconds_left
        return (f"epoch {min(self.epoch, self.epochs)}/{self.epochs}{run} batch {self.step}/{self.steps}, "
                f"{self.images_per_second:,.0f} img/s" + (f", {duration(left)} left" if left is not None else ""))


class BatchMeter:
    """Progress within the epochs of one training at a time (``train``, ``confirm``): a redrawn
    line (batches, images/s, time left) on a terminal or in a notebook, else a plain line at
    least every 30 s; never a bar's control characters in a log. Lines go through ``write``,
    so they print above the redrawn one."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.live = not quiet and shows_live(self.stream)
        self.clock: EpochClock | None = None
        self.bar = None
        self.last = time.perf_counter()

    def start(self, epochs: int, images_per_step: int, runs: int = 1) -> None:
        """A new training: ``runs`` trainings of ``epochs`` epochs one after another, each step
        ``images_per_step`` images."""
        self.clock = EpochClock(epochs, images_per_step, runs=runs)
        if self.live and self.bar is None:
            self.bar = tqdm_class()(total=0, file=self.stream, leave=False, dynamic_ncols=True, bar_format="{desc}")

    def batch(self, step: int, steps: int) -> None:
        if self.clock is None:
            return
        self.clock.batch(step, steps)
        now = time.perf_counter()
        if self.bar is not None and now - self.last >= LIVE_EVERY_S:
            self.last = now
            self.bar.set_description_str(self.clock.text(), refresh=True)
        elif self.bar is None and not self.quiet and now - self.last >= PLAIN_EVERY_S:
            self.last = now
            print(f"  {self.clock.text()}", file=self.stream, flush=True)

    def write(self, line: str, run: int = 0, epoch: int | None = None) -> None:
        """Print ``line``; with ``epoch``, that epoch of ``run`` is over."""
        if epoch is not None and self.clock is not None:
            self.clock.epoch_done(run, epoch)
        self.last = time.perf_counter()
        if self.bar is not None:
            if epoch is not None:  # the redrawn line would show the finished epoch's last batch
                self.bar.set_description_str("", refresh=False)
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
