"""Every value mnist-search stores on an Optuna trial or study, read back as checked, typed records.

The store is shared (many workers, the dashboard, `optuna` itself can edit it), so a stored
value is input like any other: reading one checks its type and range, and a value of the wrong
kind is a :class:`RecordError` naming the trial and the key, never a traceback later nor a
string pasted into generated code. This module is the only one that reads or writes the
stored keys: :class:`TrialWriter` writes a running trial, :class:`TrialRecord` reads one back,
:class:`Confirmation` reads and writes itself, and the study-level functions at the end read
and write the study's own attributes. A record written by a newer schema than this code reads
is refused by name rather than misread.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from mnist_search.errors import UserError
from mnist_search.trainer.metrics import EpochMetrics

# Bumped when the meaning of a stored key changes; records without one are version 0, whose
# trials predate `seeds` (one seed) and `schema` itself.
SCHEMA_VERSION = 1

# Trial user attributes.
SCHEMA = "schema"
PARAMS = "params"
RECEPTIVE_FIELD = "receptive_field"
SPEC = "spec"
CONFIG = "config"
DEVICE = "device"
CPU_THREADS = "cpu_threads"
MAX_PARAMS = "max_params"
LAST_K = "last_k"
SEEDS = "seeds"
HISTORY = "history"
SEED_HISTORIES = "seed_histories"
SEED_SCORES = "seed_scores"
LAST_K_MIN = "last_k_min"
SECONDS = "seconds"
STATUS = "status"
INFEASIBLE = "infeasible"
WEIGHTS_ARTIFACT = "weights_artifact"
WEIGHTS_SHA256 = "weights_sha256"
WARM_START = "warm_start"
WORKER = "worker"  # host:pid of the process training the trial
SEED_LAYOUT = "seed_layout"  # "fused": a trial's seeds trained together, pruned on their mean at step = epoch

# Study user attributes.
CONFIRM_PREFIX = "confirm:"  # + trial number: that trial's Confirmation
SETTINGS = "settings"  # the SearchSettings the study was created with (JSON object)
DATA_DIR = "data_dir"  # the directory of MNIST files its trials trained on, absolute
WORKER_SLOTS = "worker_slots"  # sampler seeds handed out so far (one per process)

DEVICES = ("cpu", "cuda", "mps")


class RecordError(UserError):
    """A value stored in the study is missing or of the wrong kind (damaged or edited by hand)."""


def confirm_key(number: int) -> str:
    return f"{CONFIRM_PREFIX}{number}"


@dataclass(frozen=True)
class TrialRecord:
    """What mnist-search stored on one trial, checked."""

    number: int
    state: optuna.trial.TrialState
    score: float | None  # the consistency score of a completed trial
    params: int | None = None
    receptive_field: int | None = None
    spec: dict | None = None  # an ArchSpec as stored; ArchSpec.from_dict checks it where it is built
    config: dict | None = None  # a TrainConfig as stored; likewise
    device: str | None = None
    last_k: int | None = None
    seeds: int = 1
    epochs: tuple[EpochMetrics, ...] = ()  # the first seed's, per epoch
    seed_epochs: tuple[tuple[EpochMetrics, ...], ...] = ()  # the other seeds', per epoch
    seed_scores: tuple[float, ...] = ()
    last_k_min: float | None = None
    seconds: float | None = None
    infeasible: str | None = None
    weights_artifact: str | None = None
    weights_sha256: str | None = None
    warm_start: str | None = None
    epochs_per_seed: int | None = None
    pruned_step: int | None = None
    fused_seeds: bool = False

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        attrs = _Reader(trial.user_attrs, f"trial #{trial.number}")
        _check_schema(attrs.integer(SCHEMA), f"trial #{trial.number}")
        config = attrs.mapping(CONFIG)
        value = trial.values[0] if trial.values else None
        return cls(
            number=trial.number, state=trial.state,
            score=_number(value, f"trial #{trial.number}'s value") if value is not None else None,
            params=attrs.integer(PARAMS), receptive_field=attrs.integer(RECEPTIVE_FIELD),
            spec=attrs.mapping(SPEC), config=config, device=attrs.choice(DEVICE, DEVICES),
            last_k=attrs.integer(LAST_K), seeds=attrs.integer(SEEDS) or 1,
            epochs=attrs.epochs(HISTORY),
            seed_epochs=tuple(_epochs(h, f"trial #{trial.number}'s {SEED_HISTORIES}[{i}]")
                              for i, h in enumerate(attrs.sequence(SEED_HISTORIES))),
            seed_scores=attrs.numbers(SEED_SCORES), last_k_min=attrs.number(LAST_K_MIN),
            seconds=attrs.number(SECONDS), infeasible=attrs.text(INFEASIBLE),
            weights_artifact=attrs.artifact_id(WEIGHTS_ARTIFACT), weights_sha256=attrs.sha256(WEIGHTS_SHA256),
            warm_start=attrs.text(WARM_START),
            epochs_per_seed=_integer(config.get("epochs"), f"trial #{trial.number}'s config.epochs") if config else None,
            pruned_step=trial.last_step, fused_seeds=attrs.choice(SEED_LAYOUT, ("fused",)) == "fused",
        )

    @property
    def history(self) -> tuple[float, ...]:
        """Validation accuracy per epoch (the first seed's)."""
        return tuple(m.eval_acc for m in self.epochs)

    @property
    def pruned_at(self) -> str:
        """Where a pruned trial stopped: its epoch, and which seed when it trained several."""
        if self.seeds == 1 or self.pruned_step is None or not self.epochs_per_seed:
            return f"epoch {self.pruned_step}"
        if self.fused_seeds:
            return f"epoch {self.pruned_step} (mean of {self.seeds} seeds)"
        seed, epoch = divmod(self.pruned_step - 1, self.epochs_per_seed)
        return f"epoch {epoch + 1} of seed {seed + 1}/{self.seeds}"


@dataclass(frozen=True)
class ConfirmationRun:
    """One seed of a confirmation: its test accuracy per epoch and where its weights are."""

    seed: int
    status: str  # completed | diverged
    test_acc: tuple[float, ...]
    raw_test_acc: tuple[float, ...] | None = None  # an averaging recipe's raw weights
    device: str | None = None
    cpu_threads: int | None = None
    weights_artifact: str | None = None
    weights_sha256: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ConfirmationRun:
        if not isinstance(data, Mapping):
            raise RecordError(f"{where} is not an object")
        run = _Reader(data, where)
        raw = run.numbers("raw_test_acc") if "raw_test_acc" in data else None
        return cls(seed=_integer(data.get("seed"), f"{where}.seed"), status=run.choice("status", ("completed", "diverged"))
                   or "completed", test_acc=run.numbers("test_acc"), raw_test_acc=raw, device=run.choice(DEVICE, DEVICES),
                   cpu_threads=run.integer(CPU_THREADS), weights_artifact=run.artifact_id(WEIGHTS_ARTIFACT),
                   weights_sha256=run.sha256(WEIGHTS_SHA256))

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"seed": self.seed, "status": self.status, "test_acc": list(self.test_acc)}
        if self.raw_test_acc is not None:
            data["raw_test_acc"] = list(self.raw_test_acc)
        for key in (DEVICE, CPU_THREADS, WEIGHTS_ARTIFACT, WEIGHTS_SHA256):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


@dataclass(frozen=True)
class AccuracyStats:
    final_mean: float
    final_std: float
    last_k_mean: float
    last_k_std: float
    last_k_min: float

    @classmethod
    def of(cls, curves: list[tuple[float, ...]], last_k: int) -> AccuracyStats:
        """Mean and spread of the curves' final and last-``last_k`` accuracies, and the minimum."""
        finals = [curve[-1] for curve in curves if curve]
        tails = [acc for curve in curves for acc in curve[-last_k:]]
        if not finals:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan)
        return cls(statistics.fmean(finals), statistics.pstdev(finals), statistics.fmean(tails),
                   statistics.pstdev(tails), min(tails))


@dataclass(frozen=True)
class Confirmation:
    """A trial retrained on all 60k training images with several seeds, scored on the test set."""

    runs: tuple[ConfirmationRun, ...]
    last_k: int
    target: float
    stats: AccuracyStats = field(init=False)
    raw: AccuracyStats | None = field(init=False)
    consistent: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats", AccuracyStats.of([r.test_acc for r in self.runs], self.last_k))
        raws = [r.raw_test_acc for r in self.runs]
        averaged = bool(raws) and all(raw is not None for raw in raws)
        object.__setattr__(self, "raw", AccuracyStats.of(raws, self.last_k) if averaged else None)
        object.__setattr__(self, "consistent", bool(self.runs) and all(r.status == "completed" for r in self.runs)
                           and self.stats.last_k_min >= self.target)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Confirmation:
        if not isinstance(data, Mapping):
            raise RecordError(f"{where} is not an object")
        runs = data.get("runs")
        if not isinstance(runs, list) or not runs:
            raise RecordError(f"{where}.runs must be a non-empty list")
        _check_schema(_Reader(data, where).integer(SCHEMA), where)
        last_k = _integer(data.get("last_k"), f"{where}.last_k")
        if last_k < 1:
            raise RecordError(f"{where}.last_k must be at least 1, got {last_k}")
        return cls(runs=tuple(ConfirmationRun.from_dict(r, f"{where}.runs[{i}]") for i, r in enumerate(runs)),
                   last_k=last_k, target=_number(data.get("target"), f"{where}.target"))

    def to_dict(self) -> dict:
        """The stored form; the summary figures are stored too, for readers outside mnist-search."""
        data = {"schema": SCHEMA_VERSION, "runs": [r.to_dict() for r in self.runs], "last_k": self.last_k,
                "target": self.target, **vars(self.stats), "consistent": self.consistent}
        if self.raw is not None:
            data["raw"] = vars(self.raw)
        return data

    def save(self, study: optuna.Study, number: int) -> None:
        """Store this as trial ``number``'s confirmation, replacing an earlier one."""
        study.set_user_attr(confirm_key(number), self.to_dict())

    def representative(self) -> tuple[ConfirmationRun, int] | None:
        """Of the seeds that trained to the end and kept their weights, the one with the median final
        test accuracy (the lower middle for an even count), and how many there were: the weights
        worth shipping without picking the luckiest seed on the test set. None when no seed did."""
        runs = sorted((r for r in self.runs if r.status == "completed" and r.test_acc and r.weights_artifact),
                      key=lambda r: r.test_acc[-1])
        return (runs[(len(runs) - 1) // 2], len(runs)) if runs else None


class TrialWriter:
    """Everything mnist-search stores on a trial while it runs, written under the keys above."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def _set(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self.trial.set_user_attr(key, value)

    def infeasible(self, reason: str) -> None:
        self._set({INFEASIBLE: reason})

    def started(self, *, params: int, receptive_field: int, spec: dict, config: dict, device: str, cpu_threads: int,
                max_params: int, last_k: int, seeds: int, worker: str | None, fused_layout: bool) -> None:
        """What the trial trains, where, and how it is judged, before it trains."""
        self._set({SCHEMA: SCHEMA_VERSION, PARAMS: params, RECEPTIVE_FIELD: receptive_field, SPEC: spec,
                   CONFIG: config, DEVICE: device, CPU_THREADS: cpu_threads, MAX_PARAMS: max_params, LAST_K: last_k,
                   SEEDS: seeds, **({WORKER: worker} if worker else {}),
                   **({SEED_LAYOUT: "fused"} if fused_layout else {})})

    def epochs(self, histories: list[list[EpochMetrics]], changed: list[int]) -> None:
        """The per-epoch metrics of every seed so far; only the seeds in ``changed`` are rewritten."""
        values: dict[str, Any] = {}
        if 0 in changed:
            values[HISTORY] = [m.to_dict() for m in histories[0]]
        if any(index > 0 for index in changed):
            values[SEED_HISTORIES] = [[m.to_dict() for m in history] for history in histories[1:]]
        self._set(values)

    def ended(self, seconds: float, status: str | None = None) -> None:
        """How long it trained; ``status`` when training itself failed (diverged)."""
        self._set({SECONDS: seconds, **({STATUS: status} if status else {})})

    def scored(self, seed_scores: list[float], last_k_min: float) -> None:
        self._set({**({SEED_SCORES: seed_scores} if len(seed_scores) > 1 else {}), LAST_K_MIN: last_k_min})

    def weights(self, artifact_id: str, sha256: str) -> None:
        self._set({WEIGHTS_ARTIFACT: artifact_id, WEIGHTS_SHA256: sha256})


def is_infeasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` was a sample that could not fit the budget (pruned before training)."""
    return INFEASIBLE in trial.user_attrs


def worker_of(trial: optuna.trial.FrozenTrial) -> str | None:
    """The host:pid that trained (or trains) ``trial``, when recorded."""
    value = trial.user_attrs.get(WORKER)
    return value if isinstance(value, str) else None


def confirmation(study: optuna.Study, number: int, attrs: Mapping[str, Any] | None = None) -> Confirmation | None:
    """Trial ``number``'s stored confirmation, checked; None when it has none."""
    stored = (attrs if attrs is not None else study.user_attrs).get(confirm_key(number))
    return Confirmation.from_dict(stored, f"study {study.study_name!r}'s {confirm_key(number)}") if stored else None


def completed(study: optuna.Study) -> list[TrialRecord]:
    """The study's completed trials, checked."""
    return [TrialRecord.from_trial(t)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]


def ranked(records: list[TrialRecord], top: int | None = None) -> list[TrialRecord]:
    """The ``top`` records with the highest score, best first."""
    return sorted(records, key=lambda r: r.score if r.score is not None else -math.inf, reverse=True)[:top]


def best_trial(study: optuna.Study, max_params: int | None = None) -> TrialRecord:
    """The trial to export: the best confirmed one within ``max_params`` (a test-set confirmation
    over several seeds beats one validation run), else the best-scoring completed one."""
    done = completed(study)
    if not done:
        raise UserError(f"study {study.study_name!r} has no completed trial yet; run a search first")
    if any(r.params is None or r.spec is None or r.config is None for r in done):
        plain = next(r for r in done if r.params is None or r.spec is None or r.config is None)
        raise RecordError(f"trial #{plain.number} of study {study.study_name!r} has no stored network "
                          "(was the study made by mnist-search?)")
    done = [_with_built_params(r, study.study_name) for r in done]
    within = [r for r in done if max_params is None or r.params <= max_params]
    if not within:
        smallest = min(r.params for r in done)
        raise UserError(f"no completed trial has at most {max_params:,} parameters (the smallest has {smallest:,})")
    attrs = study.user_attrs  # one storage read, not one per trial
    confirmed = [(r, c) for r in within if (c := confirmation(study, r.number, attrs))]
    if confirmed:
        return max(confirmed, key=lambda pair: pair[1].stats.last_k_mean)[0]
    return ranked(within, 1)[0]


def _with_built_params(record: TrialRecord, study_name: str) -> TrialRecord:
    """``record`` with the parameter count of the network its spec builds: a budget is checked
    against what is exported, never against a stored number anyone could have edited."""
    from mnist_search.models import ArchSpec, count_params

    try:
        built = count_params(ArchSpec.from_dict(record.spec))
    except UserError as exc:
        raise RecordError(f"trial #{record.number} of study {study_name!r} stores a spec that is not a network: "
                          f"{exc}") from None
    return record if built == record.params else dataclasses.replace(record, params=built)


class _Reader:
    """Typed, checked access to one stored mapping; ``where`` names it in errors."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data, self.where = data, where

    def _get(self, key: str) -> Any:
        return self.data.get(key)

    def integer(self, key: str) -> int | None:
        value = self._get(key)
        return None if value is None else _integer(value, f"{self.where}'s {key}")

    def number(self, key: str) -> float | None:
        value = self._get(key)
        return None if value is None else _number(value, f"{self.where}'s {key}")

    def numbers(self, key: str) -> tuple[float, ...]:
        return tuple(_number(v, f"{self.where}'s {key}[{i}]") for i, v in enumerate(self.sequence(key)))

    def sequence(self, key: str) -> list:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise RecordError(f"{self.where}'s {key} must be a list, got {type(value).__name__}")
        return value

    def epochs(self, key: str) -> tuple[EpochMetrics, ...]:
        return _epochs(self._get(key), f"{self.where}'s {key}")

    def mapping(self, key: str) -> dict | None:
        value = self._get(key)
        if value is not None and not isinstance(value, dict):
            raise RecordError(f"{self.where}'s {key} must be an object, got {type(value).__name__}")
        return value

    def text(self, key: str) -> str | None:
        value = self._get(key)
        if value is not None and not isinstance(value, str):
            raise RecordError(f"{self.where}'s {key} must be text, got {type(value).__name__}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str | None:
        value = self.text(key)
        if value is not None and value not in allowed:
            raise RecordError(f"{self.where}'s {key} must be one of {', '.join(allowed)}; got {value[:40]!r}")
        return value

    def artifact_id(self, key: str) -> str | None:
        """An artifact id is a file name in the artifact directory: no path separators, no dot names."""
        value = self.text(key)
        if value is not None and (not value or value in (".", "..") or "/" in value or "\\" in value
                                  or "\0" in value or len(value) > 255):
            raise RecordError(f"{self.where}'s {key} is not an artifact id: {value[:40]!r}")
        return value

    def sha256(self, key: str) -> str | None:
        value = self.text(key)
        if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
            raise RecordError(f"{self.where}'s {key} is not a SHA-256 hex digest")
        return value


def _epochs(value: Any, where: str) -> tuple[EpochMetrics, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RecordError(f"{where} must be a list, got {type(value).__name__}")
    try:
        return tuple(EpochMetrics.from_dict(m) for m in value)
    except ValueError as exc:
        raise RecordError(f"{where} holds an epoch {exc}") from None


def _check_schema(schema: int | None, where: str) -> None:
    if schema is not None and schema > SCHEMA_VERSION:
        raise RecordError(f"{where} was stored by a newer mnist-search (record schema {schema}; this one reads up "
                          f"to {SCHEMA_VERSION}); upgrade mnist-search to read it")


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{where} must be an integer, got {_show(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{where} must be a finite number, got {_show(value)}")
    return float(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# The study's own attributes.

def stored_settings(study: optuna.Study) -> dict | None:
    """The settings (a SearchSettings as a JSON object) the study was created with; None when it
    records none (made by an older mnist-search, or by Optuna alone)."""
    return _Reader(study.user_attrs, f"study {study.study_name!r}").mapping(SETTINGS)


def record_settings(study: optuna.Study, settings: dict) -> None:
    """Record the settings of a new study, once: the first recorded are what its scores mean."""
    if SETTINGS not in study.user_attrs:
        study.set_user_attr(SETTINGS, settings)


def recorded_data_dir(study: optuna.Study) -> str | None:
    """The absolute directory of MNIST files the study's trials trained on, when recorded."""
    return _Reader(study.user_attrs, f"study {study.study_name!r}").text(DATA_DIR)


def record_data_dir(study: optuna.Study, where: str) -> None:
    if study.user_attrs.get(DATA_DIR) != where:
        study.set_user_attr(DATA_DIR, where)


def take_worker_slots(study: optuna.Study, count: int) -> int:
    """The first of ``count`` worker slots no process of any run of this study has taken."""
    first = study.user_attrs.get(WORKER_SLOTS, 0)
    first = first if isinstance(first, int) and not isinstance(first, bool) and first >= 0 else 0
    study.set_user_attr(WORKER_SLOTS, first + count)
    return first


def warm_start_labels(study: optuna.Study) -> set[str]:
    """The labels ("study#number") of the warm starts queued in ``study`` so far."""
    return {label for t in study.get_trials(deepcopy=False)
            if isinstance(label := t.user_attrs.get(WARM_START), str)}


def enqueue_warm_start(study: optuna.Study, params: dict, label: str) -> None:
    """Queue a trial of these parameters, labelled as the warm start ``label``."""
    study.enqueue_trial(params, user_attrs={WARM_START: label})
