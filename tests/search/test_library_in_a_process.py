"""The library in someone else's process: it leaves the process's streams, Optuna's verbosity
and the global torch generator as they were, from any thread, and a script that would make
every worker process start the search again is told what to write."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import optuna
import pytest
import torch

import mnist_search as ms
from mnist_search.errors import DataError
from mnist_search.trainer import load_mnist
from tests.helpers import TINY_SEARCH


def test_searches_in_two_threads_leave_the_process_as_it_was(tiny_mnist, tmp_path):
    streams = (sys.stdout, sys.stderr)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    errors = []

    def run(index: int) -> None:
        try:
            ms.search(trials=1, storage=f"sqlite:///{tmp_path / f's{index}.db'}", data_dir=tiny_mnist,
                      progress=False, **{**TINY_SEARCH, "epochs": 1})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not errors
    assert (sys.stdout, sys.stderr) == streams
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's draws go on as if nothing had run
    optuna.logging.set_verbosity(optuna.logging.INFO)


def test_failed_downloads_in_two_threads_put_the_streams_back(tmp_path):
    streams = (sys.stdout, sys.stderr)
    errors = []

    def load(index: int) -> None:
        try:
            load_mnist(tmp_path / f"empty{index}", download=True)  # offline: the download fails
        except DataError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(errors) == 3 and all("download failed" in str(e) for e in errors)
    assert (sys.stdout, sys.stderr) == streams


SCRIPT = """
    import mnist_search as ms
    {guard}ms.search(trials=2, workers=2, storage="sqlite:///{db}", data_dir="{data}", epochs=1, last_k=1,
    {indent}          val_size=100, progress=False)
"""


@pytest.mark.parametrize("guarded", [False, True])
def test_a_script_that_would_rerun_in_every_worker_is_told_what_to_write(tmp_path, guarded):
    script = tmp_path / "search.py"
    guard, indent = ('if __name__ == "__main__":\n        ', "    ") if guarded else ("", "")
    script.write_text(textwrap.dedent(SCRIPT.format(guard=guard, indent=indent, db=tmp_path / "s.db",
                                                    data=tmp_path / "no-data")))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    if guarded:  # past the check: the next problem is the missing data, before any worker starts
        assert "MNIST files not found" in last
    else:
        assert "its line 3 makes this call outside `if __name__ == \"__main__\":`" in last, result.stderr
        assert "exited with code" not in result.stderr
    assert not (tmp_path / "s.db").exists()
