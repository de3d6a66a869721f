"""EpochMetrics: what one epoch of training measured, as one typed value.

The trainer hands it to its epoch callback and keeps it in the history; the search stores
it on a trial as a JSON object and reads it back through :meth:`EpochMetrics.from_dict`, so
the names of the measurements are written here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # from 1
    train_loss: float  # mean over the epoch's batches, as trained (augmented, dropout on)
    train_acc: float  # %, likewise
    eval_loss: float  # mean cross-entropy on the evaluation split, in eval mode
    eval_acc: float  # %, on the evaluation split (the averaged weights' when the recipe averages)
    lr: float  # the learning rate of the epoch's first step
    seconds: float  # the epoch's training and evaluation
    raw_eval_acc: float | None = None  # an averaging recipe's raw weights: what the average changed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.raw_eval_acc is None:
            del data["raw_eval_acc"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> EpochMetrics:
        """Metrics read back from a store; a ValueError saying which field is missing or not a number
        ("that is not an object", "whose eval_acc is ...": its caller names the epoch)."""
        if not isinstance(data, dict):
            raise ValueError(f"that is not an object ({type(data).__name__})")
        values = {}
        for f in fields(cls):
            value = data.get(f.name)
            if value is None and f.name == "raw_eval_acc":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"whose {f.name} is not a finite number: {value!r:.40}")
            values[f.name] = value
        if not isinstance(values["epoch"], int) or values["epoch"] < 1:
            raise ValueError(f"whose epoch is not a whole number of at least 1: {values['epoch']!r}")
        return cls(**{k: v if k == "epoch" else float(v) for k, v in values.items()})
