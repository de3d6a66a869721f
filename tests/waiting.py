"""Waiting for a search running in another process to reach a given point."""

import time

import optuna
import pytest


def wait_until_trial_trains(url: str, number: int = 0, timeout: float = 120, study: str = "mnist-search") -> None:
    """Return once trial ``number`` has finished at least one epoch; fail the test after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            trials = optuna.load_study(study_name=study, storage=url).trials
        except KeyError:  # the study is not created yet
            trials = []
        if len(trials) > number and trials[number].user_attrs.get("history"):
            return
        time.sleep(0.3)
    pytest.fail(f"trial {number} did not start training within {timeout:.0f} s")
