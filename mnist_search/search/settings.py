"""SearchSettings: every option of a search, as one frozen, self-validating value.

The command line, the Python API and worker processes all build a search from this one
value (workers receive it as JSON), so an option is defined, defaulted and checked once.
Messages name the setting (``max_params``), never a command-line flag: the caller knows how
its users spell it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from mnist_search.defaults import (
    COMPILE_CHOICES,
    DEFAULT_HEARTBEAT_GRACE_S,
    DEFAULT_LAST_K,
    DEFAULT_MAX_PARAMS,
    DEFAULT_VAL_SIZE,
    PRUNERS,
    SAMPLERS,
)
from mnist_search.errors import ConfigError

OBJECTIVES = ("score", "pareto")
# The narrowest network the space can build (one 4-wide conv per block and a 1x1 head) has ~300 parameters.
MIN_BUDGET = 300
# Each job trains on a CUDA stream of its own out of PyTorch's pool of 32; on the H100 the
# throughput stopped growing at 8 (BENCHMARKS.md).
MAX_JOBS = 16
AUTO_JOBS_CUDA = 8
MNIST_TRAIN_IMAGES = 60_000
# Settings that change what a trial's score means: a study's trials are comparable only when
# these agree, so resuming a study with other values is refused unless mixing is allowed.
# fuse_seeds too: it decides the steps at which the pruner compares trials of several seeds.
SCORE_SETTINGS = ("epochs", "last_k", "max_params", "objective", "seeds_per_trial", "val_size", "fuse_seeds",
                  "train_images", "teacher")


@dataclass(frozen=True)
class SearchSettings:
    """Every option of a search.

    Attributes:
        trials: trials this run adds to the study (split over ``workers``).
        max_params: the parameter budget every sampled network fits.
        epochs: training epochs per trial.
        last_k: the score is the mean validation accuracy of the last ``last_k`` epochs
            (default: min(5, epochs)).
        seeds_per_trial: train each trial with this many seeds and score it by their mean.
        objective: 'score' maximises the score; 'pareto' also minimises parameters (no pruning).
        sampler: 'tpe' (multivariate), 'random' or 'nsga2'.
        pruner: 'median', 'hyperband' or 'none'.
        seed: the sampler's seed (None: random); also the first training seed (None: 0).
        timeout_minutes: start no new trial after this many minutes (None: no limit).
        jobs: trials trained at once in each process, each on its own CUDA stream (None: the
            measured best for the device: 8 on a CUDA GPU, 1 on the CPU).
        workers: local worker processes sharing the study (None: on the CPU one single-threaded
            worker per idle core, at most one per trial; on a GPU one process).
        device: 'auto' (CUDA when present), 'cpu' or 'cuda'.
        compile: 'auto', 'on' or 'off': torch.compile each trial's training step.
        val_size: training images held out for validation.
        train_images: train each trial on this many of the training images not held out (None:
            all of them); a quick first search trades score for time, and the study records it.
        heartbeat_grace_s: seconds without a heartbeat before a worker's trial counts as dead.
        warm_start: name of a study in the same storage whose best trials run first.
        warm_start_top: how many of its best trials to queue.
        fuse_seeds: train a trial's seeds as one fused network (all advance together; the pruner
            sees their mean accuracy at each epoch) rather than one after another.
        allow_mixed: resume a study even when settings that change what a score means differ.
        teacher: a spec JSON file of a network to distil from (with ``teacher_weights``, its
            safetensors weights); the space then also samples the soft targets' weight and
            temperature, and ``confirm`` retrains with the same teacher.
    """

    trials: int = 20
    max_params: int = DEFAULT_MAX_PARAMS
    epochs: int = 15
    last_k: int | None = None
    seeds_per_trial: int = 1
    objective: str = "score"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = None
    timeout_minutes: float | None = None
    jobs: int | None = None
    workers: int | None = None
    device: str = "auto"
    compile: str = "auto"
    val_size: int = DEFAULT_VAL_SIZE
    train_images: int | None = None
    heartbeat_grace_s: int = DEFAULT_HEARTBEAT_GRACE_S
    warm_start: str | None = None
    warm_start_top: int = 3
    fuse_seeds: bool = True
    allow_mixed: bool = False
    teacher: str | None = None
    teacher_weights: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        if self.last_k is None:
            object.__setattr__(self, "last_k", min(DEFAULT_LAST_K, self.epochs) if self.epochs >= 1 else 1)
        checks = [
            (self.trials >= 1, f"trials must be at least 1, got {self.trials}"),
            (self.max_params >= MIN_BUDGET,
             f"max_params {self.max_params} is too small for any network in the space; use at least {MIN_BUDGET}"),
            (1 <= self.epochs <= 1000, f"epochs must be between 1 and 1000, got {self.epochs}"),
            (1 <= self.last_k <= self.epochs, f"last_k must be between 1 and epochs ({self.epochs}), got {self.last_k}"),
            (1 <= self.seeds_per_trial <= 100, f"seeds_per_trial must be between 1 and 100, got {self.seeds_per_trial}"),
            (self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"),
            (self.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}"),
            (self.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}"),
            (self.seed is None or 0 <= self.seed < 2**32, f"seed must be between 0 and 2**32 - 1, got {self.seed}"),
            (self.timeout_minutes is None or (math.isfinite(self.timeout_minutes) and self.timeout_minutes > 0),
             f"timeout_minutes must be a positive number of minutes, got {self.timeout_minutes}"),
            (self.jobs is None or 1 <= self.jobs <= MAX_JOBS, f"jobs must be between 1 and {MAX_JOBS}, got {self.jobs}"),
            (self.workers is None or 1 <= self.workers <= 256, f"workers must be between 1 and 256, got {self.workers}"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"device must be auto, cpu or cuda, got {self.device!r}"),
            (self.compile in COMPILE_CHOICES, f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {self.compile!r}"),
            (1 <= self.val_size < MNIST_TRAIN_IMAGES,
             f"val_size must be between 1 and {MNIST_TRAIN_IMAGES - 1:,} (the search scores on it), got {self.val_size}"),
            (self.train_images is None or 1 <= self.train_images <= MNIST_TRAIN_IMAGES - self.val_size,
             f"train_images must be between 1 and the {MNIST_TRAIN_IMAGES - self.val_size:,} training images not "
             f"held out, got {self.train_images}"),
            (self.heartbeat_grace_s >= 4, f"heartbeat_grace_s must be at least 4 seconds, got {self.heartbeat_grace_s}"),
            (self.warm_start_top >= 1, f"warm_start_top must be at least 1, got {self.warm_start_top}"),
            (self.warm_start is None or self.warm_start.strip() != "", "warm_start must name a study"),
            ((self.teacher is None) == (self.teacher_weights is None),
             "distillation needs both teacher (a spec file) and teacher_weights (its weights file)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def jobs_for(self, device_type: str) -> int:
        """Trials at once per process on ``device_type``: ``jobs``, else the measured best there.

        On an H100, 8 trainings at once gave 2.66x the model-epochs per second of one and 16 gave
        2.67x (BENCHMARKS.md); on the CPU concurrent trials only share the same cores.
        """
        if self.jobs is not None:
            return self.jobs
        return AUTO_JOBS_CUDA if device_type == "cuda" else 1

    def workers_for(self, device_type: str, free_cores: int) -> int:
        """Worker processes on ``device_type``: ``workers``, else the measured best there.

        On the CPU one single-threaded worker per idle core: two such workers on a 2-core CPU
        trained 1.3-1.5x the trials per hour of one two-threaded process (BENCHMARKS.md). On
        a GPU one process, whose ``jobs`` share it on streams.
        """
        if self.workers is not None:
            return self.workers
        return max(1, min(free_cores, self.trials)) if device_type == "cpu" else 1

    @property
    def pareto(self) -> bool:
        return self.objective == "pareto"

    @property
    def timeout_s(self) -> float | None:
        return self.timeout_minutes * 60 if self.timeout_minutes is not None else None

    def replace(self, **changes: Any) -> SearchSettings:
        """A copy with ``changes``; a last_k at its default follows a new epoch count."""
        if "epochs" in changes and "last_k" not in changes and self.last_k == min(DEFAULT_LAST_K, self.epochs):
            changes["last_k"] = None
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> SearchSettings:
        return cls(**_known_fields(cls, data, "search"))

    @classmethod
    def from_json(cls, text: str) -> SearchSettings:
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, RecursionError):
            raise ConfigError("search settings are not valid JSON") from None

    def score_differences(self, stored: dict[str, Any]) -> list[str]:
        """The settings that change what a score means and differ from ``stored`` (a study's record)."""
        return [f"{name} {stored[name]!r} -> {getattr(self, name)!r}" for name in SCORE_SETTINGS
                if name in stored and stored[name] != getattr(self, name)]


def _known_fields(cls, data: Any, kind: str) -> dict[str, Any]:
    """``data`` (a stored or received JSON value) as keyword arguments of the settings class ``cls``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} settings must be a JSON object")
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"unknown {kind} setting(s): {', '.join(map(str, unknown))}")
    return data


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _check_type(name: str, value: Any, annotation: str) -> None:
    """Check ``value`` against a field's annotation ('int', 'float | None', ...): bools are not ints."""
    kinds = [kind.strip() for kind in str(annotation).split("|")]
    if value is None and "None" in kinds:
        return
    for kind in kinds:
        allowed = _TYPES.get(kind)
        if allowed and isinstance(value, allowed) and (kind == "bool" or not isinstance(value, bool)):
            if isinstance(value, float) and not math.isfinite(value):
                break
            return
    wanted = " or ".join("a whole number" if k == "int" else "a number" if k == "float" else
                         "text" if k == "str" else "true/false" if k == "bool" else "absent" for k in kinds)
    raise ConfigError(f"{name} must be {wanted}, got {value!r:.40}")


@dataclass(frozen=True)
class ConfirmSettings:
    """Every option of a confirmation, as one frozen, self-validating value (workers receive it as JSON).

    Attributes:
        top: confirm the ``top`` best completed trials...
        trials: ...or these trial numbers.
        seeds: training seeds per trial, ``first_seed`` and up.
        first_seed: the first training seed; fresh seeds re-check a confirmed trial (the new
            confirmation replaces the stored one).
        last_k: final epochs judged (None: the K the trial's search scored on, at most its epochs).
        target: test accuracy (%) every judged epoch of every seed must reach to be consistent.
        workers: seeds trained at once, each in its own process with its share of the CPU cores.
        device: 'auto' (CUDA when present), 'cpu' or 'cuda'.
        compile: 'auto', 'on' or 'off': torch.compile the training step.
        fuse: in one process, train a trial's seeds as one fused network where it can.
    """

    top: int = 3
    trials: tuple[int, ...] | None = None
    seeds: int = 3
    first_seed: int = 0
    last_k: int | None = None
    target: float = 99.4
    workers: int = 1
    device: str = "auto"
    compile: str = "auto"
    fuse: bool = True

    def __post_init__(self) -> None:
        if self.trials is not None:
            if not isinstance(self.trials, (list, tuple)) or not self.trials or any(
                    isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in self.trials):
                raise ConfigError(f"trials must be a list of trial numbers, got {self.trials!r:.40}")
            object.__setattr__(self, "trials", tuple(self.trials))
        # A target outside 0-100 (or NaN) makes every later reading of the confirmation fail:
        # refused before hours of training, not stored after them.
        if (isinstance(self.target, bool) or not isinstance(self.target, (int, float))
                or not 0 <= self.target <= 100):
            raise ConfigError(f"target must be a percentage between 0 and 100, got {self.target!r:.40}")
        for f in fields(self):
            if f.name not in ("trials", "target"):
                _check_type(f.name, getattr(self, f.name), f.type)
        for name, low in (("top", 1), ("seeds", 1), ("workers", 1), ("first_seed", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be a whole number of at least {low}, got {getattr(self, name)!r}")
        if self.last_k is not None and self.last_k < 1:
            raise ConfigError(f"last_k must be a whole number of at least 1, got {self.last_k!r}")
        if self.first_seed + self.seeds > 2**31:
            raise ConfigError(f"first_seed + seeds must stay below 2**31, got {self.first_seed + self.seeds}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.compile not in COMPILE_CHOICES:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {self.compile!r}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def replace(self, **changes: Any) -> ConfirmSettings:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["trials"] = list(self.trials) if self.trials is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ConfirmSettings:
        return cls(**_known_fields(cls, data, "confirm"))
