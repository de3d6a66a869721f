"""Fan-out to local worker processes, supervised: `run --workers` and `confirm --workers` alike.

Processes, not threads: CPU training holds the GIL between kernels. Spawned, not forked:
forking a process that already runs PyTorch's thread pools can deadlock the child. Each child
gets its share of the CPU cores (``cpu_threads_per_process``), its work as a JSON string (never
a rebuilt command line: that is spelled in one place, the settings), and dies with its parent
(Linux ``PR_SET_PDEATHSIG``), so killing the parent never leaves workers training unseen.

The parent watches every child. A child that dies without a result (the OOM killer's SIGKILL,
a crash) is reported by how it died; its caller decides what the lost work means (the search
fails the trial it held at once, rather than after the heartbeat grace period).
"""

from __future__ import annotations

import ast
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mnist_search.errors import UserError

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 30  # how long stopped children may take to fail their trials cleanly before they are killed


@dataclass(frozen=True)
class Outcome:
    """How one child ended: its result, or why there is none."""

    index: int
    pid: int | None
    result: Any = None
    error: str | None = None  # a one-line user error or a traceback from the child
    user_error: bool = False
    exitcode: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exitcode == 0

    def died(self) -> str:
        """How the child ended without a result, in words."""
        if self.exitcode is not None and self.exitcode < 0:
            try:
                return f"was killed by {signal.Signals(-self.exitcode).name}"
            except ValueError:
                return f"was killed by signal {-self.exitcode}"
        return f"exited with code {self.exitcode}"


def check_main_guard(setting: str = "workers") -> None:
    """UserError when worker processes would run the caller's script again.

    Spawned processes import the main script (as ``__mp_main__``) before they get their work;
    a script that calls the library at its top level, outside ``if __name__ == "__main__":``,
    would make every worker start the search again, and each die. Checked in the parent, before
    anything starts; a worker that gets here while importing the script is refused too.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise UserError(f"a worker process is importing the main script, which starts {setting} again: put the call "
                        'under `if __name__ == "__main__":`')
    line = unguarded_main_line()
    if line is not None:
        main = sys.modules["__main__"]
        raise UserError(f"{setting} > 1 starts processes that import {main.__file__} again, and its line {line} makes "
                        'this call outside `if __name__ == "__main__":`, so every worker would run it too; put the '
                        "call under that line")


def unguarded_main_line() -> int | None:
    """The line of the main script running this call when it is not inside ``if __name__ == "__main__":``."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if not path or (spec is not None and spec.name.endswith("__main__")):  # -m package: spawn skips it
        return None
    frame, line = sys._getframe(), None
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back
    if line is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            return None if isinstance(node, ast.If) and _tests_main(node.test) else line
    return None


def _tests_main(test: ast.expr) -> bool:
    """Whether ``test`` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = {ast.dump(test.left), ast.dump(test.comparators[0])}
    return sides == {ast.dump(ast.Name("__name__", ast.Load())), ast.dump(ast.Constant("__main__"))}


def run_processes(target: Callable[[str], Any], payloads: list[str], threads_each: int,
                  on_exit: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run ``target(payload)`` in one spawned process per payload and wait for all of them.

    ``target`` must be a module-level function (it is imported by name in the child).
    ``on_exit(outcome)`` is called as soon as each child has ended, so the caller can act on a
    death at once while the others work on. If the caller is interrupted (Ctrl-C, SIGTERM), the
    children are interrupted too, waited for, and the interruption goes on.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    children = []
    for index, payload in enumerate(payloads):
        child = context.Process(target=_child, args=(target, index, payload, results, threads_each, os.getpid()),
                                name=f"mnist-search-worker-{index}")
        child.start()
        children.append(child)
    received: dict[int, tuple[str, Any]] = {}
    finished: dict[int, Outcome] = {}
    try:
        while len(finished) < len(children):
            try:
                index, kind, value = results.get(timeout=0.5)
                received[index] = (kind, value)
                continue
            except queue.Empty:
                pass
            for index, child in enumerate(children):
                if index not in finished and not child.is_alive():
                    _drain(results, received)  # a result sent just before the child ended
                    child.join()
                    finished[index] = _outcome(index, child, *received.get(index, (None, None)))
                    if on_exit:
                        on_exit(finished[index])
    except BaseException:
        _stop(children)
        raise
    return [finished[index] for index in range(len(children))]


def _outcome(index: int, child, kind: str | None, value: Any) -> Outcome:
    return Outcome(index=index, pid=child.pid, result=value if kind == "ok" else None,
                   error=value if kind in ("user", "error") else None, user_error=kind == "user",
                   exitcode=child.exitcode)


def _drain(results, received: dict) -> None:
    while True:
        try:
            index, kind, value = results.get(timeout=0.2)
        except queue.Empty:
            return
        received[index] = (kind, value)


def _stop(children: list) -> None:
    """Interrupt the children (each fails its running trial, as on Ctrl-C), then kill stragglers."""
    for child in children:
        if child.is_alive():
            os.kill(child.pid, signal.SIGINT)
    for child in children:
        child.join(STOP_GRACE_S)
        if child.is_alive():
            child.kill()
            child.join()


def _child(target: Callable[[str], Any], index: int, payload: str, results, threads: int, parent: int) -> None:
    _die_with_parent(parent)
    if not os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(threads)
    try:
        results.put((index, "ok", target(payload)))
    except UserError as exc:
        results.put((index, "user", str(exc)))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException:
        results.put((index, "error", traceback.format_exc()))
        sys.exit(1)


def _die_with_parent(parent: int) -> None:
    """Be interrupted (SIGINT: the running trial is failed cleanly) when the parent dies."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
        except OSError:
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        sys.exit(130)
    # The parent is the one that handles SIGHUP and SIGTERM: here, both stop the work as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
