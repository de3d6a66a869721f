"""A newcomer's first hour: the README's Python example runs as written, a run says what it trains
and why it stopped, the commands after the Quick start find its data, and the surface is clear
(export refuses to replace a file, the dashboard names the score, help shows the defaults)."""

from __future__ import annotations

import pydoc
import re
import sqlite3
from pathlib import Path

import optuna
import pytest

import mnist_search as ms
from mnist_search.errors import DataError, OutputExists
from mnist_search.models import GAP, ArchSpec, Conv, MaxPool, flops_per_image, is_separable
from mnist_search.search import progress as progress_module
from tests.conftest import make_tiny_mnist
from tests.helpers import TINY_SEARCH, cli_in_process, search

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_python_example() -> str:
    """The README's Python API block: the first ```python block that imports mnist_search as ms."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return next(b for b in blocks if "import mnist_search as ms" in b)


def test_the_readmes_python_example_runs_as_written_with_small_counts(tmp_path, monkeypatch):
    code = readme_python_example()
    # Small counts on tiny data; everything else (confirm's defaults, the data directory) as written.
    small = code.replace("trials=30,", "trials=2, epochs=2, val_size=100, seed=3,")
    assert small != code, "the README's example no longer calls ms.search(trials=30, ...)"
    assert "ms.confirm(study, top=3, seeds=3)" in code  # the call that once failed on a short search
    monkeypatch.chdir(tmp_path)
    make_tiny_mnist(tmp_path / "data")
    namespace: dict = {}
    exec(compile(small, "README.md", "exec"), namespace)
    study = namespace["study"]
    confirmed = [key for key in study.user_attrs if key.startswith("confirm:")]
    assert confirmed, "ms.confirm stored no confirmation"
    assert study.user_attrs[confirmed[0]]["last_k"] == 2  # the search's last-K of its 2 epochs
    assert (tmp_path / "best_net.py").is_file() and (tmp_path / "report" / "index.md").is_file()
    assert namespace["board"].index.name == "trial" and len(namespace["board"]) >= 1
    # Run again as written (a notebook re-run): the study resumes and the export replaces its files.
    exec(compile(small, "README.md", "exec"), {})


def test_a_run_says_what_it_trains_what_the_score_is_and_why_it_stopped(tiny_mnist, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study, shown = search(url, tiny_mnist, trials=3, timeout_minutes=0.001, epochs=2, last_k=2)
    lines = shown.splitlines()
    assert sum(line.startswith("score = mean validation accuracy") for line in lines) == 1
    assert "over every epoch" in shown and "the early epochs count too" in shown
    started = [line for line in lines if line.startswith("trial #0: ")]
    assert started and re.search(r"[\d,]+ params, [\d.]+ MFLOPs/image, (full convolutions|depthwise-separable), "
                                 r"receptive field \d+ \| (sgd|adamw).* lr [\d.e-]+, batch \d+, 2 epochs", started[0])
    assert lines.index(started[0]) < next(i for i, line in enumerate(lines) if "epoch 1/2 val" in line)
    assert "this run: 1 trial in" in shown and "timeout stopped it after 1 of 3" in shown
    assert re.search(r"each trial: #0 \d+ s \(score", shown)
    assert "1 trials" not in shown and "1 epochs" not in shown
    assert study.metric_names == ["score (mean val acc, all epochs)"]  # the dashboard's name for the objective
    value = study.trials[0].value
    assert value == round(value, 6)


def test_a_log_gets_a_progress_line_within_an_epoch(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)  # the 30 s, without waiting for them
    _, shown = search(f"sqlite:///{tmp_path / 's.db'}", tiny_mnist, trials=1)
    assert re.search(r"trial #0 epoch 1/2 batch \d+/\d+, [\d,]+ img/s", shown)
    assert "\r" not in shown  # no bar into a log


def test_flops_and_separable_describe_the_network():
    full = ArchSpec((Conv(8, k=3), MaxPool(2), Conv(10, k=1, post=()), GAP()))
    # 8 filters of 3x3x1 at 26x26, then 10 of 1x1x8 at 13x13; two FLOPs per multiply-add.
    assert flops_per_image(full) == 2 * (8 * 26 * 26 * 9 + 10 * 13 * 13 * 8)
    assert not is_separable(full)
    separable = ArchSpec((Conv(8, k=3), Conv(8, k=3, groups=8, post=("bn",)), Conv(10, k=1, post=()), GAP()))
    assert is_separable(separable)
    assert flops_per_image(separable) == 2 * (8 * 26 * 26 * 9 + 8 * 24 * 24 * 9 + 10 * 24 * 24 * 8)


def test_the_workflow_after_the_quick_start_finds_its_data_and_confirms_with_defaults(tiny_mnist, tmp_path,
                                                                                        monkeypatch):
    url = f"sqlite:///{tmp_path / 'mnist-search.db'}"
    monkeypatch.delenv("MNIST_SEARCH_DATA_DIR", raising=False)
    search(url, tiny_mnist, trials=2, epochs=2, last_k=None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no ./data here: the study's own directory is what is found
    confirmed = cli_in_process("confirm", "--storage", url, "--top", "1", "--seeds", "1")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "last-2 test %" in confirmed.stdout and "x 2 epochs" in confirmed.stdout
    exported = cli_in_process("export", "--storage", url, "--weights", "best_net.safetensors")
    assert exported.returncode == 0, exported.stderr
    again = cli_in_process("export", "--storage", url, "--weights", "best_net.safetensors")
    assert again.returncode == 2 and again.stderr.strip() == (
        "mnist-search export: error: best_net.py exists already; add --force to replace it")
    assert cli_in_process("export", "--storage", url, "--weights", "best_net.safetensors", "--force").returncode == 0
    # evaluate has no study: it reads ./data when that holds the files, as after the Quick start.
    (elsewhere / "data").symlink_to(tiny_mnist, target_is_directory=True)
    evaluated = cli_in_process("evaluate", "best_net.py", "--weights", "best_net.safetensors")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test accuracy" in evaluated.stdout and "on 100 images" in evaluated.stdout
    assert ms.evaluate().images == 100  # the same from Python, with the same defaults


def test_python_callers_are_told_settings_not_flags(tmp_path):
    with pytest.raises(DataError) as caught:
        ms.search(trials=1, storage=f"sqlite:///{tmp_path / 's.db'}", data_dir=tmp_path / "nowhere", progress=False,
                  **TINY_SEARCH)
    assert "data_dir" in str(caught.value) and "--" not in str(caught.value)
    cli = cli_in_process("run", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--data-dir", str(tmp_path / "no"))
    assert cli.returncode == 2 and "--data-dir" in cli.stderr and "data_dir" not in cli.stderr


def test_export_from_python_refuses_to_replace_a_file_unless_forced(tiny_mnist, tmp_path):
    study, _ = search(f"sqlite:///{tmp_path / 's.db'}", tiny_mnist, trials=1)
    target = tmp_path / "net.py"
    target.write_text("# mine\n")
    with pytest.raises(OutputExists, match="exists already.*set force"):
        ms.export(study, target)
    assert target.read_text() == "# mine\n"
    ms.export(study, target, force=True)
    assert target.read_text().startswith('"""Net:')


def test_help_shows_every_option_with_its_default():
    text = pydoc.render_doc(ms.search, renderer=pydoc.plaintext)
    for option in ("max_params: 'int' = 8000", "epochs: 'int' = 15", "pruner: 'str' = 'median'",
                   "max_params (default 8000)", "timeout_minutes (default None)"):
        assert option in text
    assert "**options" not in text
    for function, shown in ((ms.confirm, "seeds: 'int' = 3"), (ms.evaluate, "module: 'str | os.PathLike' = "
                                                                         "'best_net.py'"),
                            (ms.report, "output: 'str | os.PathLike' = 'report'"), (ms.export, "force: 'bool' = False")):
        assert shown in pydoc.render_doc(function, renderer=pydoc.plaintext)


def test_committed_studies_hold_no_trial_left_running():
    for db in sorted((ROOT / "results").rglob("*.db")):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            running = connection.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
        assert running == 0, f"{db.relative_to(ROOT)} has {running} trials left RUNNING"


def test_presets_cite_what_a_reader_can_open():
    from mnist_search.models import PRESETS

    for preset in PRESETS.values():
        assert "github.com/" in preset.source or "../shared/seeds/" in preset.source, preset.source


def test_the_defaults_outputs_are_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    for pattern in ("/best_net.py", "/best_net.safetensors", "/report/", "*.db", "mnist-search-artifacts/"):
        assert pattern in ignored


def test_plural_forms():
    assert progress_module.plural(1, "trial") == "1 trial" and progress_module.plural(2, "epoch") == "2 epochs"
    study = optuna.create_study()
    assert progress_module.counts(study).startswith("0 trials")


def test_train_in_a_log_prints_plain_progress_lines_not_a_bar(tiny_mnist, tmp_path, monkeypatch):
    from mnist_search.search import meter

    monkeypatch.setattr(meter, "PLAIN_EVERY_S", 0.0)
    result = cli_in_process("train", "--preset", "seed002", "--epochs", "1", "--data-dir", str(tiny_mnist),
                            "--val-size", "100", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "MFLOPs/image, full convolutions" in result.stdout and "sgd lr 0.07, batch 128" in result.stdout
    assert re.search(r"epoch 1/1 batch \d+/\d+, [\d,]+ img/s", result.stdout)
    assert "\r" not in result.stdout + result.stderr and "1 epochs" not in result.stdout


def test_confirm_says_what_it_retrains_and_how_far_it_is_within_an_epoch(tiny_mnist, tmp_path, monkeypatch, capsys):
    from mnist_search.search import meter

    study, _ = search(f"sqlite:///{tmp_path / 's.db'}", tiny_mnist, trials=1)
    monkeypatch.setattr(meter, "PLAIN_EVERY_S", 0.0)
    capsys.readouterr()
    ms.confirm(study, top=1, seeds=2, data_dir=tiny_mnist)
    shown = capsys.readouterr().out
    assert re.search(r"confirming trial #0 \([\d,]+ params\): 2 seeds \(0-1\) x 2 epochs", shown)
    assert re.search(r"epoch 2/2 batch \d+/\d+, [\d,]+ img/s", shown) and "seed 1 epoch  2: test" in shown
    assert "\r" not in shown
